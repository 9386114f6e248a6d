/**
 * Port: what a sandbox kind contributes to the daemon — its defaults, its
 * config table, and a factory for its two ports. The daemon is the same for
 * every kind.
 *
 * The services a kind shares with the rest of the host process (the ttrpc
 * server, the stream channels, the state layout) are adapters themselves, so
 * they come in as the `Host` type parameter (`src/adapters/kind_host.ts`):
 * this contract names none of them.
 *
 * @module
 */
import type { z } from "zod";
import type { NodeCheck } from "../domain/doctor.ts";
import type { ContainerRuntime } from "./container_runtime.ts";
import type { SandboxBackend } from "./sandbox_backend.ts";
import type { Supervisor } from "./supervisor.ts";

/** What every kind's factory gets. */
export interface KindBasics {
  /** The sandboxer's --dir. */
  readonly dir: string;
  /** Starts and follows the kind's processes. */
  readonly supervisor: Supervisor;
  /** Kind-specific settings from the config file and flags (output of `settingsSchema`). */
  readonly settings: Readonly<Record<string, unknown>>;
}

/** Shared services a kind's factory may use. */
export type KindContext<Host = unknown> = KindBasics & Host;

/** The parts a kind plugs into the daemon. */
export interface KindParts {
  readonly backend: SandboxBackend;
  readonly runtime: ContainerRuntime;
  close?(): Promise<void>;
}

/** What a kind's node checks get (`kuasar doctor`). */
export interface NodeCheckContext {
  /** The kind's settings (output of `settingsSchema`). */
  readonly settings: Readonly<Record<string, unknown>>;
  /** The helper binary, for probes that need a system call Deno lacks. */
  readonly helper: string;
  /** The state directory the sandboxer would use (--dir). */
  readonly dir: string;
}

/** A sandbox kind. */
export interface SandboxKind<Host = unknown> {
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
  /** Schema of the kind's own config table, e.g. `[runc]`; its output is `KindBasics.settings`. */
  readonly settingsSchema: z.ZodType;
  create(ctx: KindContext<Host>): Promise<KindParts>;
  /**
   * What the kind needs of the node, checked without changing it. The first
   * check (id `engine`) is what the kind cannot run without at all.
   */
  nodeChecks(ctx: NodeCheckContext): Promise<NodeCheck[]>;
}
