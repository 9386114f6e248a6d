/**
 * The Wasmtime engine through its C API (libwasmtime, Deno FFI), each run on
 * a pooled worker thread as for the embedded engine. Wasmtime opens the
 * task's stdio itself, by path. Kill increments the run's engine epoch,
 * which traps the guest at its next loop or call; a guest blocked in a WASI
 * call cannot be interrupted until the call returns, so after a second the
 * task is reported killed and its worker abandoned.
 *
 * @module
 */
import { dirname } from "node:path";
import { FailedPreconditionError } from "../../../domain/errors.ts";
import { Wasmtime } from "../engines/wasmtime_ffi.ts";
import { isWasm } from "../wasi/module.ts";
import type { HostEngine, PreparedTask, RunningTask, TaskEnd } from "./engine.ts";
import type { TaskSpec } from "./protocol.ts";
import type { TaskIo } from "./task_io.ts";
import type { WorkerMessage } from "./worker.ts";
import { WorkerPool } from "./worker_pool.ts";
import { wasmIoDirBeside } from "../../os/state_layout.ts";

const KILL_GRACE_MS = 1000;

/** Wasmtime via libwasmtime. */
export class WasmtimeEngine implements HostEngine {
  readonly name = "wasmtime";
  #lib: string;
  #pool = new WorkerPool({ warm: 0, maxIdle: 16, idleMs: 60_000 });
  /** This thread's handle, only for interrupting runs on the workers. */
  #main: Wasmtime;

  constructor(lib: string) {
    this.#lib = lib;
    try {
      this.#main = Wasmtime.open(lib);
    } catch (e) {
      throw new FailedPreconditionError((e as Error).message);
    }
  }

  async prepare(spec: TaskSpec): Promise<PreparedTask> {
    let head: Uint8Array;
    try {
      using f = await Deno.open(spec.module, { read: true });
      head = new Uint8Array(8);
      await f.read(head);
    } catch {
      throw new FailedPreconditionError(`The Wasm module "${spec.module}" cannot be read`);
    }
    if (!isWasm(head)) {
      throw new FailedPreconditionError(`"${spec.module}" is not a WebAssembly module`);
    }
    return { spec };
  }

  start(prepared: PreparedTask, io: TaskIo): RunningTask {
    const { spec } = prepared;
    const pw = this.#pool.acquire();
    let engine: bigint | undefined;
    let killed = 0;
    let settle!: (end: TaskEnd) => void;
    const done = new Promise<TaskEnd>((r) => (settle = r));
    let ended = false;
    const finish = async (end: TaskEnd, reuse: boolean) => {
      if (ended) return;
      ended = true;
      this.#pool.release(pw, reuse);
      await io.finishPaths();
      settle(end);
    };
    pw.worker.onmessage = (ev: MessageEvent<WorkerMessage>) => {
      const m = ev.data;
      if (m.t === "engine") {
        engine = m.engine;
        if (killed) this.#main.interrupt(engine);
      } else if (m.t === "exit") {
        // An interrupted run reports the signal that stopped it, as a killed process would.
        finish(killed ? { status: 128 + killed } : { status: m.status, message: m.message }, true);
      }
    };
    pw.worker.onerror = (ev) => {
      ev.preventDefault();
      finish({ status: 134, message: `engine error: ${ev.message}` }, false);
    };
    const runDir = wasmIoDirBeside(dirname(spec.exitFile));
    io.openPaths(spec, runDir).then((paths) => {
      if (ended) return;
      pw.worker.postMessage({
        t: "wasmtime",
        lib: this.#lib,
        run: {
          module: spec.module,
          func: spec.func,
          args: spec.args,
          env: spec.env,
          preopens: spec.preopens,
          memoryLimit: spec.memoryLimit,
          ...paths,
        },
      });
    }, (e) => finish({ status: 127, message: `cannot open stdio: ${(e as Error).message}` }, true));
    return {
      done,
      kill: (signal) => {
        if (ended || killed) return;
        killed = signal;
        if (engine !== undefined) this.#main.interrupt(engine);
        setTimeout(() => finish({ status: 128 + signal }, false), KILL_GRACE_MS);
      },
    };
  }

  close(): void {
    this.#pool.close();
  }
}
