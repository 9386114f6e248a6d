/**
 * Containers of runC pods, made by the real runc. Each container process
 * (init or exec) runs under a monitor helper that owns its stdio and pty and
 * records its exit, so the daemon can die and come back without losing an
 * exit code. Specs are rewritten to join the pod's namespaces; rootfs mounts
 * from Task.Create are mounted at the bundle's root and removed on Delete.
 *
 * @module
 */
import { join } from "node:path";
import { FailedPreconditionError, InternalError } from "../../domain/errors.ts";
import { hasOwnPidNamespace, joinPodNamespaces } from "../../domain/oci.ts";
import type { SandboxRecord } from "../../domain/sandbox.ts";
import type { ContainerRecord, ExecRecord, Io, ProcessExit } from "../../domain/task.ts";
import { now } from "../../domain/time.ts";
import type {
  ContainerRuntime,
  ProcessExitListener,
  ProcessInfo,
  StoredAnyBytes,
} from "../../ports/container_runtime.ts";
import { sleep } from "../../app/sync.ts";
import { log } from "../../log.ts";
import { cgroupMetrics, type CgroupPaths, cgroupPathsOf, oomKills } from "../os/cgroups.ts";
import type { ExitRecord, ExitWatcher } from "../os/exit_watcher.ts";
import { HelperFailedError } from "../os/helper.ts";
import { startMonitored } from "../os/monitored.ts";
import { mountAll, mountsUnder, unmountAll } from "../os/mounts.ts";
import { addPodFileMounts } from "../os/pod_files.ts";
import { execToken, initToken } from "../os/process_tokens.ts";
import { ProcessIo } from "../os/process_io.ts";
import { readSpec } from "../os/bundle.ts";
import { signalName } from "../os/signals.ts";
import type { StreamHub } from "../task/streaming.ts";
import { lastRuncError, type RuncCli } from "./runc_cli.ts";

/** What the runC container runtime needs. */
export interface RuncContainerRuntimeOptions {
  /** The sandboxer's --dir. */
  readonly dir: string;
  readonly helper: string;
  readonly exits: ExitWatcher;
  readonly runc: RuncCli;
  /** The Streaming service's channels, for containerd's streaming IO. */
  readonly streams: StreamHub;
}

/** Backend state kept in a container or exec record. */
interface ProcBackend {
  helperPid?: number;
  cgroups?: CgroupPaths;
  ownPidNs?: boolean;
  rootfs?: string;
}

const SIGKILL = 9;

/** runc-backed containers. */
export class RuncContainerRuntime implements ContainerRuntime {
  #opts: RuncContainerRuntimeOptions;
  #runc: RuncCli;
  #listener: ProcessExitListener | undefined;
  #log = log.with({ component: "runc" });

  #io: ProcessIo;

  constructor(opts: RuncContainerRuntimeOptions) {
    this.#opts = opts;
    this.#runc = opts.runc;
    this.#io = new ProcessIo(opts.streams, join(opts.dir, "s"));
  }

  setExitListener(listener: ProcessExitListener): void {
    this.#listener = listener;
  }

  /** Per-container state directory (pid files, process specs, logs). */
  stateDir(sandboxId: string, containerId: string): string {
    return join(this.#opts.dir, sandboxId, "c", containerId);
  }

  async create(sb: SandboxRecord, c: ContainerRecord): Promise<void> {
    const spec = await readSpec(c.bundle);
    joinPodNamespaces(spec, {
      network: `/proc/${sb.pid}/ns/net`,
      ipc: `/proc/${sb.pid}/ns/ipc`,
      uts: `/proc/${sb.pid}/ns/uts`,
      pid: `/proc/${sb.pid}/ns/pid`,
    });
    await addPodFileMounts(spec, join(this.#opts.dir, sb.id));
    await Deno.writeTextFile(join(c.bundle, "config.json"), JSON.stringify(spec));
    const state = this.stateDir(sb.id, c.id);
    await Deno.mkdir(state, { recursive: true, mode: 0o700 });
    const backend = c.backend as ProcBackend;
    if (c.rootfs.length) {
      const target = join(c.bundle, spec.root?.path ?? "rootfs");
      backend.rootfs = target;
      await mountAll(c.rootfs, target);
    }
    const token = initToken(c.id);
    const pidFile = join(state, "init.pid");
    const logFile = join(c.bundle, "log.json");
    await Deno.remove(logFile).catch(() => {});
    const { helperPid, pid } = await this.#monitor(
      sb.id,
      token,
      c.io,
      pidFile,
      state,
      (console) => this.#runc.createArgv(c.id, c.bundle, pidFile, logFile, console),
      logFile,
    );
    c.pid = pid;
    backend.helperPid = helperPid;
    backend.ownPidNs = hasOwnPidNamespace(spec);
    backend.cgroups = await cgroupPathsOf(pid).catch(() => undefined);
    this.#watchInit(sb.id, c, helperPid);
    await this.#io.attach(sb.id, token, c.io);
  }

  /** Runs `argv(consoleSocket)` under a monitor; resolves with the process pid. */
  async #monitor(
    sandboxId: string,
    token: string,
    io: Io,
    pidFile: string,
    stateDir: string,
    argv: (consoleSocket?: string) => string[],
    logFile: string,
  ): Promise<{ helperPid: number; pid: number }> {
    const deps = { helper: this.#opts.helper, exits: this.#opts.exits, io: this.#io };
    try {
      return await startMonitored(deps, { token, io, pidFile, stateDir, argv });
    } catch (e) {
      if (e instanceof HelperFailedError) {
        const why = await lastRuncError(logFile) ?? e.message;
        throw new InternalError(`runc failed in sandbox "${sandboxId}": ${why}`);
      }
      throw e;
    }
  }

  #watchInit(sandboxId: string, c: ContainerRecord, helperPid: number): void {
    this.#opts.exits.expect(initToken(c.id), helperPid, {
      exited: (r) => this.#initExited(sandboxId, c, r),
      lost: () => this.#lost(sandboxId, c, undefined),
    });
  }

  async #initExited(sandboxId: string, c: ContainerRecord, r: ExitRecord): Promise<void> {
    const b = c.backend as ProcBackend;
    if (b.cgroups && await oomKills(b.cgroups).catch(() => 0n) > 0n) {
      this.#listener?.processOom?.(sandboxId, c.id);
    }
    // Without a pid namespace of its own, the init's death does not take the
    // other processes of the container down: do it, as containerd's shim does.
    if (!b.ownPidNs) await this.#runc.kill(c.id, SIGKILL, true).catch(() => {});
    this.#listener?.processExited(sandboxId, c.id, undefined, { status: r.status, at: r.at });
  }

  /** The monitor died without a record: wait for runc to see the process gone. */
  async #lost(sandboxId: string, c: ContainerRecord, e: ExecRecord | undefined): Promise<void> {
    if (!e) {
      for (;;) {
        const st = await this.#runc.state(c.id).catch(() => undefined);
        if (!st || st.status === "stopped") break;
        await sleep(2000);
      }
    }
    this.#listener?.processExited(sandboxId, c.id, e?.id, { status: 255, at: now() });
  }

  async start(_sb: SandboxRecord, c: ContainerRecord): Promise<void> {
    await this.#runc.start(c.id);
  }

  async startExec(sb: SandboxRecord, c: ContainerRecord, e: ExecRecord): Promise<void> {
    const state = this.stateDir(sb.id, c.id);
    const processFile = join(state, `exec-${e.id}.json`);
    const spec = { ...(e.spec as Record<string, unknown>), terminal: e.io.terminal };
    await Deno.writeTextFile(processFile, JSON.stringify(spec));
    const token = execToken(c.id, e.id);
    const pidFile = join(state, `exec-${e.id}.pid`);
    const logFile = join(state, `exec-${e.id}.log.json`);
    const { helperPid, pid } = await this.#monitor(
      sb.id,
      token,
      e.io,
      pidFile,
      state,
      (console) => this.#runc.execArgv(c.id, processFile, pidFile, logFile, console),
      logFile,
    );
    e.pid = pid;
    (e.backend as ProcBackend).helperPid = helperPid;
    this.#opts.exits.expect(token, helperPid, {
      exited: (r) =>
        this.#listener?.processExited(sb.id, c.id, e.id, { status: r.status, at: r.at }),
      lost: () => this.#lost(sb.id, c, e),
    });
    await this.#io.attach(sb.id, token, e.io);
  }

  async kill(
    _sb: SandboxRecord,
    c: ContainerRecord,
    e: ExecRecord | undefined,
    signal: number,
    all: boolean,
  ): Promise<void> {
    if (!e) {
      await this.#runc.kill(c.id, signal, all);
      return;
    }
    if (!e.pid) {
      throw new FailedPreconditionError(`Cannot signal exec "${e.id}": it was not started`);
    }
    if (
      !await this.#opts.exits.alive(
        execToken(c.id, e.id),
        Number((e.backend as ProcBackend).helperPid),
      )
    ) {
      return; // already exited; its exit is being recorded
    }
    try {
      Deno.kill(e.pid, signalName(signal));
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
  }

  async delete(sb: SandboxRecord, c: ContainerRecord): Promise<void> {
    const token = initToken(c.id);
    const exits = this.#opts.exits;
    exits.cancel(token);
    await this.#runc.delete(c.id, true);
    // Let the monitor write its record before it is removed, so none is left behind.
    const helperPid = Number((c.backend as ProcBackend).helperPid ?? 0);
    for (let i = 0; i < 50 && await exits.alive(token, helperPid); i++) await sleep(50);
    const rootfs = (c.backend as ProcBackend).rootfs ?? join(c.bundle, "rootfs");
    if ((await mountsUnder(rootfs).catch(() => [])).length) await unmountAll(rootfs);
    await exits.remove(token);
    await this.#io.release(sb.id, token, c.io);
    await Deno.remove(this.stateDir(sb.id, c.id), { recursive: true }).catch(() => {});
  }

  async deleteExec(sb: SandboxRecord, c: ContainerRecord, e: ExecRecord): Promise<void> {
    const token = execToken(c.id, e.id);
    await this.#opts.exits.remove(token);
    await this.#io.release(sb.id, token, e.io);
    const state = this.stateDir(sb.id, c.id);
    for (const f of [`exec-${e.id}.json`, `exec-${e.id}.pid`, `exec-${e.id}.log.json`]) {
      await Deno.remove(join(state, f)).catch(() => {});
    }
  }

  async pids(_sb: SandboxRecord, c: ContainerRecord): Promise<ProcessInfo[]> {
    const byPid = new Map(Object.values(c.execs).map((e) => [e.pid, e.id]));
    const pids = await this.#runc.ps(c.id).catch(() => [c.pid]);
    return pids.map((pid) => ({ pid, execId: byPid.get(pid) }));
  }

  async pause(_sb: SandboxRecord, c: ContainerRecord): Promise<void> {
    await this.#runc.pause(c.id);
  }

  async resume(_sb: SandboxRecord, c: ContainerRecord): Promise<void> {
    await this.#runc.resume(c.id);
  }

  async update(_sb: SandboxRecord, c: ContainerRecord, resources: unknown): Promise<void> {
    await this.#runc.update(c.id, resources);
  }

  async stats(_sb: SandboxRecord, c: ContainerRecord): Promise<StoredAnyBytes> {
    const b = c.backend as ProcBackend;
    if (!b.cgroups) throw new FailedPreconditionError(`Container "${c.id}" has no cgroup to read`);
    return await cgroupMetrics(b.cgroups);
  }

  async resizePty(
    _sb: SandboxRecord,
    c: ContainerRecord,
    e: ExecRecord | undefined,
    width: number,
    height: number,
  ): Promise<void> {
    await this.#io.control(
      e ? execToken(c.id, e.id) : initToken(c.id),
      `resize ${width} ${height}`,
    );
  }

  async closeStdin(
    sb: SandboxRecord,
    c: ContainerRecord,
    e: ExecRecord | undefined,
  ): Promise<void> {
    // A FIFO stdin needs nothing: the process reads it and sees EOF when the writer closes.
    await this.#io.closeStdin(sb.id, e ? execToken(c.id, e.id) : initToken(c.id), (e ?? c).io);
  }

  async recover(
    sb: SandboxRecord,
    c: ContainerRecord,
    e: ExecRecord | undefined,
  ): Promise<ProcessExit | undefined> {
    const exits = this.#opts.exits;
    const token = e ? execToken(c.id, e.id) : initToken(c.id);
    const helperPid = Number(((e ?? c).backend as ProcBackend).helperPid ?? 0);
    // Streamed output may still wait in a monitor, even after the exit.
    if (await exits.alive(token, helperPid)) await this.#io.attach(sb.id, token, (e ?? c).io);
    const rec = await exits.read(token);
    if (rec) return { status: rec.status, at: rec.at };
    if (await exits.alive(token, helperPid)) {
      if (e) {
        exits.expect(token, helperPid, {
          exited: (r) =>
            this.#listener?.processExited(sb.id, c.id, e.id, { status: r.status, at: r.at }),
          lost: () => this.#lost(sb.id, c, e),
        });
      } else {
        this.#watchInit(sb.id, c, helperPid);
      }
      return undefined;
    }
    // No record and no monitor: the process may still run (monitor killed).
    if (!e) {
      const st = await this.#runc.state(c.id).catch(() => undefined);
      if (st && st.status !== "stopped") {
        this.#lost(sb.id, c, undefined);
        return undefined;
      }
    }
    return { status: 255, at: now() };
  }
}
