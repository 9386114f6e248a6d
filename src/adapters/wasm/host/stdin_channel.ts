/**
 * Stdin for a module running in a worker: the worker reads synchronously (a WASI fd_read
 * blocks) or waits for a promise (a module sharing the worker), the host feeds asynchronously,
 * so the bytes travel through a SharedArrayBuffer guarded by Atomics. One chunk at a time: the
 * host waits until the worker has taken all of it before writing the next.
 *
 * @module
 */

const EMPTY = 0, FULL = 1, EOF = 2;
const HEADER = 16;
/** Bytes passed per chunk. */
export const STDIN_CHUNK = 64 * 1024;

/** The host (writing) side. */
export class StdinWriter {
  readonly buffer: SharedArrayBuffer;
  #ctl: Int32Array;
  #data: Uint8Array;
  #queue: Promise<void> = Promise.resolve();

  constructor() {
    this.buffer = new SharedArrayBuffer(HEADER + STDIN_CHUNK);
    this.#ctl = new Int32Array(this.buffer, 0, 4);
    this.#data = new Uint8Array(this.buffer, HEADER);
  }

  /** Queues `data`, or the end of stdin (`null`); resolves once the worker can see it. */
  push(data: Uint8Array | null): Promise<void> {
    this.#queue = this.#queue.then(() => this.#put(data));
    return this.#queue;
  }

  async #put(data: Uint8Array | null): Promise<void> {
    if (Atomics.load(this.#ctl, 0) === EOF) return;
    if (data === null) {
      await this.#whileFull();
      Atomics.store(this.#ctl, 0, EOF);
      Atomics.notify(this.#ctl, 0);
      return;
    }
    for (let off = 0; off < data.length; off += STDIN_CHUNK) {
      await this.#whileFull();
      if (Atomics.load(this.#ctl, 0) === EOF) return;
      const part = data.subarray(off, off + STDIN_CHUNK);
      this.#data.set(part);
      this.#ctl[1] = part.length;
      this.#ctl[2] = 0;
      Atomics.store(this.#ctl, 0, FULL);
      Atomics.notify(this.#ctl, 0);
    }
  }

  async #whileFull(): Promise<void> {
    while (Atomics.load(this.#ctl, 0) === FULL) {
      const w = Atomics.waitAsync(this.#ctl, 0, FULL);
      if (w.async) await w.value;
    }
  }
}

/** The worker (reading) side; `buffer` null means no stdin (immediate EOF). */
export class StdinReader {
  #ctl: Int32Array | undefined;
  #data: Uint8Array | undefined;

  constructor(buffer: SharedArrayBuffer | null) {
    if (!buffer) return;
    this.#ctl = new Int32Array(buffer, 0, 4);
    this.#data = new Uint8Array(buffer, HEADER);
  }

  /** `read` without blocking the thread: the bytes now, or a promise of them. */
  readAsync(max: number): Uint8Array | Promise<Uint8Array> {
    const ctl = this.#ctl;
    if (!ctl || Atomics.load(ctl, 0) !== EMPTY) return this.read(max);
    const w = Atomics.waitAsync(ctl, 0, EMPTY);
    return (w.async ? w.value : Promise.resolve()).then(() => this.readAsync(max));
  }

  /** Blocks until data or EOF; returns at most `max` bytes, empty at EOF. */
  read(max: number): Uint8Array {
    const ctl = this.#ctl;
    if (!ctl || !this.#data) return new Uint8Array(0);
    for (;;) {
      const s = Atomics.load(ctl, 0);
      if (s === FULL) break;
      if (s === EOF) return new Uint8Array(0);
      Atomics.wait(ctl, 0, EMPTY);
    }
    const len = ctl[1], off = ctl[2];
    const n = Math.min(max, len - off);
    const out = this.#data.slice(off, off + n);
    if (off + n >= len) {
      Atomics.store(ctl, 0, EMPTY);
      Atomics.notify(ctl, 0);
    } else ctl[2] = off + n;
    return out;
  }
}
