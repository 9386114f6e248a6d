/**
 * Port: task events for containerd (`/tasks/*` topics).
 *
 * @module
 */
import type { Io, Mount } from "../domain/task.ts";
import type { Instant } from "../domain/time.ts";

/** The task events containerd's shims publish, by topic. */
export type TaskEvent =
  | {
    topic: "/tasks/create";
    containerId: string;
    bundle: string;
    rootfs: readonly Mount[];
    io: Io;
    pid: number;
  }
  | { topic: "/tasks/start"; containerId: string; pid: number }
  | {
    topic: "/tasks/exit";
    containerId: string;
    id: string;
    pid: number;
    exitStatus: number;
    exitedAt: Instant;
  }
  | {
    topic: "/tasks/delete";
    containerId: string;
    id: string;
    pid: number;
    exitStatus: number;
    exitedAt: Instant;
  }
  | { topic: "/tasks/exec-added"; containerId: string; execId: string }
  | { topic: "/tasks/exec-started"; containerId: string; execId: string; pid: number }
  | { topic: "/tasks/oom"; containerId: string }
  | { topic: "/tasks/paused"; containerId: string }
  | { topic: "/tasks/resumed"; containerId: string };

/** Delivers events in order, without blocking the caller; failures are logged, not thrown. */
export interface EventPublisher {
  publish(namespace: string, event: TaskEvent): void;
  /** Resolves when every event published so far was delivered or dropped. */
  flush(): Promise<void>;
  close(): Promise<void>;
}
