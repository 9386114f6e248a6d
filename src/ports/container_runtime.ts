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

/** A process a runtime started. */
export interface StartedProcess {
  readonly pid: number;
}

/** Capabilities a runtime may lack; the Task service then answers UNIMPLEMENTED. */
export type Capability = "exec" | "pause" | "update" | "stats";

/** Exec processes (Task.Exec / Start / Delete of an exec). */
export interface ExecCapability<P extends object = object> {
  /** Starts an exec process. */
  startExec(
    sandbox: SandboxRecord,
    container: ContainerRecord<P>,
    exec: ExecRecord<P>,
  ): Promise<StartedProcess>;
  /** Releases what an exec process holds. Idempotent. */
  deleteExec(
    sandbox: SandboxRecord,
    container: ContainerRecord<P>,
    exec: ExecRecord<P>,
  ): Promise<void>;
}

/** Task.Pause / Task.Resume. */
export interface PauseCapability<P extends object = object> {
  pause(sandbox: SandboxRecord, container: ContainerRecord<P>): Promise<void>;
  resume(sandbox: SandboxRecord, container: ContainerRecord<P>): Promise<void>;
}

/** Task.Update. */
export interface UpdateCapability<P extends object = object> {
  /** Applies OCI LinuxResources (parsed JSON). */
  update(sandbox: SandboxRecord, container: ContainerRecord<P>, resources: unknown): Promise<void>;
}

/** Task.Stats. */
export interface StatsCapability<P extends object = object> {
  /** cgroup metrics of the container as a protobuf Any. */
  stats(sandbox: SandboxRecord, container: ContainerRecord<P>): Promise<StoredAnyBytes>;
}

/** The optional capabilities a runtime has, each by the object that implements it. */
export interface Capabilities<P extends object = object> {
  readonly exec?: ExecCapability<P>;
  readonly pause?: PauseCapability<P>;
  readonly update?: UpdateCapability<P>;
  readonly stats?: StatsCapability<P>;
}

/**
 * The container-level half of a sandbox kind. `P` is the runtime's own state
 * in process records (`ProcessRecord.backend`): what it must find again
 * after a restart. It writes that state as it acquires things, so that a
 * failed call's cleanup (`delete`) finds them.
 */
export interface ContainerRuntime<P extends object = object> {
  /** What it can do beyond the core. */
  readonly capabilities: Capabilities<P>;
  /** Why it lacks what it lacks: the message of the UNIMPLEMENTED answer. */
  readonly lacking?: Partial<Record<Capability, string>>;
  /** Creates the container (not started). */
  create(sandbox: SandboxRecord, container: ContainerRecord<P>): Promise<StartedProcess>;
  /** Starts a created container's init process. */
  start(sandbox: SandboxRecord, container: ContainerRecord<P>): Promise<void>;
  /** Signals the init process (all processes with `all`) or an exec process. */
  kill(
    sandbox: SandboxRecord,
    container: ContainerRecord<P>,
    exec: ExecRecord<P> | undefined,
    signal: number,
    all: boolean,
  ): Promise<void>;
  /** Removes the container and everything it holds (runtime state, mounts). Idempotent. */
  delete(sandbox: SandboxRecord, container: ContainerRecord<P>): Promise<void>;
  pids(sandbox: SandboxRecord, container: ContainerRecord<P>): Promise<ProcessInfo[]>;
  resizePty(
    sandbox: SandboxRecord,
    container: ContainerRecord<P>,
    exec: ExecRecord<P> | undefined,
    width: number,
    height: number,
  ): Promise<void>;
  /** The client closed its end of stdin. */
  closeStdin(
    sandbox: SandboxRecord,
    container: ContainerRecord<P>,
    exec: ExecRecord<P> | undefined,
  ): Promise<void>;
  /**
   * Whether the init of a container recorded as created was started after
   * all (a Start the daemon died in). Without it, recorded states are trusted.
   */
  started?(sandbox: SandboxRecord, container: ContainerRecord<P>): Promise<boolean>;
  /**
   * Reattaches to a process found on disk after a restart: resolves with its
   * exit if it already ended, undefined if it is still running (and will be
   * reported through the listener).
   */
  recover(
    sandbox: SandboxRecord,
    container: ContainerRecord<P>,
    exec: ExecRecord<P> | undefined,
  ): Promise<ProcessExit | undefined>;
  setExitListener(listener: ProcessExitListener): void;
}
