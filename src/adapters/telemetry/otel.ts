/**
 * Kuasar's `enable_tracing`: the spans of src/lib/trace.ts exported with the
 * OpenTelemetry JS SDK over OTLP/HTTP, to `OTEL_EXPORTER_OTLP_ENDPOINT`
 * (default http://localhost:4318, the collector's and Jaeger's). Spans a VM's
 * guest agent recorded are exported too, as the service `kuasar-guest-agent`
 * with their own ids, so they sit in the same trace as the host's.
 *
 * The SDK is loaded only when tracing is switched on: a sandboxer that never
 * traces carries none of it.
 *
 * @module
 */
import type { SpanAttributes, SpanHandle, TraceBackend } from "../../lib/trace.ts";
import { parseTraceparent } from "../../lib/trace.ts";
import type { RecordedSpan } from "../../lib/trace_recorder.ts";

/** A running exporter. */
export interface OtelTracing {
  readonly backend: TraceBackend;
  /** Exports spans another process recorded (the guest agent's). */
  importSpans(spans: readonly RecordedSpan[]): void;
  /** Sends what is pending and stops. */
  shutdown(): Promise<void>;
}

/** Ids the next span takes: the SDK asks its IdGenerator, so imported spans keep theirs. */
class PresetIds {
  next: string | undefined;
  #random = () =>
    Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, "0"))
      .join("");
  generateTraceId(): string {
    return this.#random() + this.#random();
  }
  generateSpanId(): string {
    const id = this.next ?? this.#random();
    this.next = undefined;
    return id;
  }
}

const toHrTime = (ms: number): [number, number] => {
  const s = Math.floor(ms / 1000);
  return [s, Math.round((ms - s * 1000) * 1e6)];
};

/** Starts the SDK for `service` (e.g. `kuasar-runc`). */
export async function startOtelTracing(service: string): Promise<OtelTracing> {
  const api = await import("@opentelemetry/api");
  const { TracerProvider, BatchSpanProcessor } = await import("@opentelemetry/sdk-trace");
  const { OTLPTraceExporter } = await import("@opentelemetry/exporter-trace-otlp-http");
  const { resourceFromAttributes } = await import("@opentelemetry/resources");
  const exporter = new OTLPTraceExporter();
  const providerFor = (name: string, ids?: PresetIds) =>
    new TracerProvider({
      resource: resourceFromAttributes({ "service.name": name }),
      spanProcessors: [new BatchSpanProcessor({ exporter, scheduledDelayMillis: 500 })],
      ...(ids ? { idGenerator: ids } : {}),
    });
  const host = providerFor(service);
  const guestIds = new PresetIds();
  const guest = providerFor("kuasar-guest-agent", guestIds);
  const tracer = host.getTracer("kuasar");
  const guestTracer = guest.getTracer("kuasar-guest-agent");

  type Handle = SpanHandle & { readonly span: import("@opentelemetry/api").Span };
  const remote = (traceId: string, spanId: string, sampled = true) =>
    api.trace.setSpanContext(api.ROOT_CONTEXT, {
      traceId,
      spanId,
      traceFlags: sampled ? api.TraceFlags.SAMPLED : api.TraceFlags.NONE,
      isRemote: true,
    });
  const backend: TraceBackend = {
    start(name: string, attributes: SpanAttributes, parent, traceparent): SpanHandle {
      let ctx = api.ROOT_CONTEXT;
      if (parent && "span" in parent) ctx = api.trace.setSpan(ctx, (parent as Handle).span);
      else {
        const p = parseTraceparent(traceparent);
        if (p) ctx = remote(p.traceId, p.spanId, p.sampled);
      }
      const span = tracer.startSpan(name, { attributes }, ctx);
      const sc = span.spanContext();
      const handle: Handle = {
        span,
        traceparent: `00-${sc.traceId}-${sc.spanId}-${sc.traceFlags & 1 ? "01" : "00"}`,
        setAttributes: (a) => span.setAttributes(a),
        end: (error) => {
          if (error !== undefined) {
            const message = error instanceof Error ? error.message : String(error);
            span.setStatus({ code: api.SpanStatusCode.ERROR, message });
          }
          span.end();
        },
      };
      return handle;
    },
  };
  return {
    backend,
    importSpans(spans) {
      for (const s of spans) {
        guestIds.next = s.spanId;
        const ctx = s.parentSpanId ? remote(s.traceId, s.parentSpanId) : api.ROOT_CONTEXT;
        const span = guestTracer.startSpan(s.name, {
          attributes: s.attributes,
          startTime: toHrTime(s.startMs),
        }, ctx);
        if (s.error) span.setStatus({ code: api.SpanStatusCode.ERROR, message: s.error });
        span.end(toHrTime(s.endMs));
      }
    },
    async shutdown() {
      await Promise.allSettled([host.shutdown(), guest.shutdown()]);
    },
  };
}
