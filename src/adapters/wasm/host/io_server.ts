/**
 * The serving side of the io-socket protocol that native/monitor.c speaks
 * for native processes, here for Wasm tasks: frames `[tag u8][length u32 BE]
 * [data]` (tag 0 stdin from the daemon, 1 stdout, 2 stderr; length 0 ends a
 * stream; tags 3 and 4 from the daemon acknowledge a u32 BE count of stdout
 * and stderr bytes it passed on; tag 0 back to it acknowledges stdin taken).
 * Output is kept until acknowledged and sent
 * again to a new connection, and each stream has at most `WINDOW` bytes
 * unacknowledged, so the daemon's side (src/adapters/supervisor/monitor_io.ts) is the
 * same for both.
 *
 * @module
 */
import { ioFrame, readIoFrames } from "../../supervisor/monitor_io.ts";

/** Largest buffered output of one stream before its writer is told to wait. */
const LIMIT = 1 << 20;
/** Most output of one stream sent but not acknowledged (as the monitor's IO_WINDOW). */
const WINDOW = 256 << 10;
/** Largest frame payload. */
const FRAME = 32 << 10;

/** Output of one stream not yet acknowledged: bytes `[head, tail)` of `buf`. */
class OutQueue {
  #buf = new Uint8Array(0);
  #head = 0;
  #tail = 0;
  /** Bytes (from the head) sent on the current connection. */
  sent = 0;
  /** The writer ended the stream: an end frame follows the data. */
  ended = false;
  /** That end frame was sent on the current connection. */
  endSent = false;

  get length(): number {
    return this.#tail - this.#head;
  }

  append(data: Uint8Array): void {
    if (this.#tail + data.length > this.#buf.length) {
      const len = this.length;
      const need = len + data.length;
      // Compact in place when that makes room; grow (doubling) otherwise.
      const buf = need <= this.#buf.length
        ? this.#buf
        : new Uint8Array(Math.max(need, 2 * this.#buf.length, 4096));
      buf.set(this.#buf.subarray(this.#head, this.#tail), 0);
      this.#buf = buf;
      this.#head = 0;
      this.#tail = len;
    }
    this.#buf.set(data, this.#tail);
    this.#tail += data.length;
  }

  /** A copy of `n` bytes from `from` (relative to the head). */
  copy(from: number, n: number): Uint8Array {
    return this.#buf.slice(this.#head + from, this.#head + from + n);
  }

  /** Forgets `n` acknowledged bytes (never more than were sent). */
  ack(n: number): void {
    n = Math.min(n, this.sent);
    this.#head += n;
    this.sent -= n;
    if (this.#head === this.#tail) {
      this.#head = this.#tail = 0;
      if (this.#buf.length > 65536) this.#buf = new Uint8Array(0); // one burst must not pin memory
    }
  }
}

/** One task's io socket. */
export class IoServer {
  #listener: Deno.Listener;
  #client: Deno.Conn | undefined;
  #out = [undefined, new OutQueue(), new OutQueue()] as const;
  /** Which stream goes first next (they take turns). */
  #next: 1 | 2 = 1;
  #flushing = false;
  /** Stdin bytes taken and not yet acknowledged to the daemon. */
  #stdinAck = 0;
  #onStdin: (data: Uint8Array | null) => void;
  #room: (() => void)[] = [];
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

  /** Queues output of stream `tag` (empty data ends it); resolves once that stream is under its limit. */
  async write(tag: 1 | 2, data: Uint8Array): Promise<void> {
    const q = this.#out[tag];
    if (data.length) q.append(data);
    else q.ended = true;
    this.#flush();
    while (q.length > LIMIT && !this.#closed) await new Promise<void>((r) => this.#room.push(r));
  }

  /** Whether every byte of output was acknowledged by the daemon. */
  get drained(): boolean {
    return this.#out[1].length === 0 && this.#out[2].length === 0;
  }

  #closed = false;

  close(): void {
    this.#closed = true;
    try {
      this.#listener.close();
    } catch { /* closed */ }
    try {
      this.#client?.close();
    } catch { /* closed */ }
    Deno.remove(this.path).catch(() => {});
    this.#wake();
  }

  #wake(): void {
    for (const r of this.#room.splice(0)) r();
  }

  async #accept(): Promise<void> {
    try {
      for await (const conn of this.#listener) {
        try {
          this.#client?.close();
        } catch { /* closed */ }
        // A new daemon: what is unacknowledged goes again, and each end once
        // more. What the old one passed on but had not acknowledged (killed
        // between the two) is thus duplicated; nothing is lost.
        this.#stdinAck = 0; // the new daemon starts with an empty stdin window
        for (const q of [this.#out[1], this.#out[2]]) {
          q.sent = 0;
          q.endSent = false;
        }
        this.#client = conn;
        this.#read(conn);
        this.#flush();
      }
    } catch { /* listener closed */ }
  }

  async #read(conn: Deno.Conn): Promise<void> {
    try {
      await readIoFrames(conn, (tag, data) => {
        if (tag === 0) {
          this.#onStdin(data);
          // Taken at once (the task's stdin buffers it): the daemon may send more.
          if (data && this.#client === conn) {
            this.#stdinAck += data.length;
            this.#flush();
          }
        } else if ((tag === 3 || tag === 4) && data?.length === 4 && this.#client === conn) {
          const q = this.#out[tag - 2 as 1 | 2];
          q.ack(new DataView(data.buffer, data.byteOffset, 4).getUint32(0));
          if (q.length <= LIMIT) this.#wake();
          this.#flush(); // the window opened
        }
      });
    } catch { /* the daemon went away: it reconnects */ }
  }

  /** The next frame to send: data within a stream's window, or its end once all was sent. */
  #nextFrame(): { tag: 0 | 1 | 2; from: number; n: number } | undefined {
    if (this.#stdinAck) return { tag: 0, from: 0, n: 0 }; // a stdin acknowledgement
    for (const tag of [this.#next, 3 - this.#next as 1 | 2]) {
      const q = this.#out[tag];
      const avail = q.length - q.sent;
      if (avail > 0 && q.sent < WINDOW) {
        this.#next = 3 - tag as 1 | 2;
        return { tag, from: q.sent, n: Math.min(avail, WINDOW - q.sent, FRAME) };
      }
      if (avail === 0 && q.ended && !q.endSent) {
        this.#next = 3 - tag as 1 | 2;
        return { tag, from: q.sent, n: 0 };
      }
    }
    return undefined;
  }

  /** Sends frames whole; a frame counts as sent only once fully written on the current connection. */
  async #flush(): Promise<void> {
    if (this.#flushing) return;
    this.#flushing = true;
    try {
      for (;;) {
        const conn = this.#client;
        if (!conn) return;
        const f = this.#nextFrame();
        if (!f) return;
        const q = f.tag ? this.#out[f.tag] : undefined;
        let frame: Uint8Array;
        if (!q) {
          const ack = new Uint8Array(4);
          new DataView(ack.buffer).setUint32(0, this.#stdinAck);
          this.#stdinAck = 0;
          frame = ioFrame(0, ack);
        } else frame = ioFrame(f.tag, f.n ? q.copy(f.from, f.n) : null);
        try {
          let off = 0;
          while (off < frame.length) off += await conn.write(frame.subarray(off));
        } catch {
          if (this.#client === conn) this.#client = undefined;
          continue; // a newer connection may be there: it gets everything again
        }
        if (this.#client !== conn || !q) continue; // replaced meanwhile: resent from the start
        if (f.n) q.sent += f.n; // acks meanwhile lowered it by what they dropped
        else q.endSent = true;
      }
    } finally {
      this.#flushing = false;
    }
  }
}
