/**
 * Runs the real sandboxer daemon (from source, as a separate process) for
 * integration tests, with its own socket and --dir, and clients for both of
 * its APIs.
 *
 * @module
 */
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { ControllerClient } from "../../src/adapters/grpc/controller_client.ts";
import { TtrpcClient } from "../../src/adapters/ttrpc/client.ts";
import { type UnaryClient, unaryClient } from "../../src/adapters/ttrpc/typed.ts";
import { TaskDefinition } from "../../src/gen/containerd/runtime/task/v3/shim.ts";
import { TaskDefinition as TaskV2 } from "../../src/gen/containerd/runtime/task/v2/shim.ts";
import { V8_FLAGS } from "../../src/adapters/os/self_command.ts";
import { TEST_RUNSC, tomlKeysOnce, vmmTomlLines } from "./env.ts";
import { suiteTemplateBuilt } from "./vm_template.ts";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
/**
 * The daemon's entry module: src/main.ts, or the bundle KUASAR_TEST_ENTRY names (the suites
 * bundled into a VM, where the source tree is not).
 */
const MAIN = Deno.env.get("KUASAR_TEST_ENTRY") ?? join(ROOT, "src/main.ts");

/** Options of a test daemon. */
export interface TestDaemonOptions {
  readonly kind?: string;
  readonly extraArgs?: string[];
  /** Reuse an existing directory (restart scenarios). */
  readonly base?: string;
  /** Entry module to run instead of src/main.ts (e.g. the single-file bundle). */
  readonly entry?: string;
}

/** A sandboxer process under test. */
export class TestDaemon {
  readonly base: string;
  readonly dir: string;
  readonly listen: string;
  readonly logFile: string;
  readonly kind: string;
  /** cgroup parent of this daemon's test containers (so tests never see each other's). */
  readonly cgroupParent: string;
  #child: Deno.ChildProcess | undefined;
  #exited = false;
  #client: ControllerClient | undefined;
  #extra: string[];
  #entry: string;

  private constructor(base: string, kind: string, extra: string[], entry = MAIN) {
    this.base = base;
    this.kind = kind;
    this.dir = join(base, "state");
    this.listen = join(base, "sandboxer.sock");
    this.logFile = join(base, "daemon.log");
    this.cgroupParent = `/kuasar-it/${base.slice(base.lastIndexOf("/") + 1)}`;
    this.#extra = extra;
    this.#entry = entry;
  }

  /** Starts a daemon in a fresh (or the given) base directory and waits until it serves. */
  static async start(opts: TestDaemonOptions = {}): Promise<TestDaemon> {
    const base = opts.base ?? await Deno.makeTempDir({ prefix: "k-" });
    const d = new TestDaemon(base, opts.kind ?? "runc", opts.extraArgs ?? [], opts.entry);
    await d.spawn();
    return d;
  }

  /** The Controller client (one per daemon process). */
  get controller(): ControllerClient {
    this.#client ??= new ControllerClient(this.listen);
    return this.#client;
  }

  get pid(): number {
    return this.#child?.pid ?? 0;
  }

  /** Whether the process was started and has ended by itself since. */
  get died(): boolean {
    return this.#child !== undefined && this.#exited;
  }

  /** Starts the process (again) and waits for its socket to answer. */
  async spawn(): Promise<void> {
    this.#child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        // As a node runs it (the daemon gives memory back after bursts when it may run the GC).
        `--v8-flags=${V8_FLAGS}`,
        // Extra Deno flags for profiling runs (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof").
        ...(Deno.env.get("KUASAR_TEST_DENO_FLAGS")?.split(" ").filter(Boolean) ?? []),
        this.#entry,
        this.kind,
        "--listen",
        this.listen,
        "--dir",
        this.dir,
        "--log-level",
        "debug",
        "--helper-dir",
        join(this.base, "bin"),
        "--containerd-address",
        "",
        ...this.#extra,
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#exited = false;
    this.#child.status.then(() => (this.#exited = true));
    // stderr carries the JSON log; both streams go to the log file as they
    // come (pipeTo into a file only lands once the child has exited).
    for (const s of [this.#child.stdout, this.#child.stderr]) copyToFile(s, this.logFile);
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      try {
        const c = await Deno.connect({ transport: "unix", path: this.listen });
        c.close();
        return;
      } catch { /* not yet */ }
      const st = await Promise.race([
        this.#child.status,
        new Promise((r) => setTimeout(() => r(undefined), 50)),
      ]);
      if (st) throw new Error(`daemon exited during start-up:\n${await this.logs()}`);
    }
    throw new Error(`daemon did not listen within 60 s:\n${await this.logs()}`);
  }

  /** Daemon log so far (for failure messages). */
  async logs(): Promise<string> {
    return await Deno.readTextFile(this.logFile).catch(() => "");
  }

  /** SIGKILL: no cleanup at all, as in a crash. */
  async kill9(): Promise<void> {
    this.#client?.close();
    this.#client = undefined;
    if (!this.#exited) this.#child?.kill("SIGKILL");
    await this.#child?.status;
    this.#child = undefined;
  }

  /** SIGTERM and wait. */
  async stop(): Promise<Deno.CommandStatus | undefined> {
    this.#client?.close();
    this.#client = undefined;
    if (!this.#child) return undefined;
    if (!this.#exited) this.#child.kill("SIGTERM");
    const st = await this.#child.status;
    this.#child = undefined;
    return st;
  }

  /**
   * Stops the daemon and removes its base directory. Whatever a failed test
   * left (helpers of pods never shut down, the relay) is killed first.
   */
  async cleanup(): Promise<void> {
    await this.stop();
    // Containers a failed test never deleted: runc removes their cgroups.
    for (const runcRoot of [join(this.dir, ".runc"), join(this.dir, "runc")]) {
      try {
        for await (const e of Deno.readDir(runcRoot)) {
          await new Deno.Command("runc", {
            args: ["--root", runcRoot, "delete", "--force", e.name],
          }).output();
        }
      } catch { /* no runc state */ }
    }
    for await (const e of Deno.readDir("/proc")) {
      if (!/^\d+$/.test(e.name)) continue;
      try {
        const cmd = await Deno.readTextFile(`/proc/${e.name}/cmdline`);
        if (cmd.includes(this.dir)) Deno.kill(Number(e.name), "SIGKILL");
      } catch { /* gone */ }
    }
    const mounts = await Deno.readTextFile("/proc/self/mountinfo");
    const points = mounts.split("\n").map((l) => l.split(" ")[4]).filter((p) =>
      p?.startsWith(this.base)
    );
    for (const p of points.sort((a, b) => b.length - a.length)) {
      await new Deno.Command("umount", { args: ["-l", p] }).output();
    }
    await Deno.remove(this.base, { recursive: true }).catch(() => {});
    await removeCgroupParent(this.cgroupParent);
  }
}

/** Removes a (by now empty) cgroup parent from every v1 hierarchy and v2. */
export async function removeCgroupParent(parent: string): Promise<void> {
  const hierarchies = [
    "memory",
    "cpu",
    "cpuacct",
    "pids",
    "blkio",
    "devices",
    "freezer",
    "cpuset",
    "systemd",
    "unified",
    "",
  ];
  for (const h of hierarchies) {
    await Deno.remove(join("/sys/fs/cgroup", h, parent)).catch(() => {});
  }
}

/** Appends everything a stream yields to a file, write by write. */
async function copyToFile(stream: ReadableStream<Uint8Array>, path: string): Promise<void> {
  const f = await Deno.open(path, { append: true, create: true, write: true });
  try {
    for await (const chunk of stream) {
      let off = 0;
      while (off < chunk.length) off += await f.write(chunk.subarray(off));
    }
  } catch {
    /* the child went away */
  } finally {
    f.close();
  }
}

/** A typed Task API (v3) client connected to a task address. */
export async function taskClient(
  address: string,
  version: 2 | 3 = 3,
): Promise<{ task: UnaryClient<typeof TaskDefinition>; close(): void }> {
  const path = address.replace(/^ttrpc\+unix:\/\//, "").replace(/^unix:\/\//, "");
  const c = await TtrpcClient.connectUnix(path);
  // containerd.task.v2.Task has the same methods and messages under another service name.
  const definition = version === 2 ? TaskV2 as unknown as typeof TaskDefinition : TaskDefinition;
  return { task: markHandled(unaryClient(c, definition)), close: () => c.close() };
}

/**
 * Calls whose promises are also observed on a side branch: a test that fails
 * between starting a Wait and awaiting it then reports its own failure, not the
 * Wait's UNAVAILABLE rejection (when the client closes) as an uncaught error
 * that takes down the whole test module. Awaiting the call still throws.
 */
function markHandled<T extends object>(client: T): T {
  return new Proxy(client, {
    get(target, key, receiver) {
      const v = Reflect.get(target, key, receiver);
      if (typeof v !== "function") return v;
      return (...args: unknown[]) => {
        const r = v.apply(target, args);
        if (r instanceof Promise) r.catch(() => {});
        return r;
      };
    },
  });
}

/** Metadata containerd sends with task calls. */
export const K8S_NS = { metadata: { "containerd-namespace-ttrpc": "k8s.io" } };

/** Makes a FIFO (mkfifo, as containerd's cio does). */
export async function mkfifo(path: string): Promise<void> {
  const r = await new Deno.Command("mkfifo", { args: ["-m", "0600", path] }).output();
  if (!r.success) throw new Error(`mkfifo ${path} failed`);
}

/** Opens a FIFO for reading without blocking on a writer and collects everything until EOF. */
export function readFifo(path: string): { text: Promise<string> } {
  // A reader opened with O_RDWR never sees EOF, so use a child `cat` that opens read-only.
  const p = new Deno.Command("cat", { args: [path], stdout: "piped", stderr: "null" }).spawn();
  return { text: p.output().then((o) => new TextDecoder().decode(o.stdout)) };
}

/**
 * Runs `fn` against a daemon from `start` (a plain runC sandboxer by default):
 * the end of its log is printed when `fn` fails, and it is always cleaned up.
 * A test that restarts the daemon does it on the same object (`kill9`, `spawn`).
 */
export async function withDaemon(
  fn: (d: TestDaemon) => Promise<void>,
  start: () => Promise<TestDaemon> = () => TestDaemon.start(),
): Promise<void> {
  const d = await start();
  try {
    await fn(d);
  } catch (e) {
    console.error((await d.logs()).split("\n").slice(-80).join("\n"));
    throw e;
  } finally {
    await d.cleanup();
  }
}

/**
 * A gVisor sandboxer with `extra` in its `[gvisor]` table (ptrace: no KVM here), running
 * TEST_RUNSC (KUASAR_TEST_RUNSC, else the cached current build, else the one on PATH).
 */
export async function startGvisorDaemon(extra = 'platform = "ptrace"'): Promise<TestDaemon> {
  const base = await Deno.makeTempDir({ prefix: "k-" });
  const config = join(base, "gvisor.toml");
  await Deno.writeTextFile(
    config,
    `[gvisor]\n${extra}\n${
      TEST_RUNSC === "runsc" ? "" : `binary = ${JSON.stringify(TEST_RUNSC)}\n`
    }`,
  );
  return await TestDaemon.start({ base, kind: "gvisor", extraArgs: ["--config", config] });
}

/** A vmm sandboxer on the guest image, 512 MiB and one vCPU per VM, with debug logs. */
export async function startVmmDaemon(
  extraArgs: string[] = [],
  sandboxToml: readonly string[] = [],
  hypervisorToml: readonly string[] = [],
): Promise<TestDaemon> {
  const base = await Deno.makeTempDir({ prefix: "k-" });
  const config = join(base, "vmm.toml");
  await Deno.writeTextFile(
    config,
    [
      "[sandbox]",
      'log_level = "debug"',
      ...sandboxToml,
      "[hypervisor]",
      ...tomlKeysOnce([...vmmTomlLines(), "memory_in_mb = 512", "vcpus = 1", ...hypervisorToml]),
      "",
    ].join("\n"),
  );
  const d = await TestDaemon.start({
    base,
    kind: "vmm",
    extraArgs: ["--config", config, ...extraArgs],
  });
  // A test with its own templates waits for them itself.
  if (!hypervisorToml.some((l) => l.startsWith("template"))) {
    await suiteTemplateBuilt(() => d.logs());
  }
  return d;
}
