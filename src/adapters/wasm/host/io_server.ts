/**
 * The serving side of the io-socket protocol that native/monitor.c speaks
 * for native processes, here for Wasm tasks: frames `[tag u8][length u32 BE]
 * [data]` (tag 0 stdin from the daemon, 1 stdout, 2 stderr; length 0 ends a
 * stream). Output is kept while no daemon is connected and resent whole, so
 * the daemon's side (src/adapters/os/monitor_io.ts) is the same for both.
 *
 * @module
 */
import { ioFrame, readIoFrames } from "../../os/monitor_io.ts";

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
    const frame = ioFrame(tag, data);
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
    try {
      await readIoFrames(conn, (tag, data) => {
        if (tag === 0) this.#onStdin(data);
      });
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
