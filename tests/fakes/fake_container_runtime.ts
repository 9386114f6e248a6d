/**
 * A `ContainerRuntime` for unit tests: records every call, assigns pids,
 * fails or runs a hook on demand, and lets the test report process exits
 * through the listener the service registered. Processes "die" from the
 * signals in `exitOnSignals` (SIGKILL by default), exiting with 128 + signal.
 *
 * @module
 */
import type { SandboxRecord } from "../../src/domain/sandbox.ts";
import type { ContainerRecord, ExecRecord, ProcessExit } from "../../src/domain/task.ts";
import { now } from "../../src/domain/time.ts";
import type {
  Capabilities,
  Capability,
  ContainerRuntime,
  ProcessExitListener,
  ProcessInfo,
  StartedProcess,
  StoredAnyBytes,
} from "../../src/ports/container_runtime.ts";

/** What the fake keeps in process records. */
export interface FakeProcessState {
  token?: string;
}
type C = ContainerRecord<FakeProcessState>;
type E = ExecRecord<FakeProcessState>;

/** The runtime operations. */
export type RuntimeOp =
  | "create"
  | "start"
  | "startExec"
  | "kill"
  | "delete"
  | "deleteExec"
  | "pids"
  | "pause"
  | "resume"
  | "update"
  | "stats"
  | "resizePty"
  | "closeStdin"
  | "recover";

/** One recorded runtime call. */
export interface RuntimeCall {
  readonly op: RuntimeOp;
  readonly sandboxId: string;
  readonly containerId: string;
  readonly execId?: string;
  readonly signal?: number;
  readonly all?: boolean;
  readonly resources?: unknown;
  readonly size?: { readonly width: number; readonly height: number };
}

/** In-memory container runtime. */
export class FakeContainerRuntime implements ContainerRuntime<FakeProcessState> {
  /** Every capability; a test deletes one to see it refused. */
  readonly capabilities: { -readonly [K in Capability]?: Capabilities<FakeProcessState>[K] } = {
    exec: this,
    pause: this,
    update: this,
    stats: this,
  };
  readonly lacking: Partial<Record<Capability, string>> = {};
  readonly calls: RuntimeCall[] = [];
  /** Errors thrown by calls of an operation (persist until deleted). */
  readonly failures: Partial<Record<RuntimeOp, Error>> = {};
  /** Run inside an operation, after it was recorded and before it returns. */
  readonly hooks: Partial<Record<RuntimeOp, (call: RuntimeCall) => void | Promise<void>>> = {};
  /** Signals that make a process exit (with 128 + signal). */
  readonly exitOnSignals: Set<number> = new Set([9]);
  /** What `recover` answers per "cid" or "cid/execId": an exit, an error to throw, or running. */
  readonly recoverResults: Map<string, ProcessExit | Error> = new Map();
  /** Containers `started` reports as started although recorded created (a Start cut by a crash). */
  readonly startedAfterAll: Set<string> = new Set();
  /** Pid assigned by the next create or startExec. */
  nextPid = 100;
  listener?: ProcessExitListener;

  /** Records `call`, fails if told to, runs `effect` (the operation's work), then the hook. */
  async #call(call: RuntimeCall, effect?: () => void): Promise<void> {
    this.calls.push(call);
    await Promise.resolve();
    const e = this.failures[call.op];
    if (e) throw e;
    effect?.();
    await this.hooks[call.op]?.(call);
  }

  async create(sb: SandboxRecord, c: C): Promise<StartedProcess> {
    let pid = 0;
    await this.#call({ op: "create", sandboxId: sb.id, containerId: c.id }, () => {
      pid = this.nextPid++;
      c.backend.token = `tok-${c.id}`;
    });
    return { pid };
  }

  async start(sb: SandboxRecord, c: ContainerRecord): Promise<void> {
    await this.#call({ op: "start", sandboxId: sb.id, containerId: c.id });
  }

  async startExec(sb: SandboxRecord, c: C, e: E): Promise<StartedProcess> {
    let pid = 0;
    await this.#call(
      { op: "startExec", sandboxId: sb.id, containerId: c.id, execId: e.id },
      () => (pid = this.nextPid++),
    );
    return { pid };
  }

  async kill(
    sb: SandboxRecord,
    c: ContainerRecord,
    e: ExecRecord | undefined,
    signal: number,
    all: boolean,
  ): Promise<void> {
    await this.#call({
      op: "kill",
      sandboxId: sb.id,
      containerId: c.id,
      execId: e?.id,
      signal,
      all,
    });
    if (!this.exitOnSignals.has(signal)) return;
    if (e) {
      this.exit(sb.id, c.id, e.id, 128 + signal);
      return;
    }
    if (all) {
      for (const x of Object.values(c.execs)) {
        if (x.state === "running") this.exit(sb.id, c.id, x.id, 128 + signal);
      }
    }
    this.exit(sb.id, c.id, undefined, 128 + signal);
  }

  async delete(sb: SandboxRecord, c: ContainerRecord): Promise<void> {
    await this.#call({ op: "delete", sandboxId: sb.id, containerId: c.id });
  }

  async deleteExec(sb: SandboxRecord, c: ContainerRecord, e: ExecRecord): Promise<void> {
    await this.#call({ op: "deleteExec", sandboxId: sb.id, containerId: c.id, execId: e.id });
  }

  async pids(sb: SandboxRecord, c: ContainerRecord): Promise<ProcessInfo[]> {
    await this.#call({ op: "pids", sandboxId: sb.id, containerId: c.id });
    return [
      { pid: c.pid },
      ...Object.values(c.execs).filter((e) => e.pid).map((e) => ({ pid: e.pid, execId: e.id })),
    ];
  }

  async pause(sb: SandboxRecord, c: ContainerRecord): Promise<void> {
    await this.#call({ op: "pause", sandboxId: sb.id, containerId: c.id });
  }

  async resume(sb: SandboxRecord, c: ContainerRecord): Promise<void> {
    await this.#call({ op: "resume", sandboxId: sb.id, containerId: c.id });
  }

  async update(sb: SandboxRecord, c: ContainerRecord, resources: unknown): Promise<void> {
    await this.#call({ op: "update", sandboxId: sb.id, containerId: c.id, resources });
  }

  async stats(sb: SandboxRecord, c: ContainerRecord): Promise<StoredAnyBytes> {
    await this.#call({ op: "stats", sandboxId: sb.id, containerId: c.id });
    return { typeUrl: "fake.Stats", value: new TextEncoder().encode(c.id) };
  }

  async resizePty(
    sb: SandboxRecord,
    c: ContainerRecord,
    e: ExecRecord | undefined,
    width: number,
    height: number,
  ): Promise<void> {
    await this.#call({
      op: "resizePty",
      sandboxId: sb.id,
      containerId: c.id,
      execId: e?.id,
      size: { width, height },
    });
  }

  async closeStdin(sb: SandboxRecord, c: ContainerRecord, e: ExecRecord | undefined) {
    await this.#call({ op: "closeStdin", sandboxId: sb.id, containerId: c.id, execId: e?.id });
  }

  started(_sb: SandboxRecord, c: ContainerRecord): Promise<boolean> {
    return Promise.resolve(this.startedAfterAll.has(c.id));
  }

  async recover(
    sb: SandboxRecord,
    c: ContainerRecord,
    e: ExecRecord | undefined,
  ): Promise<ProcessExit | undefined> {
    await this.#call({ op: "recover", sandboxId: sb.id, containerId: c.id, execId: e?.id });
    const r = this.recoverResults.get(e ? `${c.id}/${e.id}` : c.id);
    if (r instanceof Error) throw r;
    return r;
  }

  setExitListener(listener: ProcessExitListener): void {
    this.listener = listener;
  }

  /** Reports that a process exited with `status`. */
  exit(sandboxId: string, containerId: string, execId: string | undefined, status: number) {
    if (!this.listener) throw new Error("no exit listener registered");
    const exit: ProcessExit = { status, at: now() };
    this.listener.processExited(sandboxId, containerId, execId, exit);
    return exit;
  }

  /** The calls of one operation. */
  callsOf(op: RuntimeOp): RuntimeCall[] {
    return this.calls.filter((c) => c.op === op);
  }
}
