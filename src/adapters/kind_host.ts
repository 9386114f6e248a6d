/**
 * The host-process services every sandbox kind of this binary shares, and
 * the kind contract bound to them.
 *
 * @module
 */
import type { KindContext, SandboxKind } from "../ports/sandbox_kind.ts";
import type { StateLayout } from "./os/state_layout.ts";
import type { StreamHub } from "./task/streaming.ts";
import type { TtrpcServer } from "./ttrpc/server.ts";
import type { SpanSources } from "./telemetry/tracing_switch.ts";

/** Services of the sandboxer process a kind may use. */
export interface KindHost {
  /** Where the daemon's own entries under --dir are (never a pod's name). */
  readonly layout: StateLayout;
  /** The ttrpc server pods' task endpoints use (a kind may add services). */
  readonly ttrpc: TtrpcServer;
  /** Channels of containerd's Streaming service (streamed stdio). */
  readonly streams: StreamHub;
  /** Where spans other processes record (guest agents) are pulled from while tracing. */
  readonly tracing: SpanSources;
}

/** A kind of this binary. */
export type HostKind = SandboxKind<KindHost>;
/** What a kind of this binary gets at start. */
export type HostKindContext = KindContext<KindHost>;
