/**
 * Containers and their processes as the Task API sees them, with the
 * lifecycle rules every sandbox kind shares.
 *
 * @module
 */
import { FailedPreconditionError, InvalidTransitionError } from "./errors.ts";
import type { Instant } from "./time.ts";

/** Lifecycle of a container's init process or an exec process. */
export type ProcessState = "created" | "running" | "paused" | "stopped";

/** Stdio of a process: paths or URLs exactly as the Task API gave them. */
export interface Io {
  readonly stdin: string;
  readonly stdout: string;
  readonly stderr: string;
  readonly terminal: boolean;
}

/** How a process ended. */
export interface ProcessExit {
  /** Exit code, or 128 + signal number for a killed process. */
  readonly status: number;
  readonly at: Instant;
}

/** A containerd Mount (rootfs or volume). */
export interface Mount {
  readonly type: string;
  readonly source: string;
  readonly target: string;
  readonly options: readonly string[];
}

/**
 * State common to init and exec processes. `B` is the runtime's own state
 * (`backend`), opaque to the core: each runtime names its type.
 */
export interface ProcessRecord<B extends object = object> {
  readonly id: string;
  readonly io: Io;
  state: ProcessState;
  pid: number;
  exit?: ProcessExit;
  /**
   * Set while Create (init) or Start (exec) is under way and cleared once it
   * finished: a record still marked after a crash was never confirmed to the
   * client, so recovery undoes it instead of adopting it.
   */
  pending?: "create" | "start";
  /** Recovery killed it because its Start never returned: a replayed Start is not answered OK. */
  undone?: boolean;
  /** The runtime's own state (monitor pid, mounts, cgroups…), persisted with the record. */
  backend: B;
}

/** An exec process added by Task.Exec. */
export interface ExecRecord<B extends object = object> extends ProcessRecord<B> {
  /** The OCI process spec (JSON) from ExecProcessRequest.spec. */
  readonly spec: unknown;
}

/** A container of a sandbox; its init process shares the container's id. */
export interface ContainerRecord<B extends object = object> extends ProcessRecord<B> {
  readonly sandboxId: string;
  /** containerd namespace the container was created in (events are published there). */
  readonly namespace: string;
  readonly bundle: string;
  readonly rootfs: readonly Mount[];
  readonly createdAt: Instant;
  execs: Record<string, ExecRecord<B>>;
}

const PROCESS_TRANSITIONS: Record<ProcessState, readonly ProcessState[]> = {
  created: ["running", "stopped"],
  running: ["paused", "stopped"],
  paused: ["running", "stopped"],
  stopped: [],
};

/** Throws `InvalidTransitionError` unless a process may move from `from` to `to`. */
export function checkProcessTransition(
  subject: string,
  from: ProcessState,
  to: ProcessState,
): void {
  if (!PROCESS_TRANSITIONS[from].includes(to)) {
    throw new InvalidTransitionError(subject, from, to);
  }
}

/** A process may be deleted once it has stopped, or before it ever started. */
export function checkDeletable(subject: string, state: ProcessState): void {
  if (state === "running" || state === "paused") {
    throw new FailedPreconditionError(`Cannot delete ${subject}: it is ${state}`);
  }
}

/** containerd's numeric task status (containerd.v1.types.Status). */
export function processStatusNumber(state: ProcessState): number {
  switch (state) {
    case "created":
      return 1;
    case "running":
      return 2;
    case "stopped":
      return 3;
    case "paused":
      return 4;
  }
}
