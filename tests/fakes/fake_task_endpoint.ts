/**
 * A `TaskEndpoint` for unit tests: remembers which sandboxes it serves.
 *
 * @module
 */
import type { TaskEndpoint } from "../../src/ports/task_endpoint.ts";

/** One recorded endpoint call. */
export interface EndpointCall {
  readonly op: "open" | "close" | "closeAll";
  readonly sandboxId?: string;
}

/** In-memory task endpoint. */
export class FakeTaskEndpoint implements TaskEndpoint {
  readonly serving: Set<string> = new Set();
  readonly calls: EndpointCall[] = [];
  /** Set to make `open` fail with this error. */
  failOpen?: Error;

  /** The address `open` returns for a sandbox. */
  static addressOf(sandboxId: string): string {
    return `ttrpc+unix:///fake/${sandboxId}/task.sock`;
  }

  async open(sandboxId: string): Promise<string> {
    await Promise.resolve();
    this.calls.push({ op: "open", sandboxId });
    if (this.failOpen) throw this.failOpen;
    this.serving.add(sandboxId);
    return FakeTaskEndpoint.addressOf(sandboxId);
  }

  async close(sandboxId: string): Promise<void> {
    await Promise.resolve();
    this.calls.push({ op: "close", sandboxId });
    this.serving.delete(sandboxId);
  }

  async closeAll(): Promise<void> {
    await Promise.resolve();
    this.calls.push({ op: "closeAll" });
    this.serving.clear();
  }
}
