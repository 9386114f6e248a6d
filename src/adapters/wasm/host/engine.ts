/**
 * What the Wasm host asks of an engine: check and compile a task's module
 * ahead of Start (so Task.Create fails on a bad module, as runc create fails
 * on a bad binary), then run it with the task's stdio.
 *
 * @module
 */
import type { TaskSpec } from "./protocol.ts";
import type { TaskIo } from "./task_io.ts";

/** How a module run ended. */
export interface TaskEnd {
  /** proc_exit code; 0 when the entry function returned; 128 + signal when killed. */
  readonly status: number;
  /** Why it ended abnormally (trap, engine error), written to the task's stderr. */
  readonly message?: string;
}

/** A task whose module is ready to run. */
export interface PreparedTask {
  readonly spec: TaskSpec;
  /** Engine-specific compiled form. */
  readonly module?: unknown;
}

/** A running module. */
export interface RunningTask {
  readonly done: Promise<TaskEnd>;
  /** Stops it: `done` resolves with 128 + signal within a second. */
  kill(signal: number): void;
}

/** One engine. */
export interface HostEngine {
  readonly name: string;
  prepare(spec: TaskSpec): Promise<PreparedTask>;
  start(prepared: PreparedTask, io: TaskIo): RunningTask;
  close(): void;
}
