/**
 * The embedded engine: V8's WebAssembly with our WASI preview1. Modules are compiled once per
 * file (and memory limit), given yield points (wasi/yield_points.ts), and instantiated per task
 * on a shared carrier (shared_carriers.ts), many to a worker thread: a task costs an instance
 * and a suspended stack, not an isolate (~7 MiB). A module that cannot be given yield points
 * (exception handling, GC types) runs on a worker of its own from a pool, as every module once
 * did: workers whose module ended normally go back to the pool.
 *
 * @module
 */
import { FailedPreconditionError, InvalidArgumentError } from "../../../domain/errors.ts";
import { capMemory, isWasm, MemoryLimitError } from "../wasi/module.ts";
import { Wasi } from "../wasi/preview1.ts";
import { addYieldPoints } from "../wasi/yield_points.ts";
import type { HostEngine, PreparedTask, RunningTask, TaskEnd } from "./engine.ts";
import type { TaskSpec } from "./protocol.ts";
import { SharedCarriers, type SharedRun } from "./shared_carriers.ts";
import { StdinWriter } from "./stdin_channel.ts";
import type { TaskIo } from "./task_io.ts";
import { WorkerPool, type WorkerPoolOptions } from "./worker_pool.ts";
import { type RunMessage, TRAP_STATUS, type WorkerMessage } from "./worker_messages.ts";

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

/** A compiled module, and whether it has yield points (it can share a thread). */
interface Compiled {
  readonly module: WebAssembly.Module;
  readonly shared: boolean;
}

/** Compiled modules by file identity and memory limit. */
class ModuleCache {
  #map = new Map<string, Compiled>();
  readonly #max: number;

  constructor(max: number) {
    this.#max = max;
  }

  async get(path: string, limit: number | undefined): Promise<Compiled> {
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
    // The rewritten module is compiled, once the module as it was is valid (the rewrite could
    // mend some invalid ones: a misplaced start section, bytes after the last function); the
    // module as it was is compiled when the rewrite cannot take it (it keeps a worker of its
    // own) or fails, so that a bad module is reported as itself.
    const yielding = WebAssembly.validate(bytes) ? addYieldPoints(bytes) : undefined;
    let compiled = yielding
      ? await WebAssembly.compile(yielding).then((module) => ({ module, shared: true }), () => {})
      : undefined;
    try {
      compiled ??= { module: await WebAssembly.compile(bytes), shared: false };
    } catch (e) {
      throw new InvalidArgumentError(`Invalid Wasm module "${path}": ${(e as Error).message}`);
    }
    this.#map.set(key, compiled);
    while (this.#map.size > this.#max) this.#map.delete(this.#map.keys().next().value!);
    return compiled;
  }
}

/** What a worker needs to run a prepared task. */
function runFields(
  prepared: PreparedTask,
  stdin: StdinWriter | undefined,
  output: SharedArrayBuffer,
): Omit<RunMessage, "t"> {
  const { spec } = prepared;
  return {
    module: (prepared.module as Compiled).module,
    func: spec.func,
    args: spec.args,
    env: spec.env,
    preopens: spec.preopens,
    stdin: stdin?.buffer ?? null,
    output,
  };
}

/** Where a task runs: `run` starts it, `stop` lets it go (`normal`: its module ended). */
interface Place {
  run(fields: Omit<RunMessage, "t">): void;
  stop(normal: boolean): void;
}

/** The embedded V8 engine. */
export class EmbeddedEngine implements HostEngine {
  readonly name = "embedded";
  #pool: WorkerPool;
  #carriers: SharedCarriers;
  #modules = new ModuleCache(64);

  /** `opts.warm` carriers are started at once; workers of their own start when needed. */
  constructor(opts: WorkerPoolOptions) {
    this.#pool = new WorkerPool({ ...opts, warm: 0 });
    this.#carriers = new SharedCarriers({
      warm: opts.warm,
      max: Math.max(1, navigator.hardwareConcurrency),
      idleMs: opts.idleMs,
    });
  }

  async prepare(spec: TaskSpec): Promise<PreparedTask> {
    const module = await this.#modules.get(spec.module, spec.memoryLimit);
    checkModule(module.module, spec.func);
    return { spec, module };
  }

  start(prepared: PreparedTask, io: TaskIo): RunningTask {
    const { spec } = prepared;
    const stdin = spec.stdin ? new StdinWriter() : undefined;
    let settle!: (end: TaskEnd) => void;
    const done = new Promise<TaskEnd>((r) => (settle = r));
    let ended = false;
    const finish = (end: TaskEnd, normal: boolean) => {
      if (ended) return;
      ended = true;
      place.stop(normal);
      settle(end);
    };
    const output = new SharedArrayBuffer(4);
    const unwritten = new Int32Array(output);
    const deliver = (m: WorkerMessage) => {
      if (m.t === "out") {
        // The worker waits while too much is unwritten (OUTPUT_LIMIT).
        io.write(m.fd, m.data).finally(() => {
          Atomics.sub(unwritten, 0, m.data.length);
          Atomics.notify(unwritten, 0);
        });
      } else finish({ status: m.status, message: m.message }, true);
    };
    const place = (prepared.module as Compiled).shared
      ? this.#onCarrier(deliver)
      : this.#alone(deliver, (message) => finish({ status: TRAP_STATUS, message }, false));
    io.open(spec, stdin ? (d) => stdin.push(d) : undefined).then(() => {
      if (!ended) place.run(runFields(prepared, stdin, output));
    }, (e) => finish({ status: 127, message: `cannot open stdio: ${(e as Error).message}` }, true));
    return {
      done,
      // A module cannot catch signals: every one it gets is fatal, as for a process without handlers.
      kill: (signal) => finish({ status: 128 + signal }, false),
    };
  }

  /** A task's place on a shared carrier; a task that did not end on its own is killed there. */
  #onCarrier(deliver: (m: WorkerMessage) => void): Place {
    let run: SharedRun | undefined;
    return {
      run: (fields) => (run = this.#carriers.start(fields, deliver)),
      stop: (normal) => normal || run?.kill(),
    };
  }

  /** A task's worker of its own, back to the pool if its module ended normally. */
  #alone(deliver: (m: WorkerMessage) => void, crashed: (message: string) => void): Place {
    const pw = this.#pool.acquire();
    pw.worker.onmessage = (ev: MessageEvent<WorkerMessage>) => deliver(ev.data);
    pw.worker.onerror = (ev) => {
      ev.preventDefault();
      crashed(`engine error: ${ev.message}`);
    };
    return {
      run: (fields) => pw.worker.postMessage({ t: "run", ...fields }),
      stop: (normal) => this.#pool.release(pw, normal),
    };
  }

  close(): void {
    this.#pool.close();
    this.#carriers.close();
  }
}
