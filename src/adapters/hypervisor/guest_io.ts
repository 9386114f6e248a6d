/**
 * Stdio of processes in a VM. containerd hands the host daemon FIFO or file
 * paths, or (`io_type = "streaming"`) streams of the host's Streaming
 * service; the guest can use neither. The guest's runtime gets streaming
 * URLs of the agent instead, and the host copies between each host end and
 * its agent stream, playing containerd's side of the Streaming protocol
 * (StreamInit, then Data one way and WindowUpdate the other). A stream that
 * is opened again (a restarted daemon) takes over from the old one and
 * receives what was not yet sent.
 *
 * @module
 */
import { InvalidArgumentError } from "../../domain/errors.ts";
import type { Io } from "../../domain/task.ts";
import { Any } from "../../gen/containerd/google/protobuf/any.ts";
import { StreamInit } from "../../gen/containerd/services/streaming/v1/streaming.ts";
import { Data, WindowUpdate } from "../../gen/containerd/types/transfer/streaming.ts";
import { log } from "../../lib/log.ts";
import {
  type InChannel,
  type OutChannel,
  OUTPUT_IDLE_MS,
  type StreamHub,
  streamingId,
} from "../task/streaming.ts";
import type { ClientStream, TtrpcClient } from "../ttrpc/client.ts";
import { AsyncQueue } from "../ttrpc/queue.ts";
import type { OutputHolder } from "../kind_host.ts";

const SERVICE = "containerd.services.streaming.v1.Streaming";
const CHUNK = 32 * 1024;
/** Output window granted to the guest beyond the initial 64 KiB. */
const GUEST_WINDOW = 960 * 1024;
/** How long closing a process's stdio waits for its input copy to end. */
const STDIN_LET_GO_MS = 1_000;

/** The streaming URL the guest gets for one stdio stream. */
function streamUrl(id: string): string {
  return `ttrpc+agent://kuasar?streaming_id=${encodeURIComponent(id)}`;
}

/** A host stdio: a path (FIFO or file), or a stream id of the host's Streaming service. */
type HostEnd = { path: string } | { stream: string };

function hostEnd(stdio: string): HostEnd {
  const stream = streamingId(stdio);
  if (stream) return { stream };
  if (stdio.startsWith("file://")) return { path: new URL(stdio).pathname };
  if (stdio.includes("://")) {
    throw new InvalidArgumentError(
      `Unsupported stdio "${stdio}" for a VM pod: expected a FIFO or file path, file://, or a streaming URL`,
    );
  }
  return { path: stdio };
}

/** The guest's view of `io`: a stream per stdio the process has, named after `base`. */
export function guestIo(io: Io, base: string): Io {
  for (const p of [io.stdin, io.stdout, io.stderr]) if (p) hostEnd(p);
  return {
    stdin: io.stdin ? streamUrl(`${base}-stdin`) : "",
    stdout: io.stdout ? streamUrl(`${base}-stdout`) : "",
    // A terminal has one output: the pty.
    stderr: io.stderr && !io.terminal ? streamUrl(`${base}-stderr`) : "",
    terminal: io.terminal,
  };
}

const any = (typeUrl: string, value: Uint8Array) => Any.encode({ typeUrl, value }).finish();
const windowUpdate = (n: number) =>
  any("containerd.types.transfer.WindowUpdate", WindowUpdate.encode({ update: n }).finish());
const data = (d: Uint8Array) =>
  any("containerd.types.transfer.Data", Data.encode({ data: d }).finish());

async function openStream(client: TtrpcClient, id: string): Promise<ClientStream> {
  const s = await client.stream(SERVICE, "Stream", { streamingClient: true });
  await s.send(
    any("containerd.services.streaming.v1.StreamInit", StreamInit.encode({ id }).finish()),
  );
  return s;
}

/** Where output goes on the host. */
interface OutSink {
  write(d: Uint8Array): Promise<void>;
  close(): void;
}

/** Where input comes from on the host: chunks until the end of input. */
type InSource = AsyncIterable<Uint8Array>;

/** Copies a guest output stream into a host sink; resolves when the stream ends. */
async function pumpOut(client: TtrpcClient, id: string, open: () => Promise<OutSink>) {
  const s = await openStream(client, id);
  const it = s.received[Symbol.asyncIterator]();
  await it.next(); // the acknowledgement of StreamInit
  const sink = await open();
  // More in flight than containerd's 64 KiB: each window round trip crosses
  // the agent channel, slow under emulation. Still bounded: more is granted
  // only as the host sink takes what came.
  await s.send(windowUpdate(GUEST_WINDOW));
  try {
    for (let m = await it.next(); !m.done; m = await it.next()) {
      const a = Any.decode(m.value);
      if (!a.typeUrl.endsWith("Data")) continue;
      const d = Data.decode(a.value).data;
      await sink.write(d);
      await s.send(windowUpdate(d.length));
    }
    // As containerd's reader does: closing our side tells the agent everything was read.
    await s.closeSend();
  } finally {
    sink.close();
  }
}

/** Copies a host source into a guest stdin stream, then ends the stream's input. */
async function pumpIn(client: TtrpcClient, id: string, source: InSource): Promise<void> {
  const s = await openStream(client, id);
  let credit = 0;
  let wake: (() => void) | undefined;
  let ended = false;
  (async () => {
    for await (const m of s.received) {
      const a = Any.decode(m);
      if (a.typeUrl.endsWith("WindowUpdate")) credit += WindowUpdate.decode(a.value).update;
      wake?.();
    }
  })().catch(() => {}).finally(() => {
    ended = true;
    wake?.();
  });
  for await (const chunk of source) {
    for (let off = 0; off < chunk.length;) {
      while (credit <= 0 && !ended) await new Promise<void>((r) => (wake = r));
      if (ended) return;
      const len = Math.min(credit, chunk.length - off);
      await s.send(data(chunk.subarray(off, off + len)));
      credit -= len;
      off += len;
    }
  }
  await s.closeSend();
}

/** Waits for `p`, or `ms` at most. */
async function within(p: Promise<unknown>, ms: number): Promise<void> {
  let t: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([p, new Promise((r) => (t = setTimeout(r, ms)))]);
  clearTimeout(t);
}

/** Chunks read from a host path until its end (a FIFO's last writer closed). */
async function* readPath(path: string, opened: (f: Deno.FsFile) => void): InSource {
  const f = await Deno.open(path, { read: true });
  opened(f);
  const buf = new Uint8Array(CHUNK);
  try {
    for (;;) {
      const n = await f.read(buf).catch(() => null);
      if (n === null) return;
      yield buf.slice(0, n);
    }
  } finally {
    try {
      f.close();
    } catch { /* closed */ }
  }
}

/**
 * Lets go of the output FIFOs of `io` a holder kept (a process whose output is not copied again:
 * its reader then sees the end).
 */
export async function releaseOutputs(holder: OutputHolder | undefined, io: Io): Promise<void> {
  if (!holder) return;
  for (const p of [io.stdout, io.stderr]) {
    if (!p) continue;
    const end = hostEnd(p);
    if ("path" in end) await holder.release(end.path).catch(() => {});
  }
}

/** The copies of one process's stdio. */
export class GuestStdio {
  readonly #output: Promise<unknown>;
  #outputDone = false;
  /** Host channels of streamed outputs. */
  #channels: OutChannel[] = [];
  /** When output last moved to a host path. */
  #progressAt = Date.now();
  #stdinPath: string | undefined;
  #stdinFile: Deno.FsFile | undefined;
  #stdinQueue: AsyncQueue<Uint8Array> | undefined;
  #stdinChannel: InChannel | undefined;
  #stdin: Promise<void> | undefined;
  /** Set by close: output copies stop instead of waiting for a reader. */
  #closing = false;
  /** Output paths whose copy waits in open() for containerd to read them again. */
  #reopening = new Set<string>();

  /**
   * Starts copying between the host ends of `io` (paths, or streams of pod
   * `scope` in `hub`) and the guest streams named after `base`.
   */
  constructor(
    client: TtrpcClient,
    io: Io,
    base: string,
    hub: StreamHub,
    scope: string,
    holder?: OutputHolder,
  ) {
    const l = log.with({ component: "vm-stdio", stream: base });
    const out = (stdio: string, kind: string) => {
      const end = hostEnd(stdio);
      const open = async (): Promise<OutSink> => {
        if ("stream" in end) {
          const ch = hub.output(scope, end.stream);
          this.#channels.push(ch);
          return { write: (d) => ch.push(d), close: () => ch.end() };
        }
        const path = end.path;
        let f = await Deno.open(path, { write: true, append: true });
        // A FIFO's reader (containerd) takes its last writer's close for the end of the output:
        // the relay holds a write end, so a restart of this daemon is not one.
        const held = await holder?.hold(scope, path).catch(() => false);
        return {
          write: async (d) => {
            for (let off = 0; off < d.length;) {
              try {
                off += await f.write(d.subarray(off));
              } catch (e) {
                // No reader: containerd restarted. It opens the FIFO again when it recovers the
                // container; until then the guest's stream waits (its window is not granted).
                if (!(e instanceof Deno.errors.BrokenPipe) || this.#closing) throw e;
                f.close();
                f = await this.#reopen(path);
              }
            }
            this.#progressAt = Date.now();
          },
          close: () => {
            // Already closed when a wait for a reader was given up (close() while reopening).
            try {
              f.close();
            } catch { /* closed */ }
            if (held) holder!.release(path).catch(() => {});
          },
        };
      };
      return pumpOut(client, `${base}-${kind}`, open).catch((e) =>
        l.debug("output copy ended", { kind, error: e })
      );
    };
    this.#output = Promise.all([
      io.stdout ? out(io.stdout, "stdout") : undefined,
      io.stderr && !io.terminal ? out(io.stderr, "stderr") : undefined,
    ]).finally(() => (this.#outputDone = true));
    if (io.stdin) {
      const end = hostEnd(io.stdin);
      let source: InSource;
      if ("stream" in end) {
        const q = this.#stdinQueue = new AsyncQueue<Uint8Array>();
        this.#stdinChannel = hub.input(scope, end.stream);
        // Taken by the copy to the guest (which waits for the guest's window) before more comes.
        this.#stdinChannel.setSink((d) => {
          if (!d) return Promise.resolve(q.close());
          q.push(d);
          return q.taken();
        });
        source = q;
      } else {
        this.#stdinPath = end.path;
        source = readPath(end.path, (f) => (this.#stdinFile = f));
      }
      this.#stdin = pumpIn(client, `${base}-stdin`, source)
        .catch((e) => l.debug("input copy ended", { error: e }));
    }
  }

  /** Opens an output FIFO again once it has a reader (throws once closing). */
  async #reopen(path: string): Promise<Deno.FsFile> {
    this.#reopening.add(path);
    try {
      const f = await Deno.open(path, { write: true, append: true });
      if (this.#closing) {
        f.close();
        throw new Deno.errors.BrokenPipe(`${path}: the process's stdio is closed`);
      }
      return f;
    } finally {
      this.#reopening.delete(path);
    }
  }

  /**
   * Resolves once the output was copied out and read (containerd stops
   * reading a stream once it learns of the exit), or once it made no
   * progress for `OUTPUT_IDLE_MS`.
   */
  async drained(): Promise<void> {
    this.#progressAt = Date.now();
    while (!this.#outputDone) {
      const moved = Math.max(this.#progressAt, ...this.#channels.map((c) => c.progressAt));
      const left = moved + OUTPUT_IDLE_MS - Date.now();
      if (left <= 0) return;
      await within(this.#output, Math.min(left, 500));
    }
    await Promise.all(this.#channels.map((c) => c.settled(OUTPUT_IDLE_MS)));
  }

  /**
   * Ends the input (CloseIO) behind what the host end still carries: the
   * agent's own CloseIO travels on another stream and would overtake bytes
   * still on their way, so the copy is let finish first (a FIFO at its
   * writer's close, a stream behind its last bytes), within a bound.
   */
  async endInput(): Promise<void> {
    if (!this.#stdin) return;
    await this.#stdinChannel?.close();
    await within(this.#stdin, STDIN_LET_GO_MS);
  }

  /**
   * Stops the input copy. A read of a FIFO cannot be interrupted, and
   * containerd may hold the write end until after Task.Delete: so the copy
   * is let go (it ends at the FIFO's next byte or close), never waited for long.
   */
  async close(): Promise<void> {
    this.#closing = true;
    // Opening the read side releases an output copy blocked in open() for a reader.
    for (const path of this.#reopening) {
      Deno.open(path, { read: true }).then((r) => r.close(), () => {});
    }
    if (!this.#stdin) return;
    this.#stdinQueue?.close();
    if (this.#stdinFile) {
      try {
        this.#stdinFile.close();
      } catch { /* closed */ }
    } else if (this.#stdinPath) {
      // Opening the write side releases a reader still blocked in open().
      Deno.open(this.#stdinPath, { write: true }).then((w) => w.close(), () => {});
    }
    await within(this.#stdin, STDIN_LET_GO_MS);
  }
}
