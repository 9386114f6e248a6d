/**
 * The host's side of the embedded engine's shared carriers (workers running many modules, see
 * shared_runs.ts): which carrier takes a run, and where its messages go. A run goes to the
 * carrier with the fewest among those not busy computing (a carrier counts the turns its
 * modules had to give up, in a shared Int32: a count that moved within `BUSY_MS` means busy);
 * when all are busy, a new carrier starts, up to `max`. So modules that wait, most of them, pack
 * into few carriers (each ~7 MiB), and modules that compute get CPUs of their own.
 *
 * A carrier that does not end a killed run within `KILL_GRACE_MS` is stuck where no yield
 * point reaches (a WASI call blocked in the kernel): it is terminated, and its other runs end
 * as they would on an engine crash. (Deno 2.9 may leave a terminated worker's thread running
 * while it computes; its runs are reported ended all the same.)
 *
 * @module
 */
import { workerUrl } from "./worker_pool.ts";
import { type SharedRunMessage, TRAP_STATUS, type WorkerMessage } from "./worker_messages.ts";

/** Time a carrier has to end a killed run. */
export const KILL_GRACE_MS = 5000;

/** A carrier whose modules gave up a turn within this long is busy. */
const BUSY_MS = 1000;

/** Settings of the carriers. */
export interface SharedCarrierOptions {
  /** Carriers started at once and kept. */
  readonly warm: number;
  /** Carriers at most. */
  readonly max: number;
  /** A carrier above `warm` with no run is ended after this long. */
  readonly idleMs: number;
}

interface Carrier {
  readonly worker: Worker;
  /** Where each run's messages go, by id. */
  readonly runs: Map<number, (m: WorkerMessage) => void>;
  /** Turns given up by its modules (written by the carrier), as last seen, and when it moved. */
  readonly turns: Int32Array;
  turnsSeen: number;
  busyAt: number;
  idleTimer?: ReturnType<typeof setTimeout>;
}

/** A run on a carrier. */
export interface SharedRun {
  /** Ends the run; its messages are no longer delivered. */
  kill(): void;
}

/** The carriers of one engine. */
export class SharedCarriers {
  #opts: SharedCarrierOptions;
  #carriers: Carrier[] = [];
  #nextId = 1;

  constructor(opts: SharedCarrierOptions) {
    this.#opts = opts;
    for (let i = 0; i < Math.min(opts.warm, opts.max); i++) this.#spawn();
  }

  /** Starts a run; `deliver` gets its output and, last, its exit. */
  start(
    run: Omit<SharedRunMessage, "t" | "id" | "turns">,
    deliver: (m: WorkerMessage) => void,
  ): SharedRun {
    const id = this.#nextId++;
    const c = this.#pick();
    c.runs.set(id, deliver);
    c.worker.postMessage({ ...run, t: "shared-run", id, turns: c.turns.buffer });
    return {
      kill: () => {
        if (!c.runs.has(id)) return;
        c.runs.set(id, () => {}); // kept until its exit comes: the carrier still runs it
        c.worker.postMessage({ t: "shared-kill", id });
        const t = setTimeout(() => {
          if (c.runs.has(id)) this.#fail(c, "the carrier did not end a killed module");
        }, KILL_GRACE_MS);
        Deno.unrefTimer(t);
      },
    };
  }

  close(): void {
    for (const c of this.#carriers.splice(0)) {
      clearTimeout(c.idleTimer);
      c.worker.terminate();
    }
  }

  #pick(): Carrier {
    const now = Date.now();
    for (const c of this.#carriers) {
      const turns = Atomics.load(c.turns, 0);
      if (turns !== c.turnsSeen) [c.turnsSeen, c.busyAt] = [turns, now];
    }
    const fewest = (cs: Carrier[]) =>
      cs.reduce<Carrier | undefined>(
        (a, x) => (!a || x.runs.size < a.runs.size ? x : a),
        undefined,
      );
    let c = fewest(this.#carriers.filter((x) => now - x.busyAt > BUSY_MS));
    if (!c) c = this.#carriers.length < this.#opts.max ? this.#spawn() : fewest(this.#carriers)!;
    clearTimeout(c.idleTimer);
    c.idleTimer = undefined;
    return c;
  }

  #spawn(): Carrier {
    const c: Carrier = {
      worker: new Worker(workerUrl(), { type: "module" }),
      runs: new Map(),
      turns: new Int32Array(new SharedArrayBuffer(4)),
      turnsSeen: 0,
      busyAt: 0,
    };
    c.worker.onmessage = (ev: MessageEvent<WorkerMessage>) => {
      const m = ev.data;
      if (m.id === undefined) return;
      const deliver = c.runs.get(m.id);
      if (m.t === "exit") c.runs.delete(m.id);
      deliver?.(m);
      if (c.runs.size === 0 && this.#carriers.indexOf(c) >= this.#opts.warm) {
        clearTimeout(c.idleTimer);
        c.idleTimer = setTimeout(() => this.#retire(c), this.#opts.idleMs);
        Deno.unrefTimer(c.idleTimer);
      }
    };
    c.worker.onerror = (ev) => {
      ev.preventDefault();
      this.#fail(c, `engine error: ${ev.message}`);
    };
    this.#carriers.push(c);
    return c;
  }

  /** Ends a carrier and, as crashed, every run it had. */
  #fail(c: Carrier, message: string): void {
    this.#carriers = this.#carriers.filter((x) => x !== c);
    clearTimeout(c.idleTimer);
    c.worker.terminate();
    for (const [id, deliver] of c.runs) deliver({ t: "exit", id, status: TRAP_STATUS, message });
    c.runs.clear();
  }

  #retire(c: Carrier): void {
    if (c.runs.size > 0) return;
    this.#carriers = this.#carriers.filter((x) => x !== c);
    c.worker.terminate();
  }
}
