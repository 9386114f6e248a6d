/**
 * Tracing on and off at run time: `[sandbox] enable_tracing` at start,
 * SIGUSR1 to toggle (as Kuasar does). While on, spans recorded elsewhere (the
 * VMs' guest agents) are pulled every second and exported with the host's.
 *
 * @module
 */
import { log } from "../../lib/log.ts";
import { setTraceBackend } from "../../lib/trace.ts";
import { isRecordedSpan, type RecordedSpan } from "../../lib/trace_recorder.ts";
import type { OtelTracing } from "./otel.ts";

/** Spans of another process, taken once (e.g. a guest agent's Drain). */
export type SpanSource = () => Promise<readonly RecordedSpan[]>;

/** Where a kind registers the span sources it has (part of the kind host). */
export interface SpanSources {
  addSource(source: SpanSource): void;
}

const PULL_MS = 1000;
/** How long switching off waits for the last export. */
const SHUTDOWN_MS = 2000;

/** The daemon's tracing state. */
export class TracingSwitch implements SpanSources {
  readonly #service: string;
  #otel: OtelTracing | undefined;
  #timer: ReturnType<typeof setInterval> | undefined;
  #sources = new Set<SpanSource>();
  #busy: Promise<void> = Promise.resolve();

  constructor(service: string) {
    this.#service = service;
  }

  get enabled(): boolean {
    return this.#otel !== undefined;
  }

  addSource(source: SpanSource): void {
    this.#sources.add(source);
  }

  /** Switches on (idempotent); a failure to load the SDK is logged and leaves it off. */
  enable(): Promise<void> {
    return this.#serial(async () => {
      if (this.#otel) return;
      try {
        const { startOtelTracing } = await import("./otel.ts");
        this.#otel = await startOtelTracing(this.#service);
      } catch (e) {
        log.error("tracing cannot start", { error: String(e) });
        return;
      }
      setTraceBackend(this.#otel.backend);
      this.#timer = setInterval(() => this.#pull(), PULL_MS);
      Deno.unrefTimer(this.#timer);
      log.info("tracing on", {
        service: this.#service,
        endpoint: Deno.env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") ??
          Deno.env.get("OTEL_EXPORTER_OTLP_ENDPOINT") ?? "http://localhost:4318",
      });
    });
  }

  /** Switches off, exporting what is pending first. */
  disable(): Promise<void> {
    return this.#serial(async () => {
      const otel = this.#otel;
      if (!otel) return;
      clearInterval(this.#timer);
      try {
        await this.#pull();
      } finally {
        // Off whatever the last pull did: a span source must not keep tracing on.
        setTraceBackend(undefined);
        this.#otel = undefined;
        // An unreachable collector must not hold up a stop: what is not sent by then is dropped.
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([
          otel.shutdown().catch(() => {}),
          new Promise<void>((r) => (timer = setTimeout(r, SHUTDOWN_MS))),
        ]);
        clearTimeout(timer);
        log.info("tracing off", { service: this.#service });
      }
    });
  }

  toggle(): Promise<void> {
    return this.enabled ? this.disable() : this.enable();
  }

  async #pull(): Promise<void> {
    const otel = this.#otel;
    if (!otel) return;
    for (const source of this.#sources) {
      // One source's bad answer (a guest agent is not trusted) costs only its own spans.
      try {
        const spans = (await source()).filter(isRecordedSpan);
        if (spans.length) otel.importSpans(spans);
      } catch (e) {
        log.debug("span source failed", { error: String(e) });
      }
    }
  }

  #serial(fn: () => Promise<void>): Promise<void> {
    this.#busy = this.#busy.then(fn, fn);
    return this.#busy;
  }
}
