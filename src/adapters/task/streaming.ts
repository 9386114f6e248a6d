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
import { log } from "../../log.ts";
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

/** Output of a process (stdout/stderr) on its way to containerd. */
class OutChannel {
  #queue: Uint8Array[] = [];
  #ended = false;
  #wake: (() => void) | undefined;
  /** The attachment that may send; a newer one preempts. */
  owner: symbol | undefined;

  push(data: Uint8Array): void {
    if (this.#ended || !data.length) return;
    this.#queue.push(data);
    this.wake();
  }

  end(): void {
    this.#ended = true;
    this.wake();
  }

  get ended(): boolean {
    return this.#ended;
  }

  /** Takes up to `max` bytes from the queue. */
  take(max: number): Uint8Array | undefined {
    const head = this.#queue[0];
    if (!head) return undefined;
    if (head.length <= max) return this.#queue.shift();
    this.#queue[0] = head.subarray(max);
    return head.subarray(0, max);
  }

  /** Puts bytes back at the front (a send that failed). */
  unshift(data: Uint8Array): void {
    this.#queue.unshift(data);
  }

  get empty(): boolean {
    return this.#queue.length === 0;
  }

  wake(): void {
    const w = this.#wake;
    this.#wake = undefined;
    w?.();
  }

  changed(): Promise<void> {
    return new Promise((r) => (this.#wake = r));
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
  #pending: (Uint8Array | null)[] = [];
  #sink: ((data: Uint8Array | null) => Promise<void>) | undefined;
  #pump: Promise<void> = Promise.resolve();
  #ended = false;
  #streamDone: (() => void) | undefined;
  #streamEnded: Promise<void> | undefined;
  owner: symbol | undefined;

  /** Where stdin goes; `null` means end of input. Buffered data is delivered first. */
  setSink(sink: (data: Uint8Array | null) => Promise<void>): Promise<void> {
    this.#sink = sink;
    return this.#drain();
  }

  deliver(data: Uint8Array | null): Promise<void> {
    if (this.#ended) return Promise.resolve(); // input already ended (stream EOF and CloseIO both end it)
    this.#ended = data === null;
    this.#pending.push(data);
    return this.#drain();
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
      while (this.#sink && this.#pending.length) await this.#sink(this.#pending.shift()!);
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

  /** Forgets streams (their process was deleted); attached streams end. */
  remove(scope: string, ids: readonly string[]): void {
    for (const id of ids) {
      const k = `${scope}/${id}`;
      const o = this.#out.get(k);
      if (o) {
        o.owner = undefined;
        o.end();
      }
      this.#out.delete(k);
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
    (async () => {
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
      if (aborted()) return undefined;
      if (credit > 0 && !ch.empty) {
        const chunk = ch.take(Math.min(credit, CHUNK))!;
        try {
          await s.send(any(TYPE_DATA, Data.encode({ data: chunk }).finish()));
        } catch (e) {
          ch.unshift(chunk);
          throw e;
        }
        credit -= chunk.length;
        continue;
      }
      if (ch.ended && ch.empty) {
        if (ch.owner === me) ch.owner = undefined;
        return undefined; // ends the stream: containerd sees EOF
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
