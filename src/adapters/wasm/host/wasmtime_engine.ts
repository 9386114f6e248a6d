/**
 * The Wasmtime engine through its C API (libwasmtime, Deno FFI). Runs go to carrier workers
 * (worker.ts): each carries up to `CARRIER_RUNS` guests at once, every one on a thread of its
 * pool for blocking calls, so a running module costs a thread and Wasmtime's memory, and an
 * isolate is shared by many (a worker per module would cost ~6 MiB each). Wasmtime opens the
 * task's stdio itself, by path. Kill has the carrier increment the run's engine epoch, which
 * traps the guest at its next loop or call; a guest blocked in a WASI call cannot be
 * interrupted until the call returns, so after a second its stdio is pointed at /dev/null, the
 * task is reported killed and its run is left to end on its own (keeping its carrier thread
 * until then).
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
import type { WasmtimeExitMessage } from "./worker_messages.ts";
import { workerUrl } from "./worker_pool.ts";
import { wasmIoDirBeside } from "../../os/state_layout.ts";
import { detachFiles } from "../../os/syscalls.ts";

const KILL_GRACE_MS = 1000;
/**
 * Runs one carrier takes at once: Deno gives a worker 32 threads for blocking calls, and the
 * carrier's own file operations need some of them.
 */
export const CARRIER_RUNS = 24;
/** A carrier with nothing to run is ended after this long. */
const CARRIER_IDLE_MS = 60_000;

interface Carrier {
  readonly worker: Worker;
  /** Runs in flight, by id: how each one ends. */
  readonly runs: Map<number, (m: WasmtimeExitMessage) => void>;
  idleTimer?: ReturnType<typeof setTimeout>;
}

/** Wasmtime via libwasmtime. */
export class WasmtimeEngine implements HostEngine {
  readonly name = "wasmtime";
  #lib: string;
  #carriers: Carrier[] = [];
  #nextId = 1;

  constructor(lib: string) {
    this.#lib = lib;
    // Loaded here once to say at start-up (not at the first task) when it cannot be.
    try {
      Wasmtime.open(lib).close();
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
    const id = this.#nextId++;
    let carrier: Carrier | undefined;
    let killed = 0;
    let settle!: (end: TaskEnd) => void;
    const done = new Promise<TaskEnd>((r) => (settle = r));
    let ended = false;
    const finish = async (end: TaskEnd) => {
      if (ended) return;
      ended = true;
      await io.finishPaths();
      settle(end);
    };
    const runDir = wasmIoDirBeside(dirname(spec.exitFile));
    let stdio: string[] = [];
    io.openPaths(spec, runDir).then((paths) => {
      if (ended) return;
      stdio = [paths.stdin, paths.stdout, paths.stderr].filter((p): p is string => !!p);
      carrier = this.#carrier();
      carrier.runs.set(id, (m) => {
        // An interrupted run reports the signal that stopped it, as a killed process would.
        finish(killed ? { status: 128 + killed } : { status: m.status, message: m.message });
      });
      carrier.worker.postMessage({
        t: "wasmtime-run",
        id,
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
      if (killed) carrier.worker.postMessage({ t: "wasmtime-kill", id });
    }, (e) => finish({ status: 127, message: `cannot open stdio: ${(e as Error).message}` }));
    return {
      done,
      kill: (signal) => {
        if (ended || killed) return;
        killed = signal;
        carrier?.worker.postMessage({ t: "wasmtime-kill", id });
        setTimeout(async () => {
          if (ended) return;
          // Still blocked in a WASI call: its stdio goes to /dev/null, so that the readers of
          // the task's FIFOs (containerd, which waits for their end before it deletes the task)
          // are not held by a guest that may sleep for days.
          await detachFiles(stdio).catch(() => 0);
          finish({ status: 128 + signal });
        }, KILL_GRACE_MS);
      },
    };
  }

  close(): void {
    for (const c of this.#carriers.splice(0)) {
      clearTimeout(c.idleTimer);
      c.worker.terminate();
    }
  }

  /** A carrier with room for one more run: the fullest that has some, else a new one. */
  #carrier(): Carrier {
    const open = this.#carriers.filter((c) => c.runs.size < CARRIER_RUNS);
    open.sort((a, b) => b.runs.size - a.runs.size);
    const c = open[0] ?? this.#spawn();
    clearTimeout(c.idleTimer);
    c.idleTimer = undefined;
    return c;
  }

  #spawn(): Carrier {
    const c: Carrier = { worker: new Worker(workerUrl(), { type: "module" }), runs: new Map() };
    c.worker.onmessage = (ev: MessageEvent<WasmtimeExitMessage>) => {
      const m = ev.data;
      const ended = c.runs.get(m.id);
      c.runs.delete(m.id);
      ended?.(m);
      if (c.runs.size === 0) {
        c.idleTimer = setTimeout(() => this.#retire(c), CARRIER_IDLE_MS);
        Deno.unrefTimer(c.idleTimer);
      }
    };
    c.worker.onerror = (ev) => {
      ev.preventDefault();
      // The carrier is gone, and so are its runs: each ends as a crashed engine would.
      this.#carriers = this.#carriers.filter((x) => x !== c);
      clearTimeout(c.idleTimer);
      c.worker.terminate();
      for (const [id, ended] of c.runs) {
        ended({ t: "wasmtime-exit", id, status: 134, message: `engine error: ${ev.message}` });
      }
      c.runs.clear();
    };
    this.#carriers.push(c);
    return c;
  }

  #retire(c: Carrier): void {
    if (c.runs.size > 0) return;
    this.#carriers = this.#carriers.filter((x) => x !== c);
    c.worker.terminate();
  }
}
