/**
 * Bytes received in chunks and consumed from the front, for decoders of
 * framed streams (ttrpc frames, the monitors' io frames): each byte is
 * copied at most once more, however a frame was split across reads.
 *
 * @module
 */

const EMPTY = new Uint8Array(0);

export class ByteQueue {
  #chunks: Uint8Array[] = [];
  /** Index of the first chunk still held (no Array.shift: it moves the whole array). */
  #head = 0;
  #length = 0;

  get length(): number {
    return this.#length;
  }

  /** Bytes of the buffers the queue keeps alive (consumed chunks are let go at once). */
  get retainedBytes(): number {
    let n = 0;
    for (const c of this.#chunks) n += c.buffer.byteLength;
    return n;
  }

  push(chunk: Uint8Array): void {
    if (!chunk.length) return;
    this.#chunks.push(chunk);
    this.#length += chunk.length;
  }

  /** The first `n` bytes, without consuming them (`n` ≤ length). */
  peek(n: number): Uint8Array {
    if (n === 0) return new Uint8Array(0);
    const first = this.#chunks[this.#head];
    if (first.length >= n) return first.subarray(0, n);
    return this.#copy(n);
  }

  /** Removes and returns the first `n` bytes (`n` ≤ length). */
  take(n: number): Uint8Array {
    if (n === 0) return new Uint8Array(0);
    const first = this.#chunks[this.#head];
    const out = first.length >= n ? first.subarray(0, n) : this.#copy(n);
    this.skip(n);
    return out;
  }

  /** Drops the first `n` bytes (`n` ≤ length). */
  skip(n: number): void {
    this.#length -= n;
    while (n > 0) {
      const first = this.#chunks[this.#head];
      if (first.length > n) {
        this.#chunks[this.#head] = first.subarray(n);
        break;
      }
      n -= first.length;
      // A consumed chunk is let go now: a connection that goes idle between calls (containerd
      // keeps one per pod) would otherwise keep its last reads, up to 64 of them, for its life.
      this.#chunks[this.#head++] = EMPTY;
    }
    if (this.#length === 0) {
      this.#chunks = [];
      this.#head = 0;
    } else if (this.#head > 64 && this.#head * 2 > this.#chunks.length) {
      this.#chunks = this.#chunks.slice(this.#head);
      this.#head = 0;
    }
  }

  #copy(n: number): Uint8Array {
    const out = new Uint8Array(n);
    let off = 0;
    for (let i = this.#head; off < n; i++) {
      const part = this.#chunks[i].subarray(0, n - off);
      out.set(part, off);
      off += part.length;
    }
    return out;
  }
}
