/**
 * ttrpc framing (containerd/ttrpc PROTOCOL.md): a 10-byte big-endian header
 * — payload length u32, stream id u32, type u8, flags u8 — then the payload,
 * at most 4 MiB.
 *
 * @module
 */
import { ResourceExhaustedError } from "../../domain/errors.ts";
import { ByteQueue } from "./byte_queue.ts";

/** Header size in bytes. */
export const HEADER_SIZE = 10;
/** Largest payload either side may send. */
export const MAX_PAYLOAD = 4 << 20;

/** Message types. */
export const MessageType = { REQUEST: 1, RESPONSE: 2, DATA: 3 } as const;

/** Flag bits. Request: REMOTE_CLOSED / REMOTE_OPEN; Data: REMOTE_CLOSED / NO_DATA. */
export const Flag = { REMOTE_CLOSED: 0x1, REMOTE_OPEN: 0x2, NO_DATA: 0x4 } as const;

/** One decoded frame. */
export interface Frame {
  readonly streamId: number;
  readonly type: number;
  readonly flags: number;
  readonly payload: Uint8Array;
}

/** Encodes a frame; refuses payloads over `MAX_PAYLOAD`. */
export function encodeFrame(
  streamId: number,
  type: number,
  flags: number,
  payload: Uint8Array,
): Uint8Array {
  if (payload.length > MAX_PAYLOAD) {
    throw new ResourceExhaustedError(
      `Cannot send ttrpc message of ${payload.length} bytes: the limit is ${MAX_PAYLOAD}`,
    );
  }
  const out = new Uint8Array(HEADER_SIZE + payload.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, payload.length);
  v.setUint32(4, streamId >>> 0);
  v.setUint8(8, type);
  v.setUint8(9, flags);
  out.set(payload, HEADER_SIZE);
  return out;
}

/** What the decoder yields: a frame, or the header of a frame too large to accept. */
export type Decoded =
  | { kind: "frame"; frame: Frame }
  | { kind: "oversized"; streamId: number; type: number; length: number };

/**
 * Incremental decoder for a byte stream. Oversized frames are reported once
 * and their payload skipped as it arrives, so one bad message does not end
 * the connection (this is what containerd's own server does). Work is linear
 * in the bytes pushed (see ByteQueue); pushed chunks are copied, so callers
 * may reuse their read buffers.
 */
export class FrameDecoder {
  #q = new ByteQueue();
  #skip = 0;

  /** Appends received bytes. */
  push(chunk: Uint8Array): void {
    if (this.#skip > 0) {
      const n = Math.min(this.#skip, chunk.length);
      this.#skip -= n;
      chunk = chunk.subarray(n);
    }
    this.#q.push(chunk.slice());
  }

  /** Bytes buffered but not yet decoded. */
  get buffered(): number {
    return this.#q.length;
  }

  /** Bytes of an oversized payload still to be skipped. */
  get skipping(): number {
    return this.#skip;
  }

  /** The next complete frame, or undefined until more bytes arrive. */
  next(): Decoded | undefined {
    if (this.#skip > 0 || this.#q.length < HEADER_SIZE) return undefined;
    const h = this.#q.peek(HEADER_SIZE);
    const v = new DataView(h.buffer, h.byteOffset, HEADER_SIZE);
    const length = v.getUint32(0);
    const streamId = v.getUint32(4);
    const type = v.getUint8(8);
    const flags = v.getUint8(9);
    if (length > MAX_PAYLOAD) {
      this.#q.skip(HEADER_SIZE);
      const dropped = Math.min(this.#q.length, length);
      this.#q.skip(dropped);
      this.#skip = length - dropped;
      return { kind: "oversized", streamId, type, length };
    }
    if (this.#q.length < HEADER_SIZE + length) return undefined;
    this.#q.skip(HEADER_SIZE);
    const payload = this.#q.take(length);
    return { kind: "frame", frame: { streamId, type, flags, payload } };
  }
}

/**
 * What ttrpc runs over: a unix or vsock connection, or a character device
 * such as a guest's virtio-serial port.
 */
export interface ByteStream {
  read(p: Uint8Array): Promise<number | null>;
  write(p: Uint8Array): Promise<number>;
  close(): void;
}
