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

/**
 * Keeps a FIFO's write end open in a process that outlives the daemon (the task relay), so that
 * containerd's reader does not take a daemon restart for the end of a process's output.
 */
export interface OutputHolder {
  /** Holds `path` for pod `scope` until `release`; false when it cannot (not a FIFO, no reader). */
  hold(scope: string, path: string): Promise<boolean>;
  /** Lets `path` go: its output ends once the daemon's own write end is closed too. */
  release(path: string): Promise<void>;
}

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
  /** Holds output FIFOs the daemon writes itself across its restarts (VM pods). */
  readonly outputHolder?: OutputHolder;
}

/** A kind of this binary. */
export type HostKind = SandboxKind<KindHost>;
/** What a kind of this binary gets at start. */
export type HostKindContext = KindContext<KindHost>;
