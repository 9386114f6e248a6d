/**
 * Worker threads kept for reuse: starting a worker costs milliseconds (a new
 * isolate), reusing one costs a message. A worker whose task ended normally
 * comes back; one that was terminated (killed task) is replaced on demand.
 * Idle workers above the warm count are ended after a while.
 *
 * @module
 */

/** A pooled worker. */
export interface PoolWorker {
  readonly worker: Worker;
  idleSince: number;
}

/** Settings of a pool. */
export interface WorkerPoolOptions {
  /** Workers kept ready (started with the pool). */
  readonly warm: number;
  /** Idle workers kept at most. */
  readonly maxIdle: number;
  /** An idle worker above `warm` is ended after this long. */
  readonly idleMs: number;
}

/** The worker script, next to this module from source, next to the bundle otherwise. */
export function workerUrl(): URL {
  return import.meta.url.endsWith(".ts")
    ? new URL("./worker.ts", import.meta.url)
    : new URL("./kuasar-wasm-worker.js", import.meta.url);
}

/** A pool of workers running the host's worker script. */
export class WorkerPool {
  #opts: WorkerPoolOptions;
  #idle: PoolWorker[] = [];
  #reaper: ReturnType<typeof setInterval>;

  constructor(opts: WorkerPoolOptions) {
    this.#opts = opts;
    for (let i = 0; i < opts.warm; i++) this.#idle.push(this.#spawn());
    this.#reaper = setInterval(() => this.#reap(), Math.max(1000, opts.idleMs / 2));
    Deno.unrefTimer(this.#reaper);
  }

  acquire(): PoolWorker {
    return this.#idle.pop() ?? this.#spawn();
  }

  /** Gives a worker back (`reuse`) or ends it. */
  release(pw: PoolWorker, reuse: boolean): void {
    pw.worker.onmessage = null;
    pw.worker.onerror = null;
    if (reuse && this.#idle.length < this.#opts.maxIdle) {
      pw.idleSince = Date.now();
      this.#idle.push(pw);
    } else pw.worker.terminate();
  }

  close(): void {
    clearInterval(this.#reaper);
    for (const pw of this.#idle.splice(0)) pw.worker.terminate();
  }

  #spawn(): PoolWorker {
    return { worker: new Worker(workerUrl(), { type: "module" }), idleSince: Date.now() };
  }

  #reap(): void {
    const now = Date.now();
    while (
      this.#idle.length > this.#opts.warm && now - this.#idle[0].idleSince > this.#opts.idleMs
    ) {
      this.#idle.shift()!.worker.terminate();
    }
  }
}
