/**
 * containerd's Streaming service (`containerd.services.streaming.v1.Streaming`)
 * on the task address, for `io_type = "streaming"`: container stdio as
 * ttrpc streams named `<container or exec id>-stdin|-stdout|-stderr`.
 *
 * containerd opens the streams during CreateContainer, before Task.Create, so
 * a stream may arrive before the process it belongs to; channels are created
 * by whichever side comes first and hold data until the other does. A second
 * stream with the same id preempts the first (that is how containerd
 * re-attaches after its own restart) and receives what was not yet sent.
 *
 * Flow control follows containerd: it grants the stdout/stderr window with
 * WindowUpdate messages (64 KiB at a time) and waits for ours before it
 * sends stdin.
 *
 * @module
 */
import { FailedPreconditionError, InvalidArgumentError } from "../../domain/errors.ts";
import { Any } from "../../gen/containerd/google/protobuf/any.ts";
import {
  StreamingDefinition,
  StreamInit,
} from "../../gen/containerd/services/streaming/v1/streaming.ts";
import { Data, WindowUpdate } from "../../gen/containerd/types/transfer/streaming.ts";
import { log } from "../../lib/log.ts";
import type { CallContext, ServerStream, TtrpcServer } from "../ttrpc/server.ts";

const TYPE_DATA = "containerd.types.transfer.Data";
const TYPE_WINDOW = "containerd.types.transfer.WindowUpdate";
const TYPE_EMPTY = "google.protobuf.Empty";
/** Largest Data message we send. */
const CHUNK = 32 * 1024;
/** Output credit an attachment starts with (containerd's window size). */
const INITIAL_CREDIT = 64 * 1024;
/** The stdin window we grant. */
const STDIN_WINDOW = 64 * 1024;

/** The stream id of a stdio string such as `ttrpc+unix:///x/task.sock?streaming_id=abc-stdout`. */
export function streamingId(stdio: string): string | undefined {
  const q = stdio.indexOf("?");
  if (q < 0 || !stdio.includes("://")) return undefined;
  return new URLSearchParams(stdio.slice(q + 1)).get("streaming_id") ?? undefined;
}

function any(typeUrl: string, value: Uint8Array): Uint8Array {
  return Any.encode({ typeUrl, value }).finish();
}

/**
 * Output a channel holds before its writer is made to wait. The writer is a
 * monitor's or the Wasm host's io socket (or a VM's guest stream), each with
 * a bounded buffer of its own, so a process that writes faster than its
 * reader reads blocks in write(2) instead of growing the daemon.
 */
// Not below a monitor's IO_WINDOW (native/monitor.c): the window bounds what
// a channel gets while its output is unacknowledged, so pushes stay within it.
export const OUT_LIMIT = 256 * 1024;
/** How long an exit waits for its streamed output to move before it is reported anyway. */
export const OUTPUT_IDLE_MS = 10_000;
/** How long a finished stream waits for its reader to close its side after EOF. */
const ACK_MS = 5_000;

/**
 * Output of a process (stdout/stderr) on its way to containerd, bounded at
 * `OUT_LIMIT` bytes: `push` resolves once there is room again.
 *
 * containerd cancels its reader of a streamed stdio as soon as it deletes the
 * task, which it does right after it learns of the exit, so whatever it has
 * not read by then is lost (core/transfer/streaming.ReadByteStream checks its
 * context before every read). `settled` lets the exit wait until the reader
 * has read everything: the stream ended and the reader closed its side.
 */
export class OutChannel {
  #queue: Uint8Array[] = [];
  #queued = 0;
  #ended = false;
  #dropped = false;
  #room: (() => void)[] = [];
  #wake: (() => void)[] = [];
  #progressAt = Date.now();
  /** The attachment that may send; a newer one preempts. */
  owner: symbol | undefined;
  /**
   * Told of bytes done with: sent on to the reader, or let go because nobody
   * will read them (pushed after the end, or dropped). The writer's source
   * keeps output until then (a monitor resends it to a restarted daemon).
   */
  onSent?: (n: number) => void;

  /** Queues output; resolves when the channel is under its bound (at once after `drop`). */
  push(data: Uint8Array): Promise<void> {
    if (!data.length) return Promise.resolve();
    if (this.#ended) {
      this.onSent?.(data.length);
      return Promise.resolve();
    }
    this.#queue.push(data);
    this.#queued += data.length;
    this.wake();
    if (this.#queued <= OUT_LIMIT) return Promise.resolve();
    return new Promise((r) => this.#room.push(r));
  }

  /** No more output will come. */
  end(): void {
    this.#ended = true;
    this.#progressAt = Date.now();
    this.wake();
  }

  /** The process is gone for good (Task.Delete): what is queued is let go, writers released. */
  drop(): void {
    this.#ended = this.#dropped = true;
    const letGo = this.#queued;
    this.#queue = [];
    this.#queued = 0;
    if (letGo) this.onSent?.(letGo);
    this.owner = undefined;
    this.#release();
    this.wake();
  }

  get ended(): boolean {
    return this.#ended;
  }

  /** When output last moved (taken by a reader, or ended). */
  get progressAt(): number {
    return this.#progressAt;
  }

  /** Bytes queued. */
  get queued(): number {
    return this.#queued;
  }

  /** Takes up to `max` bytes from the queue. */
  take(max: number): Uint8Array | undefined {
    const head = this.#queue[0];
    if (!head) return undefined;
    let out: Uint8Array;
    if (head.length <= max) out = this.#queue.shift()!;
    else {
      this.#queue[0] = head.subarray(max);
      out = head.subarray(0, max);
    }
    this.#queued -= out.length;
    this.#progressAt = Date.now();
    if (this.#queued <= OUT_LIMIT) this.#release();
    this.wake(); // an exit waiting in `settled` looks again
    return out;
  }

  /** Puts bytes back at the front (a send that failed). */
  unshift(data: Uint8Array): void {
    this.#queue.unshift(data);
    this.#queued += data.length;
  }

  get empty(): boolean {
    return this.#queue.length === 0;
  }

  /** Everything was read: the output ended, nothing is queued, no attachment is finishing. */
  get delivered(): boolean {
    return this.#dropped || (this.#ended && this.empty && this.owner === undefined);
  }

  /**
   * Resolves once `delivered`, or once nothing has moved for `idleMs` (no
   * reader: the exit must not wait for ever); true when delivered.
   */
  async settled(idleMs: number): Promise<boolean> {
    while (!this.delivered) {
      const left = this.#progressAt + idleMs - Date.now();
      if (left <= 0) return false;
      let t: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([this.changed(), new Promise((r) => (t = setTimeout(r, left)))]);
      clearTimeout(t);
    }
    return true;
  }

  wake(): void {
    for (const w of this.#wake.splice(0)) w();
  }

  changed(): Promise<void> {
    return new Promise((r) => this.#wake.push(r));
  }

  #release(): void {
    for (const r of this.#room.splice(0)) r();
  }
}

/** How long CloseIO waits for an attached stdin stream to deliver what it carries. */
const STDIN_DRAIN_MS = 2000;

/**
 * Input of a process (stdin) from containerd. Data and the end of input reach
 * the sink strictly in arrival order, whichever of attach and delivery comes
 * first.
 */
export class InChannel {
  /** Input not yet taken by the sink, each with whoever waits for it to be. */
  #pending: { data: Uint8Array | null; taken: () => void }[] = [];
  #sink: ((data: Uint8Array | null) => Promise<void>) | undefined;
  #pump: Promise<void> = Promise.resolve();
  #ended = false;
  #dropped = false;
  #streamDone: (() => void) | undefined;
  #streamEnded: Promise<void> | undefined;
  owner: symbol | undefined;

  /** Where stdin goes; `null` means end of input. Buffered data is delivered first. */
  setSink(sink: (data: Uint8Array | null) => Promise<void>): Promise<void> {
    this.#sink = sink;
    return this.#drain();
  }

  /**
   * Passes input on; resolves once the sink took it. Before the process has a
   * sink, input waits here, and so does the stream that delivers it: it grants
   * its client more window only after, so what waits is one window at most.
   * The end of input resolves at once, queued behind that data.
   */
  deliver(data: Uint8Array | null): Promise<void> {
    if (this.#ended || this.#dropped) return Promise.resolve(); // input already ended
    this.#ended = data === null;
    const taken = new Promise<void>((r) => this.#pending.push({ data, taken: r }));
    const drained = this.#drain();
    // The end follows the data still queued, but CloseIO must not wait for a
    // process that does not read its stdin (as closing a pipe's writer does not).
    if (data === null) {
      drained.catch(() => {});
      return Promise.resolve();
    }
    return Promise.all([taken, drained]).then(() => {});
  }

  /** The process is gone for good: buffered input is let go, its senders released. */
  drop(): void {
    this.#dropped = true;
    for (const p of this.#pending.splice(0)) p.taken();
  }

  /** A stdin stream is attached; `close` waits for it to end. */
  streamOpened(): void {
    this.#streamEnded = new Promise((r) => (this.#streamDone = r));
  }

  streamClosed(): void {
    this.#streamDone?.();
  }

  /**
   * Ends input (CloseIO). containerd sends CloseIO on another connection than
   * the stdin stream, so it can overtake the last bytes of that stream: let an
   * attached stream finish first (it ends input itself), within a bound.
   */
  async close(): Promise<void> {
    if (this.#streamEnded) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        this.#streamEnded,
        new Promise((r) => (timer = setTimeout(r, STDIN_DRAIN_MS))),
      ]);
      clearTimeout(timer);
    }
    await this.deliver(null);
  }

  #drain(): Promise<void> {
    const run = this.#pump.then(async () => {
      while (this.#sink && this.#pending.length) {
        const p = this.#pending.shift()!;
        try {
          await this.#sink(p.data);
        } finally {
          p.taken();
        }
      }
    });
    this.#pump = run.catch(() => {});
    return run;
  }
}

/** Every stdio stream of a daemon, keyed by pod and stream id. */
export class StreamHub {
  #out = new Map<string, OutChannel>();
  #in = new Map<string, InChannel>();
  #log = log.with({ component: "streaming" });

  /** Adds the Streaming service to a ttrpc server. */
  register(server: TtrpcServer): void {
    // A pod that goes away takes its channels along, also those of ids no process ever used.
    server.onScopeClosed((scope) => this.removeScope(scope));
    const m = StreamingDefinition.methods.stream;
    server.register(StreamingDefinition.fullName, {
      [m.name]: {
        kind: "stream",
        streamingClient: true,
        streamingServer: true,
        handle: (s, ctx) => this.#serve(s, ctx),
      },
    });
  }

  /** The output channel of stream `id` of pod `scope`. */
  output(scope: string, id: string): OutChannel {
    const k = `${scope}/${id}`;
    let c = this.#out.get(k);
    if (!c) this.#out.set(k, c = new OutChannel());
    return c;
  }

  /** The input channel of stream `id` of pod `scope`. */
  input(scope: string, id: string): InChannel {
    const k = `${scope}/${id}`;
    let c = this.#in.get(k);
    if (!c) this.#in.set(k, c = new InChannel());
    return c;
  }

  /** Forgets every stream of pod `scope` (it was shut down). */
  removeScope(scope: string): void {
    const prefix = `${scope}/`;
    for (const [k, o] of this.#out) {
      if (k.startsWith(prefix)) {
        o.drop();
        this.#out.delete(k);
      }
    }
    for (const [k, i] of this.#in) {
      if (k.startsWith(prefix)) {
        i.drop();
        this.#in.delete(k);
      }
    }
  }

  /**
   * Waits until the output streams `ids` of pod `scope` were read to their
   * end, or made no progress for `idleMs`; false when some output was not read.
   */
  async delivered(scope: string, ids: readonly string[], idleMs: number): Promise<boolean> {
    const all = await Promise.all(ids.map((id) => this.output(scope, id).settled(idleMs)));
    return all.every((x) => x);
  }

  /** Forgets streams (their process was deleted); attached streams end. */
  remove(scope: string, ids: readonly string[]): void {
    for (const id of ids) {
      const k = `${scope}/${id}`;
      this.#out.get(k)?.drop();
      this.#out.delete(k);
      this.#in.get(k)?.drop();
      this.#in.delete(k);
    }
  }

  async #serve(s: ServerStream, ctx: CallContext): Promise<Uint8Array | undefined> {
    const it = s.received[Symbol.asyncIterator]();
    const first = await it.next();
    if (first.done) return undefined;
    const init = Any.decode(first.value);
    if (!init.typeUrl.endsWith("StreamInit")) {
      throw new InvalidArgumentError(
        `Expected StreamInit as the first message, got "${init.typeUrl}"`,
      );
    }
    const id = StreamInit.decode(init.value).id;
    if (!id) throw new InvalidArgumentError("StreamInit without an id");
    await s.send(any(TYPE_EMPTY, new Uint8Array()));
    this.#log.debug("stream attached", { sandbox: ctx.scope, stream: id });
    if (id.endsWith("-stdin")) return await this.#serveInput(s, it, this.input(ctx.scope, id));
    return await this.#serveOutput(s, it, this.output(ctx.scope, id), ctx);
  }

  async #serveOutput(
    s: ServerStream,
    it: AsyncIterator<Uint8Array>,
    ch: OutChannel,
    ctx: CallContext,
  ): Promise<undefined> {
    const me = Symbol();
    ch.owner = me;
    ch.wake(); // a previous attachment notices it was preempted
    // A stream the relay replayed to a restarted daemon carries no new
    // WindowUpdate (containerd granted its window to the old daemon and waits
    // for data before granting more), so every attachment starts with one
    // window of credit. containerd's reader tolerates data beyond its window.
    let credit = INITIAL_CREDIT;
    let closed = false;
    const readerDone = (async () => {
      for (let m = await it.next(); !m.done; m = await it.next()) {
        const a = Any.decode(m.value);
        if (a.typeUrl.endsWith("WindowUpdate")) credit += WindowUpdate.decode(a.value).update;
        ch.wake();
      }
    })().catch(() => {}).finally(() => {
      closed = true;
      ch.wake();
    });
    const aborted = () => ctx.signal.aborted || closed;
    ctx.signal.addEventListener("abort", () => ch.wake(), { once: true });
    for (;;) {
      if (ch.owner !== me) throw new FailedPreconditionError("Stream is preempted by a newer one");
      if (aborted()) {
        // The reader went away: a newer attachment may take over what is left.
        ch.owner = undefined;
        ch.wake();
        return undefined;
      }
      if (credit > 0 && !ch.empty) {
        const chunk = ch.take(Math.min(credit, CHUNK))!;
        try {
          await s.send(any(TYPE_DATA, Data.encode({ data: chunk }).finish()));
        } catch (e) {
          ch.unshift(chunk);
          throw e;
        }
        ch.onSent?.(chunk.length);
        credit -= chunk.length;
        continue;
      }
      if (ch.ended && ch.empty) {
        // EOF, then wait for the reader to close its side: only then has it
        // read everything (see OutChannel). A dropped channel has no reader to wait for.
        await s.end();
        if (ch.owner === me) {
          let t: ReturnType<typeof setTimeout> | undefined;
          await Promise.race([readerDone, new Promise((r) => (t = setTimeout(r, ACK_MS)))]);
          clearTimeout(t);
        }
        if (ch.owner === me) ch.owner = undefined;
        ch.wake();
        return undefined;
      }
      await ch.changed();
    }
  }

  async #serveInput(
    s: ServerStream,
    it: AsyncIterator<Uint8Array>,
    ch: InChannel,
  ): Promise<undefined> {
    const me = Symbol();
    ch.owner = me;
    ch.streamOpened();
    try {
      await s.send(any(TYPE_WINDOW, WindowUpdate.encode({ update: STDIN_WINDOW }).finish()));
      for (let m = await it.next(); !m.done; m = await it.next()) {
        if (ch.owner !== me) {
          throw new FailedPreconditionError("Stream is preempted by a newer one");
        }
        const a = Any.decode(m.value);
        if (!a.typeUrl.endsWith("Data")) continue;
        const data = Data.decode(a.value).data;
        await ch.deliver(data);
        await s.send(any(TYPE_WINDOW, WindowUpdate.encode({ update: data.length }).finish()));
      }
      if (ch.owner === me) await ch.deliver(null);
    } finally {
      if (ch.owner === me) ch.streamClosed();
    }
    return undefined;
  }
}
