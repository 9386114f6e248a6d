/**
 * Port: what differs between sandbox kinds at the pod level (namespace
 * holder, VM, Wasm host…). The generic controller logic in
 * `src/app/sandbox_service.ts` drives it.
 *
 * @module
 */
import type { SandboxExit, SandboxRecord } from "../domain/sandbox.ts";
import type { TasksDiff } from "../domain/tasks_extension.ts";
import type { StoredAnyBytes } from "./container_runtime.ts";

/** Called by a backend when a pod's isolation boundary goes away by itself. */
export interface SandboxExitListener {
  sandboxExited(id: string, exit: SandboxExit): void;
}

/** Outcome of reattaching to a sandbox after a restart. */
export type RecoveredSandbox = { alive: true } | { alive: false; exit: SandboxExit };

/** The pod-level half of a sandbox kind. */
export interface SandboxBackend {
  /** Platform reported by Controller.Platform. */
  readonly platform: { os: string; architecture: string; variant: string };
  /** Prepares what a created pod needs (files, cgroups). May fill `record.backend`. */
  create(record: SandboxRecord): Promise<void>;
  /** Brings the boundary up; must set `record.pid` and may fill `record.backend`. */
  start(record: SandboxRecord): Promise<void>;
  /**
   * Takes the boundary down: asks gracefully, and forces once `timeoutMs`
   * passed. Resolves with how it ended.
   */
  stop(record: SandboxRecord, timeoutMs: number): Promise<SandboxExit>;
  /** Releases everything the sandbox holds outside its directory. Idempotent. */
  cleanup(record: SandboxRecord): Promise<void>;
  /** Reattaches to a sandbox found on disk after a restart. */
  recover(record: SandboxRecord): Promise<RecoveredSandbox>;
  /** Pod-level cgroup metrics as a protobuf Any, or undefined. */
  metrics(record: SandboxRecord): Promise<StoredAnyBytes | undefined>;
  setExitListener(listener: SandboxExitListener): void;
  /**
   * For sandboxes that serve the Task API themselves (Quark): the address
   * Start returns instead of the daemon's own task endpoint.
   */
  ownTaskAddress?(record: SandboxRecord): string | undefined;
  /** Containers and execs announced or withdrawn through `extensions.tasks` (Controller.Update). */
  tasksChanged?(record: SandboxRecord, diff: TasksDiff): Promise<void>;
}
