/**
 * What runc and runsc containers have in common: an OCI runtime CLI
 * (OciRuntimeCli) makes them, each process runs under a monitor helper that owns
 * its stdio and records its exit, and the daemon finds all of it again
 * after a restart. Subclasses say how a container is created and started,
 * how an exec is signalled, and where stats come from.
 *
 * @module
 */
import { join } from "node:path";
import { FailedPreconditionError, InternalError } from "../../domain/errors.ts";
import type { SandboxRecord } from "../../domain/sandbox.ts";
import type { ContainerRecord, ExecRecord, Io, ProcessExit } from "../../domain/task.ts";
import { now } from "../../domain/time.ts";
import type {
  Capabilities,
  ContainerRuntime,
  ExecCapability,
  PauseCapability,
  ProcessExitListener,
  ProcessInfo,
  StartedProcess,
} from "../../ports/container_runtime.ts";
import { sleep } from "../../lib/sync.ts";
import {
  type ExitRecord,
  ProcessStartError,
  type RootfsMount,
  type SupervisedProcess,
  type Supervisor,
} from "../../ports/supervisor.ts";
import { unmountOwn } from "../os/mounts.ts";
import { ownRootfsTarget } from "../../domain/bundle_paths.ts";
import { ProcessIo } from "../supervisor/process_io.ts";
import type { StateLayout } from "../os/state_layout.ts";
import { execToken, initToken } from "../supervisor/process_tokens.ts";
import type { StreamHub } from "../task/streaming.ts";
import { lastRuntimeError, type OciRuntimeCli } from "./runtime_cli.ts";
import { log } from "../../lib/log.ts";

/** The parent pid of a live process, undefined when it is gone (or a zombie's). */
export async function parentOf(pid: number): Promise<number | undefined> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`).catch(() => "");
  // "pid (comm) state ppid …": comm may hold spaces and parentheses.
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  if (f.length < 2 || f[0] === "Z" || f[0] === "X") return undefined;
  return Number(f[1]);
}

/** What a runtime of monitored OCI containers needs. */
export interface MonitoredContainersOptions {
  /** The sandboxer's --dir. */
  readonly dir: string;
  /** Where the daemon's own entries under --dir are. */
  readonly layout: StateLayout;
  readonly supervisor: Supervisor;
  /** The runtime CLI (runc, or runsc through the same flags). */
  readonly cli: OciRuntimeCli;
  /** The Streaming service's channels, for containerd's streaming IO. */
  readonly streams: StreamHub;
  /** Running as a VM's guest agent: the pod is the VM, specs are ready as they come. */
  readonly guest?: boolean;
}

/** State every monitored process keeps in its record. */
export interface MonitoredState {
  /** Pid of the monitor helper. */
  helperPid?: number;
  /** Where the rootfs mounts of Task.Create were mounted. */
  rootfs?: string;
  /** They were mounted in the container's mount namespace only: nothing on the node to unmount. */
  rootfsInContainer?: boolean;
}

/** How a monitored process is launched. */
export interface LaunchCommand {
  /** The runtime command; given the console socket when the process has a terminal. */
  readonly argv: (consoleSocket?: string) => string[];
  /** A command printing the exit (`{"exitStatus":N}`), for processes that are not host processes. */
  readonly waitArgv?: string[];
  /** The runtime's JSON log, read for the reason of a failure. */
  readonly logFile: string;
  /** Rootfs mounts made in the runtime's own mount namespace (MonitoredProcess.rootfsMounts). */
  readonly rootfsMounts?: readonly RootfsMount[];
}

/** Containers made by an OCI runtime CLI and run under monitors. */
export abstract class MonitoredContainers<P extends MonitoredState = MonitoredState>
  implements ContainerRuntime<P>, ExecCapability<P>, PauseCapability<P> {
  abstract readonly capabilities: Capabilities<P>;
  protected readonly opts: MonitoredContainersOptions;
  protected readonly cli: OciRuntimeCli;
  protected readonly io: ProcessIo;
  protected listener: ProcessExitListener | undefined;
  /** The runtime's name in error messages ("runc", "runsc"). */
  protected abstract readonly runtimeName: string;

  constructor(opts: MonitoredContainersOptions) {
    this.opts = opts;
    this.cli = opts.cli;
    this.io = new ProcessIo(opts.streams, opts.layout.path("sockets"));
  }

  abstract create(sb: SandboxRecord, c: ContainerRecord<P>): Promise<StartedProcess>;
  abstract start(sb: SandboxRecord, c: ContainerRecord<P>): Promise<void>;
  abstract pids(sb: SandboxRecord, c: ContainerRecord<P>): Promise<ProcessInfo[]>;
  /** More `exec` flags of the runtime (runsc: where to write the pid inside the sandbox). */
  protected execFlags(_stateDir: string, _e: ExecRecord<P>): string[] {
    return [];
  }

  /** Called once an exec process runs, before its exit is followed. */
  protected execStarted(_stateDir: string, _e: ExecRecord<P>): Promise<void> {
    return Promise.resolve();
  }

  async startExec(
    sb: SandboxRecord,
    c: ContainerRecord<P>,
    e: ExecRecord<P>,
  ): Promise<StartedProcess> {
    const state = this.stateDir(sb.id, c.id);
    const processFile = join(state, `exec-${e.id}.json`);
    const spec = { ...(e.spec as Record<string, unknown>), terminal: e.io.terminal };
    await Deno.writeTextFile(processFile, JSON.stringify(spec));
    const token = execToken(c.id, e.id);
    const pidFile = join(state, `exec-${e.id}.pid`);
    const logFile = join(state, `exec-${e.id}.log.json`);
    const flags = this.execFlags(state, e);
    const h = await this.launch(sb.id, token, e.io, pidFile, state, {
      argv: (console) => this.cli.execArgv(c.id, processFile, pidFile, logFile, console, flags),
      logFile,
    });
    e.backend.helperPid = h.helperPid;
    await this.execStarted(state, e);
    this.watch(sb.id, c, e, h.helperPid);
    await this.io.attach(sb.id, token, e.io);
    return { pid: h.pid };
  }

  /** Signals a started exec process that still runs. */
  protected abstract signalExec(
    c: ContainerRecord<P>,
    e: ExecRecord<P>,
    signal: number,
  ): Promise<void>;

  setExitListener(listener: ProcessExitListener): void {
    this.listener = listener;
  }

  /** Per-container state directory (pid files, process specs, logs). */
  stateDir(sandboxId: string, containerId: string): string {
    return join(this.opts.dir, sandboxId, "c", containerId);
  }

  /** Runs a process under a monitor; a runtime failure becomes an error with the runtime's reason. */
  protected async launch(
    sandboxId: string,
    token: string,
    io: Io,
    pidFile: string,
    stateDir: string,
    cmd: LaunchCommand,
  ): Promise<SupervisedProcess> {
    try {
      const monitorLog = join(stateDir, "monitor.log");
      return await this.opts.supervisor.startMonitored(
        { token, io, pidFile, monitorLog, ...cmd },
        this.io,
      );
    } catch (e) {
      if (e instanceof ProcessStartError) {
        const why = await lastRuntimeError(cmd.logFile) ?? e.message;
        throw new InternalError(`${this.runtimeName} failed in sandbox "${sandboxId}": ${why}`);
      }
      throw e;
    }
  }

  /** Follows a process's monitor until its exit record arrives. */
  protected watch(
    sandboxId: string,
    c: ContainerRecord<P>,
    e: ExecRecord<P> | undefined,
    helperPid: number,
  ): void {
    const token = e ? execToken(c.id, e.id) : initToken(c.id);
    this.opts.supervisor.exits.expect(token, helperPid, {
      // Reported once its streamed output was read: containerd stops reading at the exit.
      exited: async (r) => {
        await this.io.delivered(sandboxId, (e ?? c).io);
        return e ? this.#exited(sandboxId, c, e, r) : this.initExited(sandboxId, c, r);
      },
      lost: () => this.#lost(sandboxId, c, e),
    });
  }

  #exited(sandboxId: string, c: ContainerRecord<P>, e: ExecRecord<P>, r: ExitRecord): void {
    this.listener?.processExited(sandboxId, c.id, e.id, { status: r.status, at: r.at });
  }

  /** A container's init exited (a subclass may do more first). */
  protected initExited(sandboxId: string, c: ContainerRecord<P>, r: ExitRecord): Promise<void> {
    this.listener?.processExited(sandboxId, c.id, undefined, { status: r.status, at: r.at });
    return Promise.resolve();
  }

  /** The monitor died without a record: wait until the runtime sees the container stopped. */
  async #lost(
    sandboxId: string,
    c: ContainerRecord<P>,
    e: ExecRecord<P> | undefined,
  ): Promise<void> {
    if (!e) {
      for (;;) {
        const st = await this.cli.state(c.id).catch(() => undefined);
        if (!st || st.status === "stopped") break;
        await sleep(2000);
      }
    }
    this.listener?.processExited(sandboxId, c.id, e?.id, { status: 255, at: now() });
  }

  async kill(
    _sb: SandboxRecord,
    c: ContainerRecord<P>,
    e: ExecRecord<P> | undefined,
    signal: number,
    all: boolean,
  ): Promise<void> {
    if (!e) return await this.cli.kill(c.id, signal, all);
    const helperPid = Number(e.backend.helperPid ?? 0);
    if (!e.pid) {
      throw new FailedPreconditionError(`Cannot signal exec "${e.id}": it was not started`);
    }
    // Already exited: its exit is being recorded.
    if (!await this.opts.supervisor.exits.alive(execToken(c.id, e.id), helperPid)) return;
    await this.signalExec(c, e, signal);
  }

  async delete(sb: SandboxRecord, c: ContainerRecord<P>): Promise<void> {
    const token = initToken(c.id);
    const exits = this.opts.supervisor.exits;
    exits.cancel(token);
    // A failing delete is judged by what it leaves: processes (below) or nothing.
    await this.cli.delete(c.id, true).catch((err) =>
      log.warn("runtime delete failed", { container: c.id, error: err })
    );
    // Let the monitor write its record before it is removed, so none is left behind.
    const helperPid = Number(c.backend.helperPid ?? 0);
    for (let i = 0; i < 50 && helperPid && await exits.alive(token, helperPid); i++) {
      await sleep(50);
    }
    // The runtime may have lost the container (its state gone: `delete` then
    // kills nothing) while its processes run on: kill them by another route,
    // and never report a deleted container that still runs.
    if (await this.stillRuns(c)) {
      log.warn("container still runs after the runtime's delete: killing it directly", {
        sandbox: sb.id,
        container: c.id,
      });
      await this.killDirectly(c);
      if (await this.stillRuns(c)) {
        throw new InternalError(
          `Cannot delete container "${c.id}" of sandbox "${sb.id}": its processes still run ` +
            `after ${this.runtimeName} delete and a direct SIGKILL`,
        );
      }
    }
    // Only what Create mounted there (a rootfs the daemon was not given to mount stays).
    const rootfs = c.backend.rootfsInContainer ? undefined : ownRootfsTarget(
      c.bundle,
      c.rootfs.length,
      c.backend.rootfs,
    );
    if (rootfs) await unmountOwn(rootfs, c.rootfs.length);
    await exits.remove(token);
    await this.io.release(sb.id, token, c.io);
    await Deno.remove(this.stateDir(sb.id, c.id), { recursive: true }).catch(() => {});
  }

  /**
   * Whether a process of the container still runs on the host: its init,
   * recognised as the child of its monitor (a reused pid has another parent).
   */
  protected async stillRuns(c: ContainerRecord<P>): Promise<boolean> {
    const helperPid = Number(c.backend.helperPid ?? 0);
    return helperPid > 0 && c.pid > 0 && await parentOf(c.pid) === helperPid;
  }

  /** SIGKILLs the container's processes without the runtime (which lost them), and waits a little. */
  protected async killDirectly(c: ContainerRecord<P>): Promise<void> {
    const helperPid = Number(c.backend.helperPid ?? 0);
    for (let i = 0; i < 40 && await this.stillRuns(c); i++) {
      if (await parentOf(c.pid) === helperPid) {
        try {
          Deno.kill(c.pid, "SIGKILL");
        } catch { /* gone meanwhile */ }
      }
      await sleep(50);
    }
  }

  async deleteExec(sb: SandboxRecord, c: ContainerRecord<P>, e: ExecRecord<P>): Promise<void> {
    const token = execToken(c.id, e.id);
    await this.opts.supervisor.exits.remove(token);
    await this.io.release(sb.id, token, e.io);
    const state = this.stateDir(sb.id, c.id);
    const prefix = `exec-${e.id}.`;
    const files = await Array.fromAsync(Deno.readDir(state)).catch(() => []);
    for (const f of files) {
      if (f.name.startsWith(prefix)) await Deno.remove(join(state, f.name)).catch(() => {});
    }
  }

  async pause(_sb: SandboxRecord, c: ContainerRecord<P>): Promise<void> {
    await this.cli.pause(c.id);
  }

  async resume(_sb: SandboxRecord, c: ContainerRecord<P>): Promise<void> {
    await this.cli.resume(c.id);
  }

  async resizePty(
    _sb: SandboxRecord,
    c: ContainerRecord<P>,
    e: ExecRecord<P> | undefined,
    width: number,
    height: number,
  ): Promise<void> {
    await this.io.control(e ? execToken(c.id, e.id) : initToken(c.id), `resize ${width} ${height}`);
  }

  async closeStdin(sb: SandboxRecord, c: ContainerRecord<P>, e: ExecRecord<P> | undefined) {
    // A FIFO stdin needs nothing: the process reads it and sees EOF when the writer closes.
    await this.io.closeStdin(sb.id, e ? execToken(c.id, e.id) : initToken(c.id), (e ?? c).io);
  }

  async recover(
    sb: SandboxRecord,
    c: ContainerRecord<P>,
    e: ExecRecord<P> | undefined,
  ): Promise<ProcessExit | undefined> {
    const exits = this.opts.supervisor.exits;
    const token = e ? execToken(c.id, e.id) : initToken(c.id);
    const helperPid = Number((e ?? c).backend.helperPid ?? 0);
    const alive = helperPid > 0 && await exits.alive(token, helperPid);
    // Streamed output may still wait in a monitor, even after the exit.
    if (alive) await this.io.attach(sb.id, token, (e ?? c).io);
    const rec = await exits.read(token);
    if (rec) return { status: rec.status, at: rec.at };
    if (alive) {
      this.watch(sb.id, c, e, helperPid);
      return undefined;
    }
    if (!e) {
      const st = await this.cli.state(c.id).catch(() => undefined);
      // Created without a monitor (runsc: the monitor comes with Start): still startable.
      if (st?.status === "created" && !helperPid) return undefined;
      // No record and no monitor, but the process may still run (monitor killed).
      if (st && st.status !== "stopped") {
        this.#lost(sb.id, c, undefined);
        return undefined;
      }
    }
    return { status: 255, at: now() };
  }
}
