/**
 * Port: the processes a sandboxer starts and follows — commands run to
 * completion, processes run under a monitor that owns their stdio and
 * records their exit, pod namespace holders — and the exit records that
 * outlive a daemon restart. Adapters get it injected, so their argv and
 * state handling are unit-tested against a recording fake.
 *
 * @module
 */
import type { Io } from "../domain/task.ts";
import type { Instant } from "../domain/time.ts";
import { InternalError } from "../domain/errors.ts";

/** Result of a finished command. */
export interface CommandResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Options of `Supervisor.run`. */
export interface RunOptions {
  /** Bytes written to the command's stdin (which is closed afterwards). */
  readonly stdin?: Uint8Array;
  /** Kills the command (SIGKILL) after this many milliseconds: DEADLINE_EXCEEDED. */
  readonly timeoutMs?: number;
  readonly env?: Record<string, string>;
  readonly cwd?: string;
  /**
   * Output to /dev/null: for commands that leave processes behind holding
   * their stdio (runsc create), whose pipes would never reach EOF.
   */
  readonly discardOutput?: boolean;
  /**
   * Run through the launcher, so processes the command leaves behind inherit
   * none of the daemon's descriptors.
   */
  readonly detached?: boolean;
}

/** A supervised process that reported ready. */
export interface SupervisedProcess {
  /** Pid of the supervising process (monitor or holder parent). */
  readonly helperPid: number;
  /** The pid it reported: the container process, or the namespace init. */
  readonly pid: number;
}

/** What the monitor is told about a process's stdio. */
export interface MonitorStdio {
  readonly args: string[];
  /** Set for a terminal: where the runtime sends the pty master. */
  readonly consoleSocket?: string;
}

/** Turns a Task API `Io` into monitor flags (FIFOs, files, or streamed over a socket). */
export interface StdioSource {
  monitorArgs(token: string, io: Io): Promise<MonitorStdio>;
}

/** One process to launch under a monitor. */
export interface MonitoredProcess {
  /** Exit-record token (unique per process, derived from ids). */
  readonly token: string;
  /** The Task API's stdio; unset: /dev/null. */
  readonly io?: Io;
  /** Where the runtime writes the process pid; unset: the command is the process. */
  readonly pidFile?: string;
  /** The monitor's own log. */
  readonly monitorLog: string;
  /** The runtime command; given the console socket when the process has a terminal. */
  readonly argv: (consoleSocket?: string) => string[];
  /**
   * A command whose output carries the exit (`{"exitStatus":N}`), for
   * processes that are not host processes (gVisor's).
   */
  readonly waitArgv?: readonly string[];
  /** cgroup.procs files the process starts in (the monitor joins them before it forks). */
  readonly cgroupProcs?: readonly string[];
  /**
   * Mounts made, in order, in a mount namespace of the runtime's own (a slave
   * copy of the node's) before it runs: a container's rootfs, which then
   * exists in the container's namespace only.
   */
  readonly rootfsMounts?: readonly RootfsMount[];
  /** The runtime's JSON log: a failure before the runtime runs is written there. */
  readonly logFile?: string;
}

/** A mount onto a container's rootfs directory, with mount(8)'s option names. */
export interface RootfsMount {
  readonly target: string;
  readonly source: string;
  readonly type: string;
  readonly options: readonly string[];
}

/** The namespaces of a pod's holder process. */
export interface HoldOptions {
  /** Join this network namespace; otherwise a new one, or the host's with `hostNetwork`. */
  readonly netnsPath?: string;
  readonly hostNetwork?: boolean;
  readonly hostUts?: boolean;
  readonly hostIpc?: boolean;
  readonly hostname?: string;
  /** Namespaced sysctls set inside, as [key, value]. */
  readonly sysctls?: readonly (readonly [string, string])[];
  /**
   * Size of the pod's /dev/shm, a tmpfs in no mount table that the pod's init holds (see
   * `detachedShmSource`); none when unset.
   */
  readonly shmSize?: string;
}

/** An exit as recorded. */
export interface ExitRecord {
  readonly pid: number;
  /** Exit code, or 128 + signal. */
  readonly status: number;
  readonly at: Instant;
}

/** What an exit watch calls back. */
export interface ExitHandlers {
  exited(record: ExitRecord): void | Promise<void>;
  /** The supervisor is gone and left no record: the exit status is unknown. */
  lost?(): void;
}

/** Exit records by token; they survive the daemon. */
export interface ExitRecords {
  /** Where the record of `token` is written. */
  path(token: string): string;
  /**
   * Follows `token`, whose writer is `helperPid`; delivers at once if the
   * record is there. `needle` identifies the writer by its command line
   * (default: the record's path).
   */
  expect(token: string, helperPid: number, handlers: ExitHandlers, needle?: string): void;
  /** Stops following `token` without callbacks. */
  cancel(token: string): void;
  /** The record, or undefined if there is none (yet). */
  read(token: string): Promise<ExitRecord | undefined>;
  /** Whether the writer of `token` still runs. */
  alive(token: string, helperPid: number): Promise<boolean>;
  /** Deletes the record and stops following it. */
  remove(token: string): Promise<void>;
}

/** Starts and follows a sandboxer's processes. */
export interface Supervisor {
  /** The helper executable (also the pause binary of gVisor's root containers). */
  readonly binary: string;
  readonly exits: ExitRecords;
  /** Runs `argv` to completion; a missing binary is UNAVAILABLE, a timeout DEADLINE_EXCEEDED. */
  run(argv: readonly string[], opts?: RunOptions): Promise<CommandResult>;
  /** Starts a process under a monitor; a runtime that fails is a ProcessStartError. */
  startMonitored(p: MonitoredProcess, stdio?: StdioSource): Promise<SupervisedProcess>;
  /** Starts a pod's namespace holder, whose exit is recorded under `token`. */
  hold(token: string, opts: HoldOptions): Promise<SupervisedProcess>;
  /** Starts `argv` in its own session, its output to `logFile`; it outlives the daemon. */
  detach(argv: readonly string[], logFile: string): Promise<SupervisedProcess>;
  /** Kills whatever still writes `token`'s record (the orphans of a crashed start); how many. */
  killOrphans(token: string): Promise<number>;
}

/** A process the supervisor started did not become ready (its runtime failed). */
export class ProcessStartError extends InternalError {
  /** Exit status of the runtime it ran, if it reported one. */
  readonly status: number | undefined;
  constructor(message: string, status?: number) {
    super(message);
    this.status = status;
    this.name = "ProcessStartError";
  }
}
