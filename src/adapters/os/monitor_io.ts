/**
 * The daemon's end of a monitor's io socket (native/monitor.c): stdout and
 * stderr of a process with streamed stdio arrive as frames
 * `[tag u8][length u32 BE][data]` (tag 1 stdout, 2 stderr; length 0 ends the
 * stream); stdin goes the other way with tag 0. The monitor buffers while no
 * daemon is connected, so this reconnects after a restart and nothing is lost.
 *
 * @module
 */
import { writeAll } from "../ttrpc/server.ts";
import { log } from "../../log.ts";

/** Receives a process's output; `null` ends a stream. */
export type OutputSink = (tag: 1 | 2, data: Uint8Array | null) => void;

const RETRY_MS = 200;

/** One io frame: `[tag][length u32 BE][data]`; no data (or `null`) ends stream `tag`. */
export function ioFrame(tag: number, data: Uint8Array | null): Uint8Array {
  const frame = new Uint8Array(5 + (data?.length ?? 0));
  frame[0] = tag;
  new DataView(frame.buffer).setUint32(1, data?.length ?? 0);
  if (data) frame.set(data, 5);
  return frame;
}

/** Reads io frames from `conn` until it closes; `data` is `null` for an end-of-stream frame. */
export async function readIoFrames(
  conn: Deno.Conn,
  onFrame: (tag: number, data: Uint8Array | null) => void,
): Promise<void> {
  const buf = new Uint8Array(32 * 1024);
  let have = new Uint8Array(0);
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
      onFrame(have[0], len ? have.slice(5, 5 + len) : null);
      have = have.subarray(5 + len);
    }
  }
}

/** A connection to one monitor's io socket, re-established while the monitor lives. */
export class MonitorIo {
  #path: string;
  #sink: OutputSink;
  #conn: Deno.Conn | undefined;
  #closed = false;
  #ended = new Set<number>();
  #writes: Promise<void> = Promise.resolve();
  #connected: Promise<void>;
  #onConnected!: () => void;

  constructor(path: string, sink: OutputSink) {
    this.#path = path;
    this.#sink = sink;
    this.#connected = new Promise((r) => (this.#onConnected = r));
    this.#run();
  }

  /** Sends stdin bytes, or the end of stdin (`null`). */
  sendStdin(data: Uint8Array | null): Promise<void> {
    const frame = ioFrame(0, data);
    const w = this.#writes.then(async () => {
      await this.#connected;
      if (this.#conn) await writeAll(this.#conn, frame);
    });
    this.#writes = w.catch(() => {});
    return w;
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
      this.#onConnected();
      await this.#read(this.#conn).catch((e) => log.debug("monitor io read failed", { error: e }));
      if (this.#ended.has(1) && this.#ended.has(2)) return;
      await new Promise((r) => setTimeout(r, RETRY_MS));
    }
  }

  #read(conn: Deno.Conn): Promise<void> {
    return readIoFrames(conn, (tag, data) => {
      if (tag !== 1 && tag !== 2) return;
      if (data) this.#sink(tag, data);
      else this.#end(tag);
    });
  }
}
