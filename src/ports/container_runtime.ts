/**
 * Port: what differs between sandbox kinds at the container level (runc,
 * Wasm engines, runsc, a guest agent). The Task API semantics shared by all
 * kinds live in `src/app/task_service.ts`, which drives this port.
 *
 * @module
 */
import type { SandboxRecord } from "../domain/sandbox.ts";
import type { ContainerRecord, ExecRecord, ProcessExit } from "../domain/task.ts";

/** A protobuf Any with raw bytes. */
export interface StoredAnyBytes {
  readonly typeUrl: string;
  readonly value: Uint8Array;
}

/** Called by a runtime when a process it started has exited. */
export interface ProcessExitListener {
  processExited(
    sandboxId: string,
    containerId: string,
    execId: string | undefined,
    exit: ProcessExit,
  ): void;
  /** The container's cgroup saw an out-of-memory kill. */
  processOom?(sandboxId: string, containerId: string): void;
}

/** A process listed by Task.Pids. */
export interface ProcessInfo {
  readonly pid: number;
  /** Set when the pid is an exec process of the container. */
  readonly execId?: string;
}

/** The container-level half of a sandbox kind. */
export interface ContainerRuntime {
  /** Creates the container (not started); must set `container.pid`. */
  create(sandbox: SandboxRecord, container: ContainerRecord): Promise<void>;
  /** Starts a created container's init process. */
  start(sandbox: SandboxRecord, container: ContainerRecord): Promise<void>;
  /** Starts an exec process; must set `exec.pid`. */
  startExec(sandbox: SandboxRecord, container: ContainerRecord, exec: ExecRecord): Promise<void>;
  /** Signals the init process (all processes with `all`) or an exec process. */
  kill(
    sandbox: SandboxRecord,
    container: ContainerRecord,
    exec: ExecRecord | undefined,
    signal: number,
    all: boolean,
  ): Promise<void>;
  /** Removes the container and everything it holds (runtime state, mounts). Idempotent. */
  delete(sandbox: SandboxRecord, container: ContainerRecord): Promise<void>;
  /** Releases what an exec process holds. Idempotent. */
  deleteExec(sandbox: SandboxRecord, container: ContainerRecord, exec: ExecRecord): Promise<void>;
  pids(sandbox: SandboxRecord, container: ContainerRecord): Promise<ProcessInfo[]>;
  pause(sandbox: SandboxRecord, container: ContainerRecord): Promise<void>;
  resume(sandbox: SandboxRecord, container: ContainerRecord): Promise<void>;
  /** Applies OCI LinuxResources (parsed JSON). */
  update(sandbox: SandboxRecord, container: ContainerRecord, resources: unknown): Promise<void>;
  /** cgroup metrics of the container as a protobuf Any. */
  stats(sandbox: SandboxRecord, container: ContainerRecord): Promise<StoredAnyBytes>;
  resizePty(
    sandbox: SandboxRecord,
    container: ContainerRecord,
    exec: ExecRecord | undefined,
    width: number,
    height: number,
  ): Promise<void>;
  /** The client closed its end of stdin. */
  closeStdin(
    sandbox: SandboxRecord,
    container: ContainerRecord,
    exec: ExecRecord | undefined,
  ): Promise<void>;
  /**
   * Whether the init of a container recorded as created was started after
   * all (a Start the daemon died in). Without it, recorded states are trusted.
   */
  started?(sandbox: SandboxRecord, container: ContainerRecord): Promise<boolean>;
  /**
   * Reattaches to a process found on disk after a restart: resolves with its
   * exit if it already ended, undefined if it is still running (and will be
   * reported through the listener).
   */
  recover(
    sandbox: SandboxRecord,
    container: ContainerRecord,
    exec: ExecRecord | undefined,
  ): Promise<ProcessExit | undefined>;
  setExitListener(listener: ProcessExitListener): void;
}
