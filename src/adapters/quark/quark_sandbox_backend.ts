/**
 * The Quark sandbox (Kuasar's quark-sandboxer model): a pod is one Quark
 * process (QVisor), started with `quark sandbox`, which serves the pod's Task
 * API on its own socket; the sandboxer prepares bundles and watches the
 * process. Unlike Kuasar's, this one keeps its state and finds a running
 * Quark again after a restart.
 *
 * @module
 */
import { join } from "node:path";
import { InternalError, InvalidArgumentError } from "../../domain/errors.ts";
import { validateId } from "../../domain/ids.ts";
import type { SandboxExit, SandboxRecord } from "../../domain/sandbox.ts";
import type { TaskResource, TasksDiff } from "../../domain/tasks_extension.ts";
import { now } from "../../domain/time.ts";
import type { StartedProcess, StoredAnyBytes } from "../../ports/container_runtime.ts";
import type {
  RecoveredSandbox,
  SandboxBackend,
  SandboxExitListener,
} from "../../ports/sandbox_backend.ts";
import { log } from "../../lib/log.ts";
import type { Supervisor } from "../../ports/supervisor.ts";
import { cgroupMetrics, cgroupPathsOf } from "../os/cgroups.ts";
import { bindMount, mountAll, unmountAll } from "../os/mounts.ts";
import { goArch } from "../os/platform.ts";
import {
  type BindMount,
  bindsIntoRootfs,
  podSpec,
  quarkPaths,
  quarkSandboxArgv,
  stdioInBundle,
} from "./quark_spec.ts";

/** What the Quark backend needs. */
export interface QuarkSandboxBackendOptions {
  readonly dir: string;
  /** The quark binary. */
  readonly binary: string;
  /** Runs quark (detached: the sandbox it leaves keeps none of the daemon's descriptors). */
  readonly supervisor: Pick<Supervisor, "run">;
  /** How often a running Quark is checked for (it is not our child). */
  readonly pollMs?: number;
}

async function writeAtomic(path: string, text: string): Promise<void> {
  const tmp = `${path}.${crypto.randomUUID()}`;
  await Deno.writeTextFile(tmp, text);
  await Deno.rename(tmp, path);
}

/**
 * When the live process `pid` started (clock ticks since boot, field 22 of
 * /proc/<pid>/stat), undefined when it is gone or a zombie. With the pid, it
 * tells a process from a later one that reuses the pid.
 */
function startTimeOf(pid: number): string | undefined {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return fields[0] === "Z" ? undefined : fields[19];
  } catch {
    return undefined;
  }
}

function alive(pid: number): boolean {
  return startTimeOf(pid) !== undefined;
}

/** What a Quark pod keeps in its record. */
export interface QuarkPodState {
  /** Start time of the Quark process (see `startTimeOf`). */
  startTime?: string;
}

/**
 * Whether the pod's recorded pid is still its Quark: Quark is not our child,
 * so after a restart or a reboot the pid alone could name anything.
 * (Records from before the start time was kept are trusted by pid.)
 */
function isPodProcess(record: SandboxRecord<QuarkPodState>): boolean {
  if (!record.pid) return false;
  const t = startTimeOf(record.pid);
  return t !== undefined && (record.backend.startTime ?? t) === t;
}

/** Pod lifecycle for the Quark sandboxer. */
export class QuarkSandboxBackend implements SandboxBackend<QuarkPodState> {
  readonly platform = { os: "linux", architecture: goArch(), variant: "" };
  #opts: QuarkSandboxBackendOptions;
  #listener: SandboxExitListener | undefined;
  #timers = new Map<string, ReturnType<typeof setInterval>>();
  #log = log.with({ component: "quark-sandbox" });

  constructor(opts: QuarkSandboxBackendOptions) {
    this.#opts = opts;
  }

  setExitListener(listener: SandboxExitListener): void {
    this.#listener = listener;
  }

  ownTaskAddress(record: SandboxRecord): string {
    return `unix://${quarkPaths(this.#opts.dir, record.id).taskSocket}`;
  }

  async create(record: SandboxRecord): Promise<void> {
    const p = quarkPaths(this.#opts.dir, record.id);
    await Deno.mkdir(join(p.bundle, "rootfs", "dev"), { recursive: true, mode: 0o755 });
    await writeAtomic(join(p.bundle, "config.json"), JSON.stringify(podSpec(record)));
  }

  async start(record: SandboxRecord<QuarkPodState>): Promise<StartedProcess> {
    const p = quarkPaths(this.#opts.dir, record.id);
    await Deno.remove(p.pidFile).catch(() => {});
    // Quark daemonises and returns; the pid file names the sandbox process.
    const argv = quarkSandboxArgv(this.#opts.binary, this.#opts.dir, record.id);
    const r = await this.#opts.supervisor.run(argv, {
      cwd: p.bundle,
      timeoutMs: 60_000,
      detached: true,
    });
    if (r.code !== 0) {
      throw new InternalError(
        `quark sandbox failed (exit ${r.code}): ${(r.stderr || r.stdout).trim() || "no output"}`,
      );
    }
    const pid = Number((await Deno.readTextFile(p.pidFile).catch(() => "")).trim());
    if (!Number.isInteger(pid) || pid <= 0 || !alive(pid)) {
      throw new InternalError(`quark sandbox returned, but ${p.pidFile} names no running process`);
    }
    record.backend = { ...record.backend, startTime: startTimeOf(pid) };
    this.#watch(record.id, pid);
    return { pid };
  }

  /** Quark is not our child: check for it now and then, as Kuasar's ping does. */
  #watch(id: string, pid: number): void {
    clearInterval(this.#timers.get(id));
    const timer = setInterval(() => {
      if (alive(pid)) return;
      clearInterval(timer);
      this.#timers.delete(id);
      this.#listener?.sandboxExited(id, { status: 255, at: now() });
    }, this.#opts.pollMs ?? 1000);
    Deno.unrefTimer(timer);
    this.#timers.set(id, timer);
  }

  stop(record: SandboxRecord<QuarkPodState>): Promise<SandboxExit> {
    clearInterval(this.#timers.get(record.id));
    this.#timers.delete(record.id);
    // Quark has no graceful stop: Kuasar kills it outright.
    if (isPodProcess(record)) {
      try {
        Deno.kill(record.pid, "SIGKILL");
      } catch { /* already gone */ }
    }
    return Promise.resolve({ status: 137, at: now() });
  }

  async cleanup(record: SandboxRecord<QuarkPodState>): Promise<void> {
    await this.stop(record);
    await unmountAll(quarkPaths(this.#opts.dir, record.id).pod);
  }

  recover(record: SandboxRecord<QuarkPodState>): Promise<RecoveredSandbox> {
    if (record.state === "running" && isPodProcess(record)) {
      this.#watch(record.id, record.pid);
      return Promise.resolve({ alive: true });
    }
    return Promise.resolve({ alive: false, exit: record.exit ?? { status: 255, at: now() } });
  }

  async metrics(record: SandboxRecord): Promise<StoredAnyBytes | undefined> {
    if (!record.pid) return undefined;
    return await cgroupMetrics(await cgroupPathsOf(record.pid));
  }

  /** Prepares the bundles of announced containers and execs; takes withdrawn ones down. */
  async tasksChanged(record: SandboxRecord, diff: TasksDiff): Promise<void> {
    const bundleOf = (cid: string) =>
      join(quarkPaths(this.#opts.dir, record.id).bundle, validateId("container", cid));
    for (const t of diff.addedTasks) await this.#appendContainer(bundleOf(t.task_id), t);
    for (const { taskId, process } of diff.addedProcesses) {
      const bundle = bundleOf(taskId);
      const s = stdioInBundle(bundle, taskId, `${validateId("exec", process.exec_id)}-`, process);
      await this.#bindAll(s.binds);
    }
    for (const { taskId, execId } of diff.removedProcesses) {
      for (const k of ["stdin", "stdout", "stderr"]) {
        await unmountAll(join(bundleOf(taskId), `${execId}-${k}`));
      }
    }
    for (const cid of diff.removedTasks) {
      const bundle = bundleOf(cid);
      await unmountAll(bundle);
      await Deno.remove(bundle, { recursive: true }).catch(() => {});
    }
  }

  async #appendContainer(bundle: string, t: TaskResource): Promise<void> {
    if (!t.spec || typeof t.spec !== "object") {
      throw new InvalidArgumentError(`Task "${t.task_id}" in extensions.tasks has no spec`);
    }
    const spec = structuredClone(t.spec) as Parameters<typeof bindsIntoRootfs>[0];
    const rootfs = join(bundle, "rootfs");
    await Deno.mkdir(rootfs, { recursive: true, mode: 0o755 });
    try {
      if (t.rootfs.length) {
        await mountAll(t.rootfs.map((m) => ({ ...m, target: "" })), rootfs);
      }
      await this.#bindAll(bindsIntoRootfs(spec, rootfs));
      const s = stdioInBundle(bundle, t.task_id, "", t);
      await this.#bindAll(s.binds);
      spec.root = { ...spec.root, path: "rootfs" };
      await writeAtomic(join(bundle, "config.json"), JSON.stringify(spec));
      await writeAtomic(join(bundle, "io.json"), JSON.stringify(s.io));
    } catch (e) {
      await unmountAll(bundle);
      throw e;
    }
    this.#log.debug("container bundle prepared", { container: t.task_id, bundle });
  }

  async #bindAll(binds: readonly BindMount[]): Promise<void> {
    for (const b of binds) {
      const isDir = (await Deno.stat(b.source)).isDirectory;
      if (isDir) await Deno.mkdir(b.target, { recursive: true });
      else await Deno.writeFile(b.target, new Uint8Array(), { append: true });
      await bindMount(b.source, b.target);
    }
  }
}
