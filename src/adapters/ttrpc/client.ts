/**
 * A ttrpc client over one Deno stream connection: concurrent unary calls and
 * streams, odd increasing stream ids, per-call deadlines and metadata.
 *
 * @module
 */
import { Code, UnavailableError } from "../../domain/errors.ts";
import { currentTraceparent } from "../../lib/trace.ts";
import { Request, Response } from "../../gen/ttrpc/request.ts";
import { fromStatus } from "../rpc_status.ts";
import type { ByteStream } from "./frame.ts";
import { encodeFrame, Flag, FrameDecoder, MessageType } from "./frame.ts";
import { AsyncQueue } from "./queue.ts";
import { writeAll } from "./server.ts";

/** Options of one call. */
export interface CallOptions {
  /** Deadline sent to the server and enforced locally. */
  readonly timeoutMs?: number;
  readonly metadata?: Record<string, string>;
  readonly signal?: AbortSignal;
}

/** A client-side stream. */
export interface ClientStream {
  /** Messages from the server until it closes; rejects with the error status. */
  readonly received: AsyncIterable<Uint8Array>;
  send(payload: Uint8Array): Promise<void>;
  /** Tells the server no more messages will come. */
  closeSend(): Promise<void>;
}

interface Pending {
  unary?: { resolve(p: Uint8Array): void; reject(e: unknown): void };
  stream?: AsyncQueue<Uint8Array>;
}

/** A ttrpc client. */
export class TtrpcClient {
  #conn: ByteStream;
  #decoder = new FrameDecoder();
  #nextId = 1;
  #pending = new Map<number, Pending>();
  #writes: Promise<void> = Promise.resolve();
  #closed = false;
  #closedReason: unknown;
  readonly done: Promise<void>;

  constructor(conn: ByteStream) {
    this.#conn = conn;
    this.done = this.#readLoop();
  }

  /** Connects to a unix socket. */
  static async connectUnix(path: string): Promise<TtrpcClient> {
    try {
      return new TtrpcClient(await Deno.connect({ transport: "unix", path }));
    } catch (e) {
      throw new UnavailableError(
        `Cannot connect to ttrpc socket "${path}": ${(e as Error).message}`,
        {
          cause: e,
        },
      );
    }
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** A unary call: sends the request payload, resolves with the response payload. */
  call(
    service: string,
    method: string,
    payload: Uint8Array,
    opts: CallOptions = {},
  ): Promise<Uint8Array> {
    const id = this.#allocate();
    return new Promise<Uint8Array>((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const finish = () => {
        clearTimeout(timer);
        opts.signal?.removeEventListener("abort", onAbort);
        this.#pending.delete(id);
      };
      const onAbort = () => {
        finish();
        reject(opts.signal?.reason ?? new DOMException("aborted", "AbortError"));
      };
      this.#pending.set(id, {
        unary: {
          resolve: (p) => {
            finish();
            resolve(p);
          },
          reject: (e) => {
            finish();
            reject(e);
          },
        },
      });
      if (opts.timeoutMs !== undefined) {
        timer = setTimeout(() => {
          finish();
          reject(fromStatus(Code.DEADLINE_EXCEEDED, `${service}/${method}: deadline exceeded`));
        }, opts.timeoutMs);
      }
      if (opts.signal?.aborted) return onAbort();
      opts.signal?.addEventListener("abort", onAbort, { once: true });
      this.#write(
        encodeFrame(id, MessageType.REQUEST, 0, this.#request(service, method, payload, opts)),
      )
        .catch((e) => {
          finish();
          reject(this.#unavailable(e));
        });
    });
  }

  /**
   * Opens a stream. With `streamingClient` the request carries no payload
   * and messages follow with `send`; otherwise `payload` is the only input.
   */
  async stream(
    service: string,
    method: string,
    init: { streamingClient: boolean; payload?: Uint8Array } & CallOptions,
  ): Promise<ClientStream> {
    const id = this.#allocate();
    const inbox = new AsyncQueue<Uint8Array>();
    this.#pending.set(id, { stream: inbox });
    const flags = init.streamingClient ? Flag.REMOTE_OPEN : Flag.REMOTE_CLOSED;
    const body = this.#request(service, method, init.payload ?? new Uint8Array(), init);
    try {
      await this.#write(encodeFrame(id, MessageType.REQUEST, flags, body));
    } catch (e) {
      this.#pending.delete(id);
      throw this.#unavailable(e);
    }
    let sendClosed = !init.streamingClient;
    return {
      received: inbox,
      send: (p) => {
        if (sendClosed) return Promise.reject(new Error("stream send side is closed"));
        return this.#write(encodeFrame(id, MessageType.DATA, 0, p));
      },
      closeSend: () => {
        if (sendClosed) return Promise.resolve();
        sendClosed = true;
        return this.#write(
          encodeFrame(id, MessageType.DATA, Flag.REMOTE_CLOSED | Flag.NO_DATA, new Uint8Array()),
        );
      },
    };
  }

  /** Closes the connection; pending calls fail with UNAVAILABLE. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch { /* already closed */ }
  }

  #allocate(): number {
    if (this.#closed) throw this.#unavailable(this.#closedReason);
    const id = this.#nextId;
    this.#nextId += 2;
    return id;
  }

  #request(service: string, method: string, payload: Uint8Array, opts: CallOptions): Uint8Array {
    const metadata = Object.entries(opts.metadata ?? {}).map(([key, value]) => ({ key, value }));
    // The current span's context goes with the call (W3C trace context, as containerd sends it).
    const traceparent = currentTraceparent();
    if (traceparent && !opts.metadata?.traceparent) {
      metadata.push({ key: "traceparent", value: traceparent });
    }
    return Request.encode({
      service,
      method,
      payload,
      timeoutNano: opts.timeoutMs ? BigInt(Math.round(opts.timeoutMs * 1e6)) : 0n,
      metadata,
    }).finish();
  }

  #write(bytes: Uint8Array): Promise<void> {
    const w = this.#writes.then(() => writeAll(this.#conn, bytes));
    this.#writes = w.catch(() => {});
    return w;
  }

  #unavailable(cause: unknown): UnavailableError {
    const msg = cause instanceof Error ? cause.message : "connection closed";
    return new UnavailableError(`ttrpc connection closed: ${msg}`, { cause });
  }

  async #readLoop(): Promise<void> {
    const buf = new Uint8Array(64 * 1024);
    try {
      for (;;) {
        const n = await this.#conn.read(buf);
        if (n === null) break;
        this.#decoder.push(buf.subarray(0, n));
        for (let d = this.#decoder.next(); d; d = this.#decoder.next()) {
          if (d.kind === "oversized") {
            this.#fail(
              d.streamId,
              fromStatus(Code.RESOURCE_EXHAUSTED, `response of ${d.length} bytes is too large`),
            );
            continue;
          }
          this.#onFrame(d.frame.streamId, d.frame.type, d.frame.flags, d.frame.payload);
        }
      }
    } catch (e) {
      this.#closedReason = e;
    } finally {
      this.#closed = true;
      try {
        this.#conn.close();
      } catch { /* already closed */ }
      for (const id of [...this.#pending.keys()]) {
        this.#fail(id, this.#unavailable(this.#closedReason));
      }
    }
  }

  #onFrame(id: number, type: number, flags: number, payload: Uint8Array): void {
    const p = this.#pending.get(id);
    if (!p) return;
    if (type === MessageType.RESPONSE) {
      let res: Response;
      try {
        res = Response.decode(payload);
      } catch (e) {
        this.#fail(
          id,
          fromStatus(Code.INTERNAL, `undecodable ttrpc response: ${(e as Error).message}`),
        );
        return;
      }
      const code = res.status?.code ?? 0;
      if (code !== 0) {
        this.#fail(id, fromStatus(code, res.status?.message ?? ""));
        return;
      }
      if (p.unary) p.unary.resolve(res.payload);
      else {
        if (res.payload.length) p.stream?.push(res.payload);
        p.stream?.close();
        this.#pending.delete(id);
      }
      return;
    }
    if (type === MessageType.DATA && p.stream) {
      if (!(flags & Flag.NO_DATA)) p.stream.push(payload);
      if (flags & Flag.REMOTE_CLOSED) {
        p.stream.close();
        this.#pending.delete(id);
      }
    }
  }

  #fail(id: number, err: unknown): void {
    const p = this.#pending.get(id);
    if (!p) return;
    this.#pending.delete(id);
    p.unary?.reject(err);
    p.stream?.close(err);
  }
}
