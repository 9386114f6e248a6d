/**
 * A Wasm host worker: runs one module at a time on its own thread (its own
 * V8 isolate), so a module that spins forever blocks only itself and is
 * stopped by terminating the worker. A worker whose module ended normally
 * is reused for the next task; that keeps the cost of a task to
 * instantiating an already compiled module.
 *
 * @module
 */
import { Wasmtime, type WasmtimeRun } from "../engines/wasmtime_ffi.ts";
import { ProcExit, Wasi } from "../wasi/preview1.ts";
import { StdinReader } from "./stdin_channel.ts";

/** Host -> worker: run a module. */
export interface RunMessage {
  readonly t: "run";
  readonly module: WebAssembly.Module;
  readonly func: string;
  readonly args: string[];
  readonly env: string[];
  readonly preopens: { guest: string; host: string }[];
  readonly stdin: SharedArrayBuffer | null;
  /** One Int32: output bytes posted and not yet written by the host (see `OUTPUT_LIMIT`). */
  readonly output: SharedArrayBuffer;
}

/**
 * Output a module may have posted to the host and not yet written before its
 * `fd_write` blocks: a module printing without end must not fill the host's
 * memory when its reader is slow.
 */
export const OUTPUT_LIMIT = 1 << 20;

/** Host -> worker: run a module with Wasmtime's C API (`lib`), stdio by path. */
export interface WasmtimeMessage {
  readonly t: "wasmtime";
  readonly lib: string;
  readonly run: WasmtimeRun;
}

/** Worker -> host. */
export type WorkerMessage =
  | { readonly t: "out"; readonly fd: 1 | 2; readonly data: Uint8Array }
  /** Wasmtime's engine pointer, for the host to interrupt the run. */
  | { readonly t: "engine"; readonly engine: bigint }
  | { readonly t: "exit"; readonly status: number; readonly message?: string };

/** Exit status of a trapped module (as Wasmtime's CLI reports it: 128 + SIGABRT). */
export const TRAP_STATUS = 134;

interface WorkerScope {
  onmessage: ((ev: MessageEvent<RunMessage | WasmtimeMessage>) => void) | null;
  postMessage(msg: WorkerMessage, transfer?: Transferable[]): void;
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
        post({ t: "out", fd, data: data.slice() });
        for (let v = Atomics.add(unwritten, 0, data.length) + data.length; v > OUTPUT_LIMIT;) {
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
  // Kept open for the worker's life: the last run's engine must stay valid for a late interrupt.
  let wasmtime: Wasmtime | undefined;
  scope.onmessage = (ev) => {
    const m = ev.data;
    if (m.t === "run") {
      // Output buffers are handed over, not copied once more.
      const post = (msg: WorkerMessage) =>
        scope.postMessage(msg, msg.t === "out" ? [msg.data.buffer as ArrayBuffer] : []);
      scope.postMessage({ t: "exit", ...runModule(m, post) });
      return;
    }
    try {
      wasmtime ??= Wasmtime.open(m.lib);
      const r = wasmtime.run(m.run, (engine) => scope.postMessage({ t: "engine", engine }));
      scope.postMessage({ t: "exit", status: r.status, message: r.message });
    } catch (e) {
      scope.postMessage({ t: "exit", status: 127, message: (e as Error).message });
    }
  };
}
