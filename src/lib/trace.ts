/**
 * Tracing, as the code sees it: `traced(name, attributes, fn)` runs `fn` in
 * a span when a backend is installed, and just runs it otherwise (the
 * default: one check per call). The current span follows async calls
 * (AsyncLocalStorage), so spans nest as the calls do; `currentTraceparent()`
 * is the W3C `traceparent` to hand to the next process (ttrpc metadata).
 *
 * The backend is set by whoever exports: the sandboxer's OpenTelemetry
 * exporter (src/adapters/telemetry/), the guest agent's span recorder.
 *
 * @module
 */
import { AsyncLocalStorage } from "node:async_hooks";

/** Attribute values a span takes. */
export type SpanAttributes = Record<string, string | number | boolean>;

/** A started span. */
export interface SpanHandle {
  /** The W3C trace context header of this span (`00-<trace>-<span>-01`). */
  readonly traceparent: string;
  setAttributes(attributes: SpanAttributes): void;
  /** Ends the span, as failed when `error` is given. */
  end(error?: unknown): void;
}

/** Where spans go. */
export interface TraceBackend {
  /**
   * Starts a span under `parent` (a span of this process), else under the
   * remote `traceparent` (another process's), else as a new trace's root.
   */
  start(
    name: string,
    attributes: SpanAttributes,
    parent: SpanHandle | undefined,
    traceparent: string | undefined,
  ): SpanHandle;
}

let backend: TraceBackend | undefined;
const current = new AsyncLocalStorage<SpanHandle>();

/** Installs (or, with undefined, removes) the backend; spans already started end as usual. */
export function setTraceBackend(b: TraceBackend | undefined): void {
  backend = b;
}

/** Whether spans are being made. */
export function tracingEnabled(): boolean {
  return backend !== undefined;
}

/**
 * Runs `fn` in a span named `name`. `traceparent` (a remote parent, from a
 * request's metadata) applies when no span of this process is current.
 */
export function traced<T>(
  name: string,
  attributes: SpanAttributes,
  fn: () => Promise<T>,
  traceparent?: string,
): Promise<T> {
  const b = backend;
  if (!b) return fn();
  const span = b.start(name, attributes, current.getStore(), traceparent);
  return current.run(span, async () => {
    try {
      const out = await fn();
      span.end();
      return out;
    } catch (e) {
      span.end(e);
      throw e;
    }
  });
}

/** Runs `fn` (a loop that outlives the call starting it) outside the current span. */
export function detached<T>(fn: () => T): T {
  return current.exit(fn);
}

/** The `traceparent` of the current span, to propagate; undefined when none. */
export function currentTraceparent(): string | undefined {
  return backend ? current.getStore()?.traceparent : undefined;
}

/** `00-<32 hex>-<16 hex>-<2 hex>` split, or undefined when malformed. */
export function parseTraceparent(
  header: string | undefined,
): { traceId: string; spanId: string; sampled: boolean } | undefined {
  const m = header?.trim().match(/^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/);
  if (!m || /^0+$/.test(m[1]) || /^0+$/.test(m[2])) return undefined;
  return { traceId: m[1], spanId: m[2], sampled: (parseInt(m[3], 16) & 1) === 1 };
}
