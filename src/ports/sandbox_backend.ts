/**
 * Port: what differs between sandbox kinds at the pod level (namespace
 * holder, VM, Wasm host…). The generic controller logic in
 * `src/app/sandbox_service.ts` drives it.
 *
 * @module
 */
import type { SandboxExit, SandboxRecord } from "../domain/sandbox.ts";
import type { TasksDiff } from "../domain/tasks_extension.ts";
import type { StartedProcess, StoredAnyBytes } from "./container_runtime.ts";

/** Called by a backend when a pod's isolation boundary goes away by itself. */
export interface SandboxExitListener {
  sandboxExited(id: string, exit: SandboxExit): void;
}

/** Outcome of reattaching to a sandbox after a restart. */
export type RecoveredSandbox = { alive: true } | { alive: false; exit: SandboxExit };

/**
 * The pod-level half of a sandbox kind. `S` is its own pod state
 * (`SandboxRecord.backend`), written as things are acquired so that a failed
 * call's cleanup finds them.
 */
export interface SandboxBackend<S extends object = object> {
  /** Platform reported by Controller.Platform. */
  readonly platform: { os: string; architecture: string; variant: string };
  /** Prepares what a created pod needs (files, cgroups). */
  create(record: SandboxRecord<S>): Promise<void>;
  /** Brings the boundary up; resolves with the process containers join (the pod's pid). */
  start(record: SandboxRecord<S>): Promise<StartedProcess>;
  /**
   * Takes the boundary down: asks gracefully, and forces once `timeoutMs`
   * passed. Resolves with how it ended.
   */
  stop(record: SandboxRecord<S>, timeoutMs: number): Promise<SandboxExit>;
  /** Releases everything the sandbox holds outside its directory. Idempotent. */
  cleanup(record: SandboxRecord<S>): Promise<void>;
  /** Reattaches to a sandbox found on disk after a restart. */
  recover(record: SandboxRecord<S>): Promise<RecoveredSandbox>;
  /** Pod-level cgroup metrics as a protobuf Any, or undefined. */
  metrics(record: SandboxRecord<S>): Promise<StoredAnyBytes | undefined>;
  setExitListener(listener: SandboxExitListener): void;
  /**
   * For sandboxes that serve the Task API themselves (Quark): the address
   * Start returns instead of the daemon's own task endpoint.
   */
  ownTaskAddress?(record: SandboxRecord<S>): string | undefined;
  /** Containers and execs announced or withdrawn through `extensions.tasks` (Controller.Update). */
  tasksChanged?(record: SandboxRecord<S>, diff: TasksDiff): Promise<void>;
}
