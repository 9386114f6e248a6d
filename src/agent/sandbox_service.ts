/**
 * Kuasar's `grpc.SandboxService` in the guest (kuasar-spec §4.5, §8.4):
 * Check, ExecVMProcess, SyncClock and SetupSandbox (hostname, sysctls, DNS).
 * Interface and route setup are not implemented yet and say so.
 *
 * @module
 */
import {
  InternalError,
  InvalidArgumentError,
  NotFoundError,
  UnimplementedError,
} from "../domain/errors.ts";
import type { UnaryImplementation } from "../adapters/ttrpc/typed.ts";
import type { SandboxServiceDefinition, SyncClockPacket } from "../gen/kuasar/sandbox.ts";
import { ownChild, realtimeNs, setRealtimeNs } from "./pid1.ts";

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
}

const td = new TextDecoder();

async function execShell(command: string, stdin: Uint8Array): Promise<string> {
  const child = new Deno.Command("/bin/sh", {
    args: ["-c", command],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const release = ownChild(child.pid);
  const w = child.stdin.getWriter();
  if (stdin.length) await w.write(stdin).catch(() => {});
  await w.close().catch(() => {});
  const out = await child.output().finally(release);
  if (out.code !== 0) {
    throw new InternalError(
      `command exited with ${out.code}: ${td.decode(out.stderr).trim() || "no stderr"}`,
    );
  }
  return td.decode(out.stdout);
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
  const dns = pod.dns_config;
  if (dns && (dns.servers?.length || dns.searches?.length || dns.options?.length)) {
    let text = "";
    if (dns.searches?.length) text += `search ${dns.searches.join(" ")}\n`;
    for (const s of dns.servers ?? []) text += `nameserver ${s}\n`;
    if (dns.options?.length) text += `options ${dns.options.join(" ")}\n`;
    await Deno.writeTextFile(paths.resolvConf, text);
  }
}

/** The service's handlers. */
export function sandboxService(
  paths: GuestPaths = { procSys: "/proc/sys", resolvConf: "/etc/resolv.conf" },
): UnaryImplementation<typeof SandboxServiceDefinition> {
  return {
    check: () => Promise.resolve({}),
    execVMProcess: async (req) => ({ out: await execShell(req.command, req.stdin) }),
    syncClock: (p: SyncClockPacket) => {
      if (p.Delta === 0n) {
        const now = realtimeNs();
        return Promise.resolve({ ...p, ClientArriveTime: now, ServerSendTime: realtimeNs() });
      }
      setRealtimeNs(realtimeNs() + p.Delta);
      return Promise.resolve(p);
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
      if (req.interfaces.length || req.routes.length) {
        throw new UnimplementedError("Guest interfaces and routes are not implemented yet");
      }
      return {};
    },
  };
}
