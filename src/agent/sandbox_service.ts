/**
 * Kuasar's `grpc.SandboxService` in the guest (kuasar-spec §4.5, §8.4):
 * Check, ExecVMProcess, SyncClock, SetupSandbox (hostname, sysctls, DNS, the
 * pod's shared files, interfaces, routes), UpdateInterfaces and UpdateRoutes (busybox `ip`).
 *
 * @module
 */
import { InternalError, InvalidArgumentError, NotFoundError } from "../domain/errors.ts";
import type { UnaryImplementation } from "../adapters/ttrpc/typed.ts";
import type {
  Interface,
  Route,
  SandboxServiceDefinition,
  SyncClockPacket,
} from "../gen/kuasar/sandbox.ts";
import type { Envelope } from "../gen/kuasar/github.com/containerd/containerd/api/services/ttrpc/events/v1/events.ts";
import { spawned } from "../adapters/os/children.ts";
import { realtimeNs, setRealtimeNs } from "./pid1.ts";
import { preparePodFiles } from "../adapters/os/pod_files.ts";
import { resolvConf } from "../domain/pod_config.ts";

/** The part of a PodSandboxConfig (as Kuasar's host sends it: JSON, snake_case) the guest uses. */
interface PodSandboxJson {
  hostname?: string;
  dns_config?: { servers?: string[]; searches?: string[]; options?: string[] };
  linux?: { sysctls?: Record<string, string> };
}

/** Where sysctls and the hostname are written; a test may point it elsewhere. */
export interface GuestPaths {
  readonly procSys: string;
  readonly resolvConf: string;
  /**
   * The pod's directory for the files its containers share (/etc/hostname, hosts,
   * resolv.conf, /dev/shm: pod_files.ts), which the guest's runtime mounts; unset: none.
   */
  readonly podDir?: string;
}

const td = new TextDecoder();

/** A program's exit code and output. */
interface Outcome {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a program (argv, no shell of ours) as a child the reaper leaves to Deno. */
async function execute(argv: string[], stdin: Uint8Array = new Uint8Array()): Promise<Outcome> {
  const child = spawned(new Deno.Command(argv[0], {
    args: argv.slice(1),
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn());
  const w = child.stdin.getWriter();
  if (stdin.length) await w.write(stdin).catch(() => {});
  await w.close().catch(() => {});
  const out = await child.output();
  return { code: out.code, stdout: td.decode(out.stdout), stderr: td.decode(out.stderr) };
}

/** The error of a program that failed, naming its exit code and stderr. */
function failure(argv: string[], r: Outcome): InternalError {
  return new InternalError(`${argv[0]} exited with ${r.code}: ${r.stderr.trim() || "no stderr"}`);
}

/** Runs a program; one that fails is an InternalError. */
async function run(argv: string[], stdin?: Uint8Array): Promise<string> {
  const r = await execute(argv, stdin);
  if (r.code !== 0) throw failure(argv, r);
  return r.stdout;
}

/** ExecVMProcess: a command line for the guest's shell. */
function execShell(command: string, stdin: Uint8Array): Promise<string> {
  return run(["/bin/sh", "-c", command], stdin).catch((e) => {
    throw new InternalError((e as Error).message.replace(/^\/bin\/sh exited/, "command exited"));
  });
}

/** The guest link whose MAC is `mac`. */
function linkByMac(mac: string, sysNet = "/sys/class/net"): string | undefined {
  for (const e of Deno.readDirSync(sysNet)) {
    try {
      const a = Deno.readTextFileSync(`${sysNet}/${e.name}/address`).trim();
      if (a.toLowerCase() === mac.toLowerCase()) return e.name;
    } catch { /* no address */ }
  }
  return undefined;
}

/** A hot-plugged NIC appears once the guest has enumerated it (seconds under emulation). */
const NIC_APPEAR_MS = 20_000;

/** The link with `mac`, waiting up to `waitMs` for it to appear. */
async function awaitLinkByMac(mac: string, waitMs: number): Promise<string | undefined> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    const dev = linkByMac(mac);
    if (dev || Date.now() >= deadline) return dev;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Gives the NICs with the interfaces' MACs their names, addresses and MTU (kuasar-spec §8.5).
 * At setup the NICs are there from boot; an update may name one the host has just hot-plugged.
 */
async function configureInterfaces(ifs: readonly Interface[], waitMs = 0): Promise<void> {
  for (const i of ifs) {
    const dev = await awaitLinkByMac(i.hwAddr, waitMs);
    if (!dev) throw new NotFoundError(`No guest link has the MAC ${i.hwAddr} of "${i.name}"`);
    await run(["ip", "link", "set", "dev", dev, "down"]);
    await run(["ip", "addr", "flush", "dev", dev]);
    const name = i.name || dev;
    if (name !== dev) await run(["ip", "link", "set", "dev", dev, "name", name]);
    for (const a of i.IPAddresses) {
      await run([
        "ip",
        ...(a.family === 1 ? ["-6"] : []),
        "addr",
        "add",
        `${a.address}/${a.mask}`,
        "dev",
        name,
      ]);
    }
    if (i.mtu > 0n) await run(["ip", "link", "set", "dev", name, "mtu", String(i.mtu)]);
    await run(["ip", "link", "set", "dev", name, "up"]);
  }
}

/** Adds the pod's routes: direct ones first, then those through a gateway. */
async function configureRoutes(routes: readonly Route[]): Promise<void> {
  const ordered = [...routes.filter((r) => !r.gateway), ...routes.filter((r) => r.gateway)];
  for (const r of ordered) {
    const argv = ["ip", ...(r.family === 1 ? ["-6"] : []), "route", "add", r.dest || "default"];
    if (r.gateway) argv.push("via", r.gateway);
    if (r.device) argv.push("dev", r.device);
    if (r.source) argv.push("src", r.source);
    if (r.scope === 253) argv.push("scope", "link");
    const out = await execute(argv);
    // The kernel adds the routes of an address's own subnet itself: `ip`
    // then reports EEXIST ("RTNETLINK answers: File exists").
    if (out.code !== 0 && !/File exists/.test(out.stderr)) throw failure(argv, out);
  }
}

/** Applies the pod's settings to the guest. */
export async function setupSandbox(pod: PodSandboxJson, paths: GuestPaths): Promise<void> {
  for (const [key, value] of Object.entries(pod.linux?.sysctls ?? {})) {
    if (!/^[a-z0-9_.-]+$/i.test(key) || key.split(".").includes("..")) {
      throw new InvalidArgumentError(`Invalid sysctl name "${key}"`);
    }
    await Deno.writeTextFile(`${paths.procSys}/${key.replaceAll(".", "/")}`, value);
  }
  if (pod.hostname) await Deno.writeTextFile(`${paths.procSys}/kernel/hostname`, pod.hostname);
  const d = pod.dns_config;
  const dns = d
    ? { servers: d.servers ?? [], searches: d.searches ?? [], options: d.options ?? [] }
    : undefined;
  const text = resolvConf(dns);
  if (text !== undefined) await Deno.writeTextFile(paths.resolvConf, text);
  if (paths.podDir) {
    await preparePodFiles(paths.podDir, { hostname: pod.hostname ?? "", dns, ipc: "pod" });
  }
}

/** The service's handlers. */
export function sandboxService(
  paths: GuestPaths = { procSys: "/proc/sys", resolvConf: "/etc/resolv.conf" },
  nextEvent?: (signal: AbortSignal) => Promise<Envelope>,
): UnaryImplementation<typeof SandboxServiceDefinition> {
  return {
    check: () => Promise.resolve({}),
    // Kuasar's host long-polls: each call answers with the next task event.
    getEvents: nextEvent && ((_req, ctx) => nextEvent(ctx.signal)),
    execVMProcess: async (req) => ({ out: await execShell(req.command, req.stdin) }),
    syncClock: (p: SyncClockPacket) => {
      if (p.Delta === 0n) {
        const now = realtimeNs();
        return Promise.resolve({ ...p, ClientArriveTime: now, ServerSendTime: realtimeNs() });
      }
      setRealtimeNs(realtimeNs() + p.Delta);
      return Promise.resolve(p);
    },
    updateInterfaces: async (req) => {
      await configureInterfaces(req.interfaces, NIC_APPEAR_MS);
      return {};
    },
    updateRoutes: async (req) => {
      await configureRoutes(req.routes);
      return {};
    },
    setupSandbox: async (req) => {
      if (req.config?.typeUrl !== "PodSandboxConfig") {
        throw new NotFoundError(
          `SetUpSandbox/config/${req.config?.typeUrl ?? ""} is not supported`,
        );
      }
      let pod: PodSandboxJson;
      try {
        pod = JSON.parse(td.decode(req.config.value));
      } catch (e) {
        throw new InvalidArgumentError(`PodSandboxConfig is not JSON: ${(e as Error).message}`);
      }
      await setupSandbox(pod, paths);
      await configureInterfaces(req.interfaces);
      await configureRoutes(req.routes);
      return {};
    },
  };
}
