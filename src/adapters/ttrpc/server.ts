/**
 * A ttrpc server: unary and streaming methods over any Deno stream
 * connection (unix sockets, vsock, a virtio-serial port).
 *
 * Behaviour follows containerd's Go server where the protocol leaves room:
 * errors are answered on the stream that caused them (bad stream id,
 * undecodable request, unknown service, oversized frame) and the connection
 * keeps serving; a finished server stream ends with a Data frame flagged
 * remote-closed, errors with a Response frame.
 *
 * @module
 */
import { Code } from "../../domain/errors.ts";
import { traced } from "../../lib/trace.ts";
import { Request, Response } from "../../gen/ttrpc/request.ts";
import { log } from "../../lib/log.ts";
import { type RpcStatus, toStatus } from "../rpc_status.ts";
import type { ByteStream } from "./frame.ts";
import { encodeFrame, Flag, FrameDecoder, MAX_PAYLOAD, MessageType } from "./frame.ts";
import { AsyncQueue } from "./queue.ts";

/**
 * Bytes of answers a connection may have waiting to be written before the
 * server stops reading its requests. A client that pipelines requests and
 * never reads the answers would otherwise make the daemon hold every answer
 * (60 answers of 3 MiB took a daemon from 330 to 584 MiB). Once the queue
 * drains below the bound, reading resumes, so a client that reads always
 * makes progress. More than one largest frame, so a single answer never
 * stops the connection by itself.
 */
export const MAX_QUEUED_WRITE_BYTES = 8 << 20;

/** Request metadata: lower-cased keys, possibly repeated. */
export type Metadata = Map<string, string[]>;

/** What a handler learns about its call. */
export interface CallContext {
  readonly service: string;
  readonly method: string;
  readonly metadata: Metadata;
  /** Aborted when the deadline passes or the connection closes. */
  readonly signal: AbortSignal;
  /** Set by `serve`: e.g. the sandbox id a per-pod endpoint serves. */
  readonly scope: string;
  /** Runs `fn` once the call's answer is written (or can no longer be). */
  readonly afterResponse?: (fn: () => void) => void;
}

/** A server-side stream. */
export interface ServerStream {
  /** Messages from the client, until it closes its side. */
  readonly received: AsyncIterable<Uint8Array>;
  /** Sends one message to the client. */
  send(payload: Uint8Array): Promise<void>;
  /**
   * Ends the server's side of a streaming-server method before the handler
   * returns (the handler may then wait for the client to close its side);
   * the handler's result is not sent.
   */
  end(): Promise<void>;
}

/** A method of a service. */
export type MethodHandler =
  | { kind: "unary"; handle(payload: Uint8Array, ctx: CallContext): Promise<Uint8Array> }
  | {
    kind: "stream";
    streamingClient: boolean;
    streamingServer: boolean;
    handle(stream: ServerStream, ctx: CallContext): Promise<Uint8Array | undefined>;
  };

/** Serves registered services on any number of connections. */
export class TtrpcServer {
  /** Called on every request (the daemon's idle memory reclaimer listens). */
  onCall: (() => void) | undefined;
  #services = new Map<string, Map<string, MethodHandler>>();
  #conns = new Set<ServerConnection>();
  #listeners = new Set<Deno.Listener>();
  #scopeClosed: ((scope: string) => void)[] = [];
  #log = log.with({ component: "ttrpc" });
  #maxQueuedBytes: number;

  /** `maxQueuedBytes`: unsent answer bytes past which a connection is not read. */
  constructor(opts: { maxQueuedBytes?: number } = {}) {
    this.#maxQueuedBytes = opts.maxQueuedBytes ?? MAX_QUEUED_WRITE_BYTES;
  }

  /** Adds a service; `methods` is keyed by the bare RPC name (e.g. "Create"). */
  register(service: string, methods: Record<string, MethodHandler>): void {
    this.#services.set(service, new Map(Object.entries(methods)));
  }

  /** Looks up a method. */
  lookup(service: string, method: string): MethodHandler | RpcStatus {
    const s = this.#services.get(service);
    if (!s) return { code: Code.UNIMPLEMENTED, message: `service ${service}` };
    return s.get(method) ?? { code: Code.UNIMPLEMENTED, message: `method ${method}` };
  }

  /** Accepts connections until the listener closes. */
  async serve(listener: Deno.Listener, scope = ""): Promise<void> {
    this.#listeners.add(listener);
    try {
      for await (const conn of listener) this.handle(conn, scope);
    } catch (e) {
      if (!(e instanceof Deno.errors.BadResource)) this.#log.warn("accept failed", { error: e });
    } finally {
      this.#listeners.delete(listener);
    }
  }

  /**
   * Serves one already-accepted connection; resolves when it closes.
   * `initial` holds bytes already read from it (after a preamble).
   */
  handle(conn: ByteStream, scope = "", initial?: Uint8Array): Promise<void> {
    const c = new ServerConnection(this, conn, scope, this.#maxQueuedBytes);
    if (initial?.length) c.prime(initial);
    this.#conns.add(c);
    return c.run().finally(() => this.#conns.delete(c));
  }

  /** Closes the connections accepted with `scope` (a pod's endpoint going away). */
  closeScope(scope: string): void {
    for (const c of this.#conns) if (c.scope === scope) c.close();
    for (const f of this.#scopeClosed) f(scope);
  }

  /** Calls `f` whenever a scope is closed (services drop what they hold for the pod). */
  onScopeClosed(f: (scope: string) => void): void {
    this.#scopeClosed.push(f);
  }

  /** Stops accepting and closes every connection. */
  close(): void {
    for (const l of this.#listeners) {
      try {
        l.close();
      } catch { /* already closed */ }
    }
    for (const c of this.#conns) c.close();
  }
}

interface StreamState {
  readonly inbox: AsyncQueue<Uint8Array>;
  /** Bytes of messages in `inbox` the handler has not taken yet. */
  unread: number;
}

/**
 * Bytes of stream messages a connection may hold that their handlers have
 * not taken (a client that sends stdin faster than the process reads, or
 * ignores its window) before it is read no further. containerd gives each
 * stdio stream a connection of its own, so only that stream waits.
 */
export const MAX_UNREAD_STREAM_BYTES = 4 << 20;

/**
 * A connection's read buffer: 1 KiB to start (calls and answers of the Task API are small, and
 * an idle connection costs its buffer), four times larger each time a read fills it, up to 16 KiB.
 */
const READ_BUFFER_MIN = 1024;
const READ_BUFFER_MAX = 16 * 1024;

class ServerConnection {
  readonly scope: string;
  #server: TtrpcServer;
  #conn: ByteStream;
  #decoder = new FrameDecoder();
  #lastStreamId = 0;
  #streams = new Map<number, StreamState>();
  #writes: Promise<void> = Promise.resolve();
  /** Bytes handed to `#write` and not yet written. */
  #queued = 0;
  /** Bytes of stream messages received and not yet taken by their handlers. */
  #unread = 0;
  #maxQueued: number;
  /** Resolves the read loop's wait for the queue to drain. */
  #drained: (() => void) | undefined;
  #closed = new AbortController();
  #log = log.with({ component: "ttrpc" });

  constructor(server: TtrpcServer, conn: ByteStream, scope: string, maxQueued: number) {
    this.#server = server;
    this.#conn = conn;
    this.scope = scope;
    this.#maxQueued = maxQueued;
  }

  /** Feeds bytes that were read before this connection was handed over. */
  prime(bytes: Uint8Array): void {
    this.#decoder.push(bytes);
  }

  close(): void {
    if (this.#closed.signal.aborted) return;
    this.#closed.abort(new DOMException("connection closed", "AbortError"));
    this.#wake();
    try {
      this.#conn.close();
    } catch { /* already closed */ }
  }

  async run(): Promise<void> {
    // Small while the connection is idle (containerd keeps one per pod), larger once reads fill it.
    let buf = new Uint8Array(READ_BUFFER_MIN);
    try {
      while (!this.#closed.signal.aborted) {
        for (let d = this.#decoder.next(); d; d = this.#decoder.next()) {
          if (d.kind === "oversized") {
            this.#sendStatus(d.streamId, {
              code: Code.RESOURCE_EXHAUSTED,
              message: `message length ${d.length} exceeds maximum message size of ${MAX_PAYLOAD}`,
            });
            continue;
          }
          this.#onFrame(d.frame.streamId, d.frame.type, d.frame.flags, d.frame.payload);
        }
        if (this.#queued > this.#maxQueued || this.#unread > MAX_UNREAD_STREAM_BYTES) {
          // The client does not read its answers, or its streams' handlers do not
          // keep up: read no more from it until they do (answers of calls already
          // read still get written).
          this.#log.debug("connection paused", { queued: this.#queued, unread: this.#unread });
          await new Promise<void>((resolve) => (this.#drained = resolve));
          continue;
        }
        const n = await this.#conn.read(buf);
        if (n === null) break;
        this.#decoder.push(buf.subarray(0, n));
        if (n === buf.length && buf.length < READ_BUFFER_MAX) buf = new Uint8Array(buf.length * 4);
        // and small again after a short read: the next read may be the one that waits for
        // the rest of the pod's life (the decoder copied what it needs).
        else if (n < READ_BUFFER_MIN && buf.length > READ_BUFFER_MIN) {
          buf = new Uint8Array(READ_BUFFER_MIN);
        }
      }
    } catch (e) {
      if (!this.#closed.signal.aborted && !isDisconnect(e)) {
        this.#log.debug("connection read failed", { error: e });
      }
    } finally {
      for (const s of this.#streams.values()) s.inbox.close();
      this.#streams.clear();
      this.close();
    }
  }

  #onFrame(streamId: number, type: number, flags: number, payload: Uint8Array): void {
    if (streamId % 2 !== 1) {
      this.#sendStatus(streamId, {
        code: Code.INVALID_ARGUMENT,
        message: "StreamID must be odd for client initiated streams",
      });
      return;
    }
    if (type === MessageType.DATA) {
      const s = this.#streams.get(streamId);
      if (!s) {
        this.#sendStatus(streamId, {
          code: Code.INVALID_ARGUMENT,
          message: "StreamID is no longer active",
        });
        return;
      }
      if (!(flags & Flag.NO_DATA) && !s.inbox.closed) {
        s.inbox.push(payload);
        s.unread += payload.length;
        this.#unread += payload.length;
      }
      if (flags & Flag.REMOTE_CLOSED) s.inbox.close();
      return;
    }
    if (type !== MessageType.REQUEST) return; // reserved for future use: ignored, as Go does
    if (streamId <= this.#lastStreamId) {
      this.#sendStatus(streamId, {
        code: Code.INVALID_ARGUMENT,
        message: "StreamID cannot be re-used and must increment",
      });
      return;
    }
    this.#lastStreamId = streamId;
    let req: Request;
    try {
      req = Request.decode(payload);
    } catch (e) {
      this.#sendStatus(streamId, {
        code: Code.INVALID_ARGUMENT,
        message: `unmarshal request error: ${(e as Error).message}`,
      });
      return;
    }
    this.#server.onCall?.();
    const method = this.#server.lookup(req.service, req.method);
    if (!("kind" in method)) {
      this.#sendStatus(streamId, method);
      return;
    }
    const ctx = this.#context(req);
    if (method.kind === "unary") {
      traced(
        `${req.service}/${req.method}`,
        this.scope ? { "kuasar.pod": this.scope } : {},
        () => method.handle(req.payload, ctx),
        ctx.metadata.get("traceparent")?.[0],
      ).then(
        (out) => this.#respond(streamId, { code: Code.OK, message: "" }, out),
        (e) => this.#respond(streamId, toStatus(e), new Uint8Array()),
      ).catch(() => {
        // The connection went away before the answer: nobody is left to tell.
      }).finally(() => ctx.dispose());
      return;
    }
    const inbox = new AsyncQueue<Uint8Array>();
    const state: StreamState = { inbox, unread: 0 };
    this.#streams.set(streamId, state);
    if (req.payload.length > 0 || !method.streamingClient) inbox.push(req.payload);
    if (!method.streamingClient || (flags & Flag.REMOTE_CLOSED)) inbox.close();
    // What the handler takes no longer counts against the connection.
    const taken = (n: number) => {
      n = Math.min(n, state.unread);
      state.unread -= n;
      this.#unread -= n;
      this.#wake();
    };
    const received: AsyncIterable<Uint8Array> = {
      [Symbol.asyncIterator]: () => {
        const it = inbox[Symbol.asyncIterator]();
        return {
          next: async () => {
            const r = await it.next();
            if (!r.done) taken(r.value.length);
            return r;
          },
        };
      },
    };
    let ended = false;
    const stream: ServerStream = {
      received,
      send: (p) => {
        if (ctx.signal.aborted) return Promise.reject(ctx.signal.reason);
        if (ended) return Promise.reject(new Error("the stream's sending side has ended"));
        return this.#write(encodeFrame(streamId, MessageType.DATA, 0, p));
      },
      end: () => {
        if (ended || !method.streamingServer) return Promise.resolve();
        ended = true;
        const f = Flag.REMOTE_CLOSED | Flag.NO_DATA;
        return this.#write(encodeFrame(streamId, MessageType.DATA, f, new Uint8Array()));
      },
    };
    method.handle(stream, ctx).then(
      (out) => {
        if (ended) return;
        if (method.streamingServer) {
          const f = Flag.REMOTE_CLOSED | (out ? 0 : Flag.NO_DATA);
          return this.#write(encodeFrame(streamId, MessageType.DATA, f, out ?? new Uint8Array()));
        }
        return this.#respond(streamId, { code: Code.OK, message: "" }, out ?? new Uint8Array());
      },
      (e) => this.#respond(streamId, toStatus(e), new Uint8Array()),
    ).catch(() => {}).finally(() => {
      inbox.close();
      taken(state.unread); // what the handler left behind is dropped with it
      this.#streams.delete(streamId);
      ctx.dispose();
    });
  }

  #context(req: Request): CallContext & { dispose(): void } {
    const metadata: Metadata = new Map();
    for (const kv of req.metadata) {
      const k = kv.key.toLowerCase();
      const list = metadata.get(k);
      if (list) list.push(kv.value);
      else metadata.set(k, [kv.value]);
    }
    const ac = new AbortController();
    const onClose = () => ac.abort(this.#closed.signal.reason);
    this.#closed.signal.addEventListener("abort", onClose, { once: true });
    let timer: ReturnType<typeof setTimeout> | undefined;
    if (req.timeoutNano > 0n) {
      const ms = Number(req.timeoutNano / 1_000_000n);
      timer = setTimeout(() => ac.abort(new DOMException("deadline exceeded", "TimeoutError")), ms);
    }
    const after: (() => void)[] = [];
    return {
      service: req.service,
      method: req.method,
      metadata,
      signal: ac.signal,
      scope: this.scope,
      afterResponse: (fn) => after.push(fn),
      dispose: () => {
        clearTimeout(timer);
        this.#closed.signal.removeEventListener("abort", onClose);
        for (const fn of after) fn();
      },
    };
  }

  #respond(streamId: number, status: RpcStatus, payload: Uint8Array): Promise<void> {
    const body = Response.encode({
      status: { code: status.code, message: status.message, details: [] },
      payload,
    }).finish();
    if (body.length > MAX_PAYLOAD) {
      return this.#respond(streamId, {
        code: Code.RESOURCE_EXHAUSTED,
        message: `response of ${body.length} bytes exceeds maximum message size of ${MAX_PAYLOAD}`,
      }, new Uint8Array());
    }
    return this.#write(encodeFrame(streamId, MessageType.RESPONSE, 0, body));
  }

  #sendStatus(streamId: number, status: RpcStatus): void {
    this.#respond(streamId, status, new Uint8Array()).catch(() => {});
  }

  /** Frames are written one at a time, in order. */
  #write(bytes: Uint8Array): Promise<void> {
    this.#queued += bytes.length;
    const w = this.#writes.then(() => writeAll(this.#conn, bytes)).finally(() => {
      this.#queued -= bytes.length;
      if (this.#queued <= this.#maxQueued) this.#wake();
    });
    this.#writes = w.catch(() => {});
    return w;
  }

  #wake(): void {
    const d = this.#drained;
    this.#drained = undefined;
    d?.();
  }
}

/** Writes every byte (Deno's `write` may write less than asked). */
export async function writeAll(conn: ByteStream, bytes: Uint8Array): Promise<void> {
  let off = 0;
  while (off < bytes.length) off += await conn.write(bytes.subarray(off));
}

function isDisconnect(e: unknown): boolean {
  return e instanceof Deno.errors.ConnectionReset || e instanceof Deno.errors.BrokenPipe ||
    e instanceof Deno.errors.BadResource || e instanceof Deno.errors.Interrupted;
}
