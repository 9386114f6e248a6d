/**
 * The embedded engine: V8's WebAssembly with our WASI preview1, each running
 * module on a worker thread of the host process. Modules are compiled once
 * per file (and memory limit) and instantiated per task; workers whose
 * module ended normally go back to a pool, so a task costs an instantiation
 * and a message, not a thread.
 *
 * @module
 */
import { FailedPreconditionError, InvalidArgumentError } from "../../../domain/errors.ts";
import { capMemory, isWasm, MemoryLimitError } from "../wasi/module.ts";
import { Wasi } from "../wasi/preview1.ts";
import type { HostEngine, PreparedTask, RunningTask, TaskEnd } from "./engine.ts";
import type { TaskSpec } from "./protocol.ts";
import { StdinWriter } from "./stdin_channel.ts";
import type { TaskIo } from "./task_io.ts";
import { WorkerPool, type WorkerPoolOptions } from "./worker_pool.ts";
import { TRAP_STATUS, type WorkerMessage } from "./worker.ts";

/** Names the WASI implementation provides. */
const WASI_FUNCS = new Set(
  Object.keys(
    new Wasi({
      args: [],
      env: [],
      preopens: [],
      stdio: { readStdin: () => new Uint8Array(), write() {} },
    })
      .imports(),
  ),
);

/** Checks what a module imports and exports before any task runs it. */
export function checkModule(module: WebAssembly.Module, func: string): void {
  for (const i of WebAssembly.Module.imports(module)) {
    if (i.module !== "wasi_snapshot_preview1" || i.kind !== "function" || !WASI_FUNCS.has(i.name)) {
      throw new FailedPreconditionError(
        `The module imports "${i.module}.${i.name}" (${i.kind}), which the embedded engine does ` +
          `not provide: it offers WASI preview1 functions only`,
      );
    }
  }
  const entry = WebAssembly.Module.exports(module).find((e) => e.name === func);
  if (!entry || entry.kind !== "function") {
    throw new FailedPreconditionError(`The module exports no function "${func}"`);
  }
}

/** Compiled modules by file identity and memory limit. */
class ModuleCache {
  #map = new Map<string, WebAssembly.Module>();
  readonly #max: number;

  constructor(max: number) {
    this.#max = max;
  }

  async get(path: string, limit: number | undefined): Promise<WebAssembly.Module> {
    const st = await Deno.stat(path).catch(() => {
      throw new FailedPreconditionError(`The Wasm module "${path}" does not exist`);
    });
    if (!st.isFile) throw new FailedPreconditionError(`The Wasm module "${path}" is not a file`);
    const key = `${path}\0${st.ino}\0${st.size}\0${st.mtime?.getTime()}\0${limit ?? ""}`;
    const hit = this.#map.get(key);
    if (hit) {
      this.#map.delete(key); // most recently used goes last
      this.#map.set(key, hit);
      return hit;
    }
    let bytes: Uint8Array<ArrayBuffer> = await Deno.readFile(path);
    if (!isWasm(bytes)) {
      throw new FailedPreconditionError(`"${path}" is not a WebAssembly module (no \\0asm magic)`);
    }
    if (limit) {
      try {
        bytes = capMemory(bytes, limit);
      } catch (e) {
        if (e instanceof MemoryLimitError) {
          throw new FailedPreconditionError(
            `Cannot run "${path}" under its memory limit: ${e.message}`,
          );
        }
        throw new InvalidArgumentError(`Malformed Wasm module "${path}": ${(e as Error).message}`);
      }
    }
    let module: WebAssembly.Module;
    try {
      module = await WebAssembly.compile(bytes);
    } catch (e) {
      throw new InvalidArgumentError(`Invalid Wasm module "${path}": ${(e as Error).message}`);
    }
    this.#map.set(key, module);
    while (this.#map.size > this.#max) this.#map.delete(this.#map.keys().next().value!);
    return module;
  }
}

/** The embedded V8 engine. */
export class EmbeddedEngine implements HostEngine {
  readonly name = "embedded";
  #pool: WorkerPool;
  #modules = new ModuleCache(64);

  constructor(opts: WorkerPoolOptions) {
    this.#pool = new WorkerPool(opts);
  }

  async prepare(spec: TaskSpec): Promise<PreparedTask> {
    const module = await this.#modules.get(spec.module, spec.memoryLimit);
    checkModule(module, spec.func);
    return { spec, module };
  }

  start(prepared: PreparedTask, io: TaskIo): RunningTask {
    const { spec } = prepared;
    const pw = this.#pool.acquire();
    const stdin = spec.stdin ? new StdinWriter() : undefined;
    let settle!: (end: TaskEnd) => void;
    const done = new Promise<TaskEnd>((r) => (settle = r));
    let ended = false;
    const finish = (end: TaskEnd, reuse: boolean) => {
      if (ended) return;
      ended = true;
      this.#pool.release(pw, reuse);
      settle(end);
    };
    const output = new SharedArrayBuffer(4);
    const unwritten = new Int32Array(output);
    pw.worker.onmessage = (ev: MessageEvent<WorkerMessage>) => {
      const m = ev.data;
      if (m.t === "out") {
        // The worker waits while too much is unwritten (OUTPUT_LIMIT).
        io.write(m.fd, m.data).finally(() => {
          Atomics.sub(unwritten, 0, m.data.length);
          Atomics.notify(unwritten, 0);
        });
      } else if (m.t === "exit") finish({ status: m.status, message: m.message }, true);
    };
    pw.worker.onerror = (ev) => {
      ev.preventDefault();
      finish({ status: TRAP_STATUS, message: `engine error: ${ev.message}` }, false);
    };
    io.open(spec, stdin ? (d) => stdin.push(d) : undefined).then(() => {
      if (ended) return;
      pw.worker.postMessage({
        t: "run",
        module: prepared.module,
        func: spec.func,
        args: spec.args,
        env: spec.env,
        preopens: spec.preopens,
        stdin: stdin?.buffer ?? null,
        output,
      });
    }, (e) => finish({ status: 127, message: `cannot open stdio: ${(e as Error).message}` }, true));
    return {
      done,
      // A module cannot catch signals: every one it gets is fatal, as for a process without handlers.
      kill: (signal) => finish({ status: 128 + signal }, false),
    };
  }

  close(): void {
    this.#pool.close();
  }
}
