/**
 * Sandboxes: the persisted record and the lifecycle rules.
 *
 * A sandbox is `created` by Controller.Create, `running` once Start made its
 * isolation boundary (a namespace holder, a VM, a Wasm host), and `stopped`
 * when that boundary is gone (Stop, or it died). Shutdown removes the record.
 *
 * @module
 */
import { InvalidTransitionError } from "./errors.ts";
import type { ContainerRecord } from "./task.ts";
import type { PodConfig } from "./pod_config.ts";
import type { Instant } from "./time.ts";

/** Lifecycle states of a sandbox. */
export type SandboxState = "created" | "running" | "stopped";

/** A protobuf Any kept verbatim (value base64-encoded) so it can be echoed back. */
export interface StoredAny {
  readonly typeUrl: string;
  readonly value: string;
}

/** How a sandbox ended. */
export interface SandboxExit {
  readonly status: number;
  readonly at: Instant;
}

/**
 * Everything the sandboxer knows about one pod; persisted as
 * `<dir>/<id>/sandbox.json`. `B` is the kind's own pod state (`backend`).
 */
export interface SandboxRecord<B extends object = object> {
  readonly id: string;
  /** Sandbox kind serving it: "runc", "wasm", "gvisor", "vmm"… */
  readonly kind: string;
  state: SandboxState;
  readonly createdAt: Instant;
  startedAt?: Instant;
  exit?: SandboxExit;
  /** Pid reported to containerd: the process whose namespaces containers join. */
  pid: number;
  readonly netnsPath: string;
  readonly pod: PodConfig;
  /** The raw CRI PodSandboxConfig from Create.options, if any. */
  readonly podConfigAny?: StoredAny;
  readonly annotations: Record<string, string>;
  labels: Record<string, string>;
  extensions: Record<string, StoredAny>;
  /** Task API address returned by Start, e.g. `ttrpc+unix:///run/kuasar-runc/<id>/task.sock`. */
  taskAddress: string;
  taskApiVersion: number;
  /** The kind's own pod state (holder process, VM handles…), opaque to the core. */
  backend: B;
  containers: Record<string, ContainerRecord>;
}

const SANDBOX_TRANSITIONS: Record<SandboxState, readonly SandboxState[]> = {
  created: ["running", "stopped"],
  running: ["stopped"],
  stopped: ["stopped"],
};

/** Throws `InvalidTransitionError` unless a sandbox may move from `from` to `to`. */
export function checkSandboxTransition(id: string, from: SandboxState, to: SandboxState): void {
  if (!SANDBOX_TRANSITIONS[from].includes(to)) {
    throw new InvalidTransitionError(`sandbox "${id}"`, from, to);
  }
}

/** The state string containerd's Controller.Status expects. */
export function sandboxStatusString(state: SandboxState): "SANDBOX_READY" | "SANDBOX_NOTREADY" {
  return state === "running" ? "SANDBOX_READY" : "SANDBOX_NOTREADY";
}
