/**
 * The serving side of the io-socket protocol that native/monitor.c speaks
 * for native processes, here for Wasm tasks: frames `[tag u8][length u32 BE]
 * [data]` (tag 0 stdin from the daemon, 1 stdout, 2 stderr; length 0 ends a
 * stream). Output is kept while no daemon is connected and resent whole, so
 * the daemon's side (src/adapters/os/monitor_io.ts) is the same for both.
 *
 * @module
 */

/** Largest buffered output before writers are told to wait. */
const LIMIT = 1 << 20;

/** One task's io socket. */
export class IoServer {
  #listener: Deno.Listener;
  #client: Deno.Conn | undefined;
  #queue: Uint8Array[] = [];
  #queued = 0;
  #flushing = false;
  #onStdin: (data: Uint8Array | null) => void;
  #drained: (() => void)[] = [];
  readonly path: string;

  private constructor(
    path: string,
    listener: Deno.Listener,
    onStdin: (data: Uint8Array | null) => void,
  ) {
    this.path = path;
    this.#listener = listener;
    this.#onStdin = onStdin;
    this.#accept();
  }

  /** Listens on `path` (0600); `onStdin` gets stdin data, `null` at its end. */
  static async listen(path: string, onStdin: (data: Uint8Array | null) => void): Promise<IoServer> {
    await Deno.remove(path).catch(() => {});
    const l = Deno.listen({ transport: "unix", path });
    await Deno.chmod(path, 0o600);
    return new IoServer(path, l, onStdin);
  }

  /** Queues output of stream `tag` (empty data ends it); resolves once under the buffer limit. */
  async write(tag: 1 | 2, data: Uint8Array): Promise<void> {
    const frame = new Uint8Array(5 + data.length);
    frame[0] = tag;
    new DataView(frame.buffer).setUint32(1, data.length);
    frame.set(data, 5);
    this.#queue.push(frame);
    this.#queued += frame.length;
    this.#flush();
    if (this.#queued > LIMIT) await new Promise<void>((r) => this.#drained.push(r));
  }

  /** Whether every queued frame was delivered. */
  get drained(): boolean {
    return this.#queued === 0;
  }

  close(): void {
    try {
      this.#listener.close();
    } catch { /* closed */ }
    try {
      this.#client?.close();
    } catch { /* closed */ }
    Deno.remove(this.path).catch(() => {});
    for (const d of this.#drained.splice(0)) d();
  }

  async #accept(): Promise<void> {
    try {
      for await (const conn of this.#listener) {
        try {
          this.#client?.close();
        } catch { /* closed */ }
        this.#client = conn;
        this.#read(conn);
        this.#flush();
      }
    } catch { /* listener closed */ }
  }

  async #read(conn: Deno.Conn): Promise<void> {
    const buf = new Uint8Array(32 * 1024);
    let have = new Uint8Array(0);
    try {
      for (;;) {
        const n = await conn.read(buf);
        if (n === null) return;
        const merged = new Uint8Array(have.length + n);
        merged.set(have);
        merged.set(buf.subarray(0, n), have.length);
        have = merged;
        while (have.length >= 5) {
          const len = new DataView(have.buffer, have.byteOffset).getUint32(1);
          if (have.length < 5 + len) break;
          if (have[0] === 0) this.#onStdin(len ? have.slice(5, 5 + len) : null);
          have = have.subarray(5 + len);
        }
      }
    } catch { /* the daemon went away: it reconnects */ }
  }

  /** Sends queued frames whole; a frame is dropped from the queue only once fully written. */
  async #flush(): Promise<void> {
    if (this.#flushing) return;
    this.#flushing = true;
    try {
      while (this.#client && this.#queue.length) {
        const frame = this.#queue[0];
        const conn = this.#client;
        try {
          let off = 0;
          while (off < frame.length) off += await conn.write(frame.subarray(off));
        } catch {
          if (this.#client === conn) this.#client = undefined;
          return; // resent from its start to the next connection
        }
        this.#queue.shift();
        this.#queued -= frame.length;
        if (this.#queued <= LIMIT) { for (const d of this.#drained.splice(0)) d(); }
      }
    } finally {
      this.#flushing = false;
    }
  }
}
