/**
 * The daemon's end of a monitor's io socket (native/monitor.c): stdout and
 * stderr of a process with streamed stdio arrive as frames
 * `[tag u8][length u32 BE][data]` (tag 1 stdout, 2 stderr; length 0 ends the
 * stream); stdin goes the other way with tag 0. Output is acknowledged as it
 * is passed on to the reader (`ack`: tag 3 stdout, 4 stderr, a u32 BE count of
 * bytes); the monitor keeps what is unacknowledged and resends it on the next
 * connection, so this reconnects after a restart and nothing is lost. What a
 * killed daemon passed on but had not yet acknowledged comes again (at most
 * that is duplicated). Each stream has at most the monitor's window
 * unacknowledged, so frames are taken as they come: an unread stream cannot
 * hold up the other. Stdin is acknowledged the other way (tag 0 from the
 * monitor, a u32 BE count of bytes it passed on to the process), so at most
 * `STDIN_WINDOW` is in flight and the monitor can always read the socket.
 * Within one daemon a lost connection is rare (the monitor drops it only on
 * an error): output then resent may repeat what the channel already holds.
 *
 * @module
 */
import { ByteQueue } from "../ttrpc/byte_queue.ts";
import { writeAll } from "../ttrpc/server.ts";
import { log } from "../../lib/log.ts";

/**
 * Receives a process's output; `null` ends a stream. It must not wait: a slow
 * reader makes the monitor (and so the process) wait by not acknowledging.
 */
export type OutputSink = (tag: 1 | 2, data: Uint8Array | null) => void;

const RETRY_MS = 200;
/** Most stdin sent to a monitor and not yet passed on to its process (below its OUT_LIMIT). */
const STDIN_WINDOW = 256 * 1024;

/** One io frame: `[tag][length u32 BE][data]`; no data (or `null`) ends stream `tag`. */
export function ioFrame(tag: number, data: Uint8Array | null): Uint8Array {
  const frame = new Uint8Array(5 + (data?.length ?? 0));
  frame[0] = tag;
  new DataView(frame.buffer).setUint32(1, data?.length ?? 0);
  if (data) frame.set(data, 5);
  return frame;
}

/**
 * Reads io frames from `conn` until it closes; `data` is `null` for an
 * end-of-stream frame. A promise returned by `onFrame` is awaited before the
 * next read. Each byte is copied at most twice, however a frame is split
 * across reads.
 */
export async function readIoFrames(
  conn: { read(p: Uint8Array): Promise<number | null> },
  onFrame: (tag: number, data: Uint8Array | null) => void | Promise<void>,
): Promise<void> {
  const q = new ByteQueue();
  const buf = new Uint8Array(64 * 1024);
  for (;;) {
    const n = await conn.read(buf);
    if (n === null) return;
    q.push(buf.slice(0, n)); // a copy of what was read, not the whole buffer
    while (q.length >= 5) {
      const head = q.peek(5);
      const len = new DataView(head.buffer, head.byteOffset).getUint32(1);
      if (q.length < 5 + len) break;
      q.skip(5);
      const r = onFrame(head[0], len ? q.take(len) : null);
      if (r) await r;
    }
  }
}

/** A connection to one monitor's io socket, re-established while the monitor lives. */
export class MonitorIo {
  #path: string;
  #sink: OutputSink;
  #conn: Deno.Conn | undefined;
  #closed = false;
  #discarding = false;
  #ended = new Set<number>();
  #writes: Promise<void> = Promise.resolve();
  #stdin: Promise<void> = Promise.resolve();
  /** Stdin sent on this connection that the monitor has not yet passed on. */
  #stdinUnacked = 0;
  #stdinRoom: (() => void)[] = [];
  #connected: Promise<void>;
  #onConnected!: () => void;

  constructor(path: string, sink: OutputSink) {
    this.#path = path;
    this.#sink = sink;
    this.#connected = new Promise((r) => (this.#onConnected = r));
    this.#run();
  }

  /**
   * Acknowledges `n` more bytes of output stream `tag` (passed on, or let go).
   * Without a connection it is dropped: the monitor resends what is
   * unacknowledged to the next one, which acknowledges it afresh.
   */
  ack(tag: 1 | 2, n: number): void {
    if (n <= 0) return;
    const conn = this.#conn;
    if (!conn) return;
    const frame = new Uint8Array(9);
    const v = new DataView(frame.buffer);
    frame[0] = tag + 2;
    v.setUint32(1, 4);
    v.setUint32(5, n);
    // Through the write chain, so it never interleaves with a stdin frame.
    this.#writes = this.#writes.then(() => this.#conn === conn ? writeAll(conn, frame) : undefined)
      .catch(() => {});
  }

  /** Sends stdin bytes, or the end of stdin (`null`). */
  sendStdin(data: Uint8Array | null): Promise<void> {
    const frame = ioFrame(0, data);
    // The wait for window is outside the write chain: output acknowledgements
    // must pass while the process is not taking its stdin.
    const w = this.#stdin.then(async () => {
      await this.#connected;
      while (data && this.#conn && this.#stdinUnacked >= STDIN_WINDOW) {
        await new Promise<void>((r) => this.#stdinRoom.push(r));
      }
      if (data && this.#conn) this.#stdinUnacked += data.length;
      const write = this.#writes.then(() => this.#conn ? writeAll(this.#conn, frame) : undefined);
      this.#writes = write.catch(() => {});
      await write;
    });
    this.#stdin = w.catch(() => {});
    return w;
  }

  #stdinAcked(n: number | undefined): void {
    if (n === undefined) this.#stdinUnacked = 0; // a new connection: a new window
    else this.#stdinUnacked = Math.max(0, this.#stdinUnacked - n);
    for (const r of this.#stdinRoom.splice(0)) r();
  }

  /**
   * Nobody will read the output any more (the process was deleted): what
   * arrives is acknowledged at once, so the monitor can finish and leave.
   */
  discard(): void {
    this.#discarding = true;
  }

  close(): void {
    this.#closed = true;
    try {
      this.#conn?.close();
    } catch { /* closed */ }
    this.#onConnected();
  }

  #end(tag: 1 | 2): void {
    if (this.#ended.has(tag)) return;
    this.#ended.add(tag);
    this.#sink(tag, null);
  }

  async #run(): Promise<void> {
    while (!this.#closed) {
      try {
        this.#conn = await Deno.connect({ transport: "unix", path: this.#path });
      } catch {
        // No socket: the monitor delivered everything and left.
        this.#end(1);
        this.#end(2);
        this.#onConnected();
        return;
      }
      this.#stdinAcked(undefined);
      this.#onConnected();
      await this.#read(this.#conn).catch((e) => log.debug("monitor io read failed", { error: e }));
      this.#conn = undefined; // acknowledgements wait for the next connection's resend
      this.#stdinAcked(undefined);
      if (this.#ended.has(1) && this.#ended.has(2)) return;
      await new Promise((r) => setTimeout(r, RETRY_MS));
    }
  }

  #read(conn: Deno.Conn): Promise<void> {
    return readIoFrames(conn, (tag, data) => {
      if (tag === 0 && data?.length === 4) {
        return this.#stdinAcked(new DataView(data.buffer, data.byteOffset, 4).getUint32(0));
      }
      if (tag !== 1 && tag !== 2) return;
      if (!data) return this.#end(tag);
      if (this.#discarding) return this.ack(tag, data.length);
      this.#sink(tag, data);
    });
  }
}
