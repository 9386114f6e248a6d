/**
 * Many modules on one worker thread (the embedded engine's carriers), each run through JSPI:
 * its entry point is `WebAssembly.promising`, and the WASI calls that wait (stdin, output held
 * back, sleeps) are `WebAssembly.Suspending`, so a waiting module is a suspended stack of a few
 * KiB instead of an isolate of ~7 MiB. A module that computes is made to yield by the yield
 * points its binary was given (wasi/yield_points.ts): past `SLICE_MS` of the thread, it waits
 * its turn behind the others. A kill ends a module at its next yield point or WASI call, or at
 * once when it is waiting.
 *
 * @module
 */
import { START_EXPORT, YIELD_EXPORT } from "../wasi/yield_points.ts";
import { Interrupt, ProcExit, WAITING_IMPORTS, Wasi } from "../wasi/preview1.ts";
import { StdinReader } from "./stdin_channel.ts";
import {
  OUTPUT_LIMIT,
  type SharedRunMessage,
  TRAP_STATUS,
  type WorkerMessage,
} from "./worker_messages.ts";

/** Time a module may hold the thread before it lets the others run. */
export const SLICE_MS = 10;

// JSPI, typed here: lib.dom does not know it yet.
const JSPI = WebAssembly as unknown as {
  Suspending: new (fn: (...a: never[]) => unknown) => (...a: unknown[]) => unknown;
  promising: (fn: unknown) => () => Promise<unknown>;
};

/**
 * A module with one function import, `k.y` of type [] -> [], exported again as `y`: a
 * Suspending function becomes a Wasm function that a table can hold.
 */
const YIELD_HELPER = new Uint8Array([
  0x00,
  0x61,
  0x73,
  0x6d,
  0x01,
  0x00,
  0x00,
  0x00, // magic, version
  0x01,
  0x04,
  0x01,
  0x60,
  0x00,
  0x00, // type: [] -> []
  0x02,
  0x07,
  0x01,
  0x01,
  0x6b,
  0x01,
  0x79,
  0x00,
  0x00, // import "k" "y" func 0
  0x07,
  0x05,
  0x01,
  0x01,
  0x79,
  0x00,
  0x00, // export "y" func 0
]);

/** Thrown into a killed module (it has no exception handling: it cannot catch it). */
class Killed extends Interrupt {}

interface Run {
  killed: boolean;
  /** Rejects what the run waits for, if it waits. */
  abort?: (e: Error) => void;
}

/** The runs of one carrier. */
export class SharedRuns {
  #runs = new Map<number, Run>();
  #helper: WebAssembly.Module | undefined;
  /** When the module on the thread got it. */
  #turn = performance.now();
  /** Turns given up, counted for the host (see SharedRunMessage.turns). */
  #turns = new Int32Array(new SharedArrayBuffer(4));

  /** Runs a module to its end; resolves with how it ended. */
  async run(m: SharedRunMessage, post: (msg: WorkerMessage) => void): Promise<WorkerMessage> {
    this.#turns = new Int32Array(m.turns);
    const run: Run = { killed: false };
    this.#runs.set(m.id, run);
    const stdin = new StdinReader(m.stdin);
    const unwritten = new Int32Array(m.output);
    const wasi = new Wasi({
      args: m.args,
      env: m.env,
      preopens: m.preopens,
      stdio: {
        readStdin: (max) => this.#wait(run, stdin.readAsync(max)),
        write: (fd, data) => {
          // Counted before it is posted: posting hands the buffer over (its length becomes 0).
          const n = data.length;
          const v = Atomics.add(unwritten, 0, n) + n;
          post({ t: "out", id: m.id, fd, data });
          if (v > OUTPUT_LIMIT) return this.#wait(run, drained(unwritten));
        },
      },
      sleep: (ms) => this.#wait(run, sleep(ms)),
    });
    const ended = (status: number, message?: string): WorkerMessage => ({
      t: "exit",
      id: m.id,
      status,
      message,
    });
    try {
      const imports = wasi.imports() as Record<string, unknown>;
      for (const name of WAITING_IMPORTS) {
        imports[name] = new JSPI.Suspending(imports[name] as never);
      }
      const instance = new WebAssembly.Instance(m.module, {
        wasi_snapshot_preview1: imports as WebAssembly.ModuleImports,
      });
      const helper = new WebAssembly.Instance(
        this.#helper ??= new WebAssembly.Module(YIELD_HELPER),
        { k: { y: new JSPI.Suspending(() => this.#yield(run)) } },
      );
      (instance.exports[YIELD_EXPORT] as WebAssembly.Table).set(0, helper.exports.y as () => void);
      const memory = instance.exports.memory;
      if (memory instanceof WebAssembly.Memory) wasi.bind(memory);
      const entry = instance.exports[m.func];
      if (typeof entry !== "function") {
        return ended(127, `the module exports no function "${m.func}"`);
      }
      this.#turn = performance.now();
      const start = instance.exports[START_EXPORT];
      if (typeof start === "function") await JSPI.promising(start)();
      await JSPI.promising(entry)();
      return ended(0);
    } catch (e) {
      if (e instanceof ProcExit) return ended(e.code);
      if (e instanceof Killed) return ended(TRAP_STATUS, "killed");
      const what = e instanceof WebAssembly.RuntimeError
        ? "wasm trap"
        : e instanceof RangeError
        ? "out of memory or stack"
        : "error";
      return ended(TRAP_STATUS, `${what}: ${(e as Error).message ?? String(e)}`);
    } finally {
      wasi.close();
      this.#runs.delete(m.id);
    }
  }

  /** Ends run `id`: now if it waits, else at its next yield point or WASI call. */
  kill(id: number): void {
    const run = this.#runs.get(id);
    if (!run) return;
    run.killed = true;
    run.abort?.(new Killed());
  }

  /** The yield point's call: nothing while the run's slice lasts, else its turn comes later. */
  #yield(run: Run): Promise<void> | void {
    if (run.killed) throw new Killed();
    if (performance.now() - this.#turn < SLICE_MS) return;
    Atomics.add(this.#turns, 0, 1);
    // A timer, not a message: Deno serves a MessageChannel before timers and the worker's own
    // messages, so turns passed that way would starve sleeping modules and the host's kills.
    return this.#wait(run, new Promise<void>((r) => setTimeout(r, 0)));
  }

  /** What a run waits for, ended early by a kill; the thread's turn restarts after it. */
  #wait<T>(run: Run, what: T | Promise<T>): T | Promise<T> {
    if (run.killed) throw new Killed();
    if (!(what instanceof Promise)) return what;
    return new Promise<T>((resolve, reject) => {
      run.abort = reject;
      what.then((v) => {
        run.abort = undefined;
        this.#turn = performance.now();
        resolve(v);
      }, reject);
    });
  }
}

/** The longest delay setTimeout takes as it is (a longer one fires at once). */
const MAX_TIMEOUT_MS = 2 ** 31 - 1;

/** Resolves after `ms`, however long. */
async function sleep(ms: number): Promise<void> {
  for (let left = ms; left > 0; left -= MAX_TIMEOUT_MS) {
    await new Promise((r) => setTimeout(r, Math.min(left, MAX_TIMEOUT_MS)));
  }
}

/** Resolves once the host has written enough of the output (see `OUTPUT_LIMIT`). */
async function drained(unwritten: Int32Array): Promise<void> {
  for (let v = Atomics.load(unwritten, 0); v > OUTPUT_LIMIT; v = Atomics.load(unwritten, 0)) {
    const w = Atomics.waitAsync(unwritten, 0, v);
    if (w.async) await w.value;
  }
}
