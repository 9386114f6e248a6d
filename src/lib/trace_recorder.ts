/**
 * A trace backend that keeps finished spans in memory for another process to
 * take (`drain`): the guest agent has no network to a collector, so the host
 * sandboxer fetches its spans over the agent channel and exports them. Only
 * spans of a trace the host started (a remote parent in the request) are
 * kept, and at most `limit` of them (the oldest go first).
 *
 * @module
 */
import {
  parseTraceparent,
  type SpanAttributes,
  type SpanHandle,
  type TraceBackend,
} from "./trace.ts";

/** A finished span, as it crosses from the guest to the host. */
export interface RecordedSpan {
  readonly traceId: string;
  readonly spanId: string;
  readonly parentSpanId?: string;
  readonly name: string;
  /** Epoch milliseconds (fractional). */
  readonly startMs: number;
  readonly endMs: number;
  readonly attributes: SpanAttributes;
  readonly error?: string;
}

/** Whether `x` (from another process, e.g. a guest agent's Drain) is a well-formed span. */
export function isRecordedSpan(x: unknown): x is RecordedSpan {
  if (typeof x !== "object" || x === null) return false;
  const s = x as Record<string, unknown>;
  const id = (v: unknown, n: number) =>
    typeof v === "string" && v.length === n && /^[0-9a-f]+$/.test(v) && !/^0+$/.test(v);
  return id(s.traceId, 32) && id(s.spanId, 16) &&
    (s.parentSpanId === undefined || id(s.parentSpanId, 16)) &&
    typeof s.name === "string" && s.name.length <= 256 &&
    Number.isFinite(s.startMs) && Number.isFinite(s.endMs) &&
    (s.error === undefined || typeof s.error === "string") &&
    typeof s.attributes === "object" && s.attributes !== null && !Array.isArray(s.attributes) &&
    Object.values(s.attributes).every((v) => ["string", "number", "boolean"].includes(typeof v));
}

const hex = (bytes: number) =>
  Array.from(crypto.getRandomValues(new Uint8Array(bytes)), (b) => b.toString(16).padStart(2, "0"))
    .join("");

/** Records spans until drained. */
export class SpanRecorder implements TraceBackend {
  #spans: RecordedSpan[] = [];
  #dropped = 0;
  readonly #limit: number;

  constructor(limit = 1000) {
    this.#limit = limit;
  }

  start(
    name: string,
    attributes: SpanAttributes,
    parent: SpanHandle | undefined,
    traceparent: string | undefined,
  ): SpanHandle {
    const from = parseTraceparent(parent?.traceparent ?? traceparent);
    const spanId = hex(8);
    const startMs = performance.timeOrigin + performance.now();
    const attrs: SpanAttributes = { ...attributes };
    if (!from) {
      // Not part of a host's trace: nothing to record, but children still need a context.
      return { traceparent: "", setAttributes: () => {}, end: () => {} };
    }
    return {
      traceparent: `00-${from.traceId}-${spanId}-01`,
      setAttributes: (a) => Object.assign(attrs, a),
      end: (error) => {
        this.#keep({
          traceId: from.traceId,
          spanId,
          parentSpanId: from.spanId,
          name,
          startMs,
          endMs: performance.timeOrigin + performance.now(),
          attributes: attrs,
          ...(error !== undefined
            ? { error: error instanceof Error ? error.message : String(error) }
            : {}),
        });
      },
    };
  }

  #keep(span: RecordedSpan): void {
    this.#spans.push(span);
    if (this.#spans.length > this.#limit) {
      this.#spans.shift();
      this.#dropped++;
    }
  }

  /** The spans finished since the last drain, and how many were dropped meanwhile. */
  drain(): { spans: RecordedSpan[]; dropped: number } {
    const out = { spans: this.#spans, dropped: this.#dropped };
    this.#spans = [];
    this.#dropped = 0;
    return out;
  }
}
