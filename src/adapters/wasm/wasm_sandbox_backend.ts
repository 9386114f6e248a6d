/**
 * Wasm pods. A pod needs no process of its own: its modules run in the
 * shared Wasm host, isolated from each other by V8 (one isolate per module
 * on its own thread, linear memory bounds-checked, WASI giving access only
 * to the preopened directories). The pod's pid is the host's. The host is
 * started with the first pod and ends after the last one.
 *
 * @module
 */
import type { SandboxExit, SandboxRecord } from "../../domain/sandbox.ts";
import { now } from "../../domain/time.ts";
import type { StartedProcess, StoredAnyBytes } from "../../ports/container_runtime.ts";
import type {
  RecoveredSandbox,
  SandboxBackend,
  SandboxExitListener,
} from "../../ports/sandbox_backend.ts";
import { goArch } from "../os/platform.ts";
import type { WasmHostClient } from "./host_client.ts";

/** Pod lifecycle for the Wasm sandboxer. */
/** What a Wasm pod keeps in its record. */
export interface WasmPodState {
  /** The Wasm host serving the pod's modules. */
  hostPid?: number;
}

export class WasmSandboxBackend implements SandboxBackend<WasmPodState> {
  /** Modules are portable, but containerd matches images against the node's platform. */
  readonly platform = { os: "linux", architecture: goArch(), variant: "" };
  #host: WasmHostClient;
  #pods = new Set<string>();

  constructor(host: WasmHostClient) {
    this.#host = host;
  }

  setExitListener(_listener: SandboxExitListener): void {
    // A Wasm pod has no boundary that can go away by itself.
  }

  create(_record: SandboxRecord): Promise<void> {
    return Promise.resolve();
  }

  async start(record: SandboxRecord<WasmPodState>): Promise<StartedProcess> {
    this.#pods.add(record.id);
    const pid = await this.#host.ensure();
    record.backend = { ...record.backend, hostPid: pid };
    return { pid };
  }

  stop(_record: SandboxRecord, _timeoutMs: number): Promise<SandboxExit> {
    // The pod's modules were stopped by the task service before this.
    return Promise.resolve({ status: 0, at: now() });
  }

  async cleanup(record: SandboxRecord): Promise<void> {
    this.#pods.delete(record.id);
    if (!this.#pods.size) await this.#host.quit();
  }

  recover(record: SandboxRecord): Promise<RecoveredSandbox> {
    if (record.state !== "running") {
      return Promise.resolve({ alive: false, exit: record.exit ?? { status: 0, at: now() } });
    }
    this.#pods.add(record.id);
    return Promise.resolve({ alive: true });
  }

  metrics(_record: SandboxRecord): Promise<StoredAnyBytes | undefined> {
    return Promise.resolve(undefined);
  }
}
