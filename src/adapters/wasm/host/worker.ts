/**
 * A Wasm host worker, one of three kinds by the messages it gets:
 * - embedded engine, shared (`shared-run`, `shared-kill`): many modules given yield points,
 *   each suspended while it waits (shared_runs.ts), so a module costs its instance and a
 *   suspended stack rather than an isolate.
 * - embedded engine, alone (`run`): one module at a time on its own thread (its own V8
 *   isolate), for modules that cannot be given yield points; one that spins forever blocks
 *   only itself and is stopped by terminating the worker. A worker whose module ended normally
 *   is reused for the next task.
 * - Wasmtime carrier (`wasmtime-run`, `wasmtime-kill`): many Wasmtime runs at once, each on a
 *   thread of this worker's pool for blocking calls (Deno gives each worker its own, of 32
 *   threads), so a running module costs a thread and Wasmtime's memory rather than an isolate.
 *   Runs are interrupted here, on the thread that also deletes their engines.
 *
 * @module
 */
import { Wasmtime } from "../engines/wasmtime_ffi.ts";
import { ProcExit, Wasi } from "../wasi/preview1.ts";
import { SharedRuns } from "./shared_runs.ts";
import { StdinReader } from "./stdin_channel.ts";
import {
  type HostMessage,
  OUTPUT_LIMIT,
  type RunMessage,
  TRAP_STATUS,
  type WasmtimeExitMessage,
  type WorkerMessage,
} from "./worker_messages.ts";

interface WorkerScope {
  onmessage: ((ev: MessageEvent<HostMessage>) => void) | null;
  postMessage(msg: WorkerMessage | WasmtimeExitMessage, transfer?: Transferable[]): void;
}

/** Runs a module to its end; returns how it ended. */
export function runModule(
  m: RunMessage,
  post: (msg: WorkerMessage) => void,
): { status: number; message?: string } {
  const stdin = new StdinReader(m.stdin);
  const unwritten = new Int32Array(m.output);
  const wasi = new Wasi({
    args: m.args,
    env: m.env,
    preopens: m.preopens,
    stdio: {
      readStdin: (max) => stdin.read(max),
      write: (fd, data) => {
        // Counted before it is posted: posting hands the buffer over (its length becomes 0).
        const n = data.length;
        let v = Atomics.add(unwritten, 0, n) + n;
        post({ t: "out", fd, data });
        for (; v > OUTPUT_LIMIT;) {
          Atomics.wait(unwritten, 0, v);
          v = Atomics.load(unwritten, 0);
        }
      },
    },
  });
  try {
    const instance = new WebAssembly.Instance(m.module, {
      wasi_snapshot_preview1: wasi.imports() as unknown as WebAssembly.ModuleImports,
    });
    const memory = instance.exports.memory;
    if (memory instanceof WebAssembly.Memory) wasi.bind(memory);
    const entry = instance.exports[m.func];
    if (typeof entry !== "function") {
      return { status: 127, message: `the module exports no function "${m.func}"` };
    }
    (entry as () => unknown)();
    return { status: 0 };
  } catch (e) {
    if (e instanceof ProcExit) return { status: e.code };
    const what = e instanceof WebAssembly.RuntimeError
      ? "wasm trap"
      : e instanceof RangeError
      ? "out of memory or stack"
      : "error";
    return { status: TRAP_STATUS, message: `${what}: ${(e as Error).message ?? String(e)}` };
  } finally {
    wasi.close();
  }
}

// Only when loaded as a worker (the module is also imported by tests).
const scope = globalThis as unknown as WorkerScope & { WorkerGlobalScope?: unknown };
if (typeof scope.WorkerGlobalScope === "function") {
  // Carrier state: the library, and the engine of each run in flight; or the shared runs.
  let wasmtime: Wasmtime | undefined;
  let shared: SharedRuns | undefined;
  const engines = new Map<number, bigint>();
  const killed = new Set<number>();
  // Output buffers are handed over, not copied once more.
  const post = (msg: WorkerMessage) =>
    scope.postMessage(msg, msg.t === "out" ? [msg.data.buffer as ArrayBuffer] : []);
  scope.onmessage = (ev) => {
    const m = ev.data;
    if (m.t === "run") {
      scope.postMessage({ t: "exit", ...runModule(m, post) });
    } else if (m.t === "shared-run") {
      (shared ??= new SharedRuns()).run(m, post).then(post);
    } else if (m.t === "shared-kill") {
      shared?.kill(m.id);
    } else if (m.t === "wasmtime-kill") {
      killed.add(m.id);
      const e = engines.get(m.id);
      if (e !== undefined) wasmtime?.interrupt(e);
    } else {
      const { id } = m;
      const end = (status: number, message?: string) => {
        engines.delete(id);
        killed.delete(id);
        scope.postMessage({ t: "wasmtime-exit", id, status, message });
      };
      try {
        wasmtime ??= Wasmtime.open(m.lib);
      } catch (e) {
        return end(127, (e as Error).message);
      }
      const wt = wasmtime;
      wt.run(m.run, (e) => {
        engines.set(id, e);
        if (killed.has(id)) wt.interrupt(e);
      }).then((r) => end(r.status, r.message), (e) => end(127, (e as Error).message));
    }
  };
}
