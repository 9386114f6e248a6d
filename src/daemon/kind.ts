/**
 * What a sandbox kind contributes to the daemon: its defaults and a factory
 * for its two ports. The daemon is the same for every kind.
 *
 * @module
 */
import type { z } from "zod";
import type { ContainerRuntime } from "../ports/container_runtime.ts";
import type { SandboxBackend } from "../ports/sandbox_backend.ts";
import type { ExitWatcher } from "../adapters/os/exit_watcher.ts";
import type { TtrpcServer } from "../adapters/ttrpc/server.ts";
import type { StreamHub } from "../adapters/task/streaming.ts";
import type { StateLayout } from "../adapters/os/state_layout.ts";

/** Shared services a kind's factory may use. */
export interface KindContext {
  /** The sandboxer's --dir. */
  readonly dir: string;
  /** Where the daemon's own entries under --dir are (never a pod's name). */
  readonly layout: StateLayout;
  /** Path of the native helper binary. */
  readonly helper: string;
  /** Exit records of helper-monitored processes. */
  readonly exits: ExitWatcher;
  /** The ttrpc server pods' task endpoints use (a kind may add services). */
  readonly ttrpc: TtrpcServer;
  /** Channels of containerd's Streaming service (streamed stdio). */
  readonly streams: StreamHub;
  /** Kind-specific settings from the config file and flags. */
  readonly settings: Readonly<Record<string, unknown>>;
}

/** The parts a kind plugs into the daemon. */
export interface KindParts {
  readonly backend: SandboxBackend;
  readonly runtime: ContainerRuntime;
  close?(): Promise<void>;
}

/** A sandbox kind. */
export interface SandboxKind {
  /** Subcommand, e.g. "runc". */
  readonly name: string;
  /** Kuasar's binary name, answering through a symlink, e.g. "runc-sandboxer". */
  readonly binaryName: string;
  readonly description: string;
  readonly defaultListen: string;
  readonly defaultDir: string;
  /** Config file read when --config is not given (a missing default file is fine). */
  readonly defaultConfig?: string;
  /** The kind's config table when it is not named after the kind (vmm: Kuasar's `[hypervisor]`). */
  readonly configTable?: string;
  /** Schema of the kind's own config table, e.g. `[runc]`; its output is `KindContext.settings`. */
  readonly settingsSchema: z.ZodType;
  create(ctx: KindContext): Promise<KindParts>;
}
