/**
 * A `SandboxBackend` for unit tests: records every call, can be told to fail
 * `create`/`start`, and lets the test report a sandbox exit through the
 * listener the service registered.
 *
 * @module
 */
import type { SandboxExit, SandboxRecord } from "../../src/domain/sandbox.ts";
import { now } from "../../src/domain/time.ts";
import type { StartedProcess, StoredAnyBytes } from "../../src/ports/container_runtime.ts";
import type {
  RecoveredSandbox,
  SandboxBackend,
  SandboxExitListener,
} from "../../src/ports/sandbox_backend.ts";

/** The backend operations. */
export type BackendOp = "create" | "start" | "stop" | "cleanup" | "recover" | "metrics";

/** One recorded backend call. */
export interface BackendCall {
  readonly op: BackendOp;
  readonly sandboxId: string;
  readonly timeoutMs?: number;
}

/** In-memory sandbox backend. */
/** What the fake keeps in sandbox records. */
export interface FakePodState {
  cgroup?: string;
  holderPid?: number;
}

export class FakeSandboxBackend implements SandboxBackend<FakePodState> {
  readonly platform = { os: "linux", architecture: "amd64", variant: "" };
  readonly calls: BackendCall[] = [];
  /** Errors thrown by calls of an operation (persist until deleted). */
  readonly failures: Partial<Record<BackendOp, Error>> = {};
  /** Run at the end of an operation, before it returns (e.g. to report an exit meanwhile). */
  readonly hooks: Partial<Record<BackendOp, (record: SandboxRecord) => void>> = {};
  /** What `recover` answers per sandbox id (default: alive). */
  readonly recoverResults: Map<string, RecoveredSandbox> = new Map();
  /** Exit status `stop` reports. */
  stopStatus = 137;
  /** Pid the next `start` assigns. */
  nextPid = 4000;
  /** What `metrics` returns. */
  metricsData?: StoredAnyBytes = { typeUrl: "fake.Metrics", value: new Uint8Array([1, 2, 3]) };
  listener?: SandboxExitListener;

  #record(op: BackendOp, sandboxId: string, timeoutMs?: number): void {
    this.calls.push(timeoutMs === undefined ? { op, sandboxId } : { op, sandboxId, timeoutMs });
    const e = this.failures[op];
    if (e) throw e;
  }

  async create(record: SandboxRecord<FakePodState>): Promise<void> {
    await Promise.resolve();
    this.#record("create", record.id);
    record.backend.cgroup = `/fake/${record.id}`;
    this.hooks.create?.(record);
  }

  async start(record: SandboxRecord<FakePodState>): Promise<StartedProcess> {
    await Promise.resolve();
    this.#record("start", record.id);
    const pid = this.nextPid++;
    record.backend.holderPid = pid;
    this.hooks.start?.(record);
    return { pid };
  }

  async stop(record: SandboxRecord, timeoutMs: number): Promise<SandboxExit> {
    await Promise.resolve();
    this.#record("stop", record.id, timeoutMs);
    return { status: this.stopStatus, at: now() };
  }

  async cleanup(record: SandboxRecord): Promise<void> {
    await Promise.resolve();
    this.#record("cleanup", record.id);
  }

  async recover(record: SandboxRecord): Promise<RecoveredSandbox> {
    await Promise.resolve();
    this.#record("recover", record.id);
    return this.recoverResults.get(record.id) ?? { alive: true };
  }

  async metrics(record: SandboxRecord): Promise<StoredAnyBytes | undefined> {
    await Promise.resolve();
    this.#record("metrics", record.id);
    return this.metricsData;
  }

  setExitListener(listener: SandboxExitListener): void {
    this.listener = listener;
  }

  /** Reports that the boundary of `sandboxId` went away by itself. */
  exit(sandboxId: string, status: number): SandboxExit {
    if (!this.listener) throw new Error("no exit listener registered");
    const exit = { status, at: now() };
    this.listener.sandboxExited(sandboxId, exit);
    return exit;
  }

  /** The operations called so far for `sandboxId` (all sandboxes without it). */
  ops(sandboxId?: string): BackendOp[] {
    return this.calls.filter((c) => !sandboxId || c.sandboxId === sandboxId).map((c) => c.op);
  }
}
