/**
 * The part of a SandboxBackend shared by kinds whose pod is a host process
 * followed by an exit record (runC's namespace holder, a gVisor sandbox's
 * monitor, a VM's QEMU under its monitor): the exit listener, Create's pod
 * files, and recovery. Subclasses bring the process up and down.
 *
 * @module
 */
import { join } from "node:path";
import type { SandboxExit, SandboxRecord } from "../../domain/sandbox.ts";
import { now } from "../../domain/time.ts";
import type { StartedProcess, StoredAnyBytes } from "../../ports/container_runtime.ts";
import type {
  RecoveredSandbox,
  SandboxBackend,
  SandboxExitListener,
} from "../../ports/sandbox_backend.ts";
import type { Supervisor } from "../../ports/supervisor.ts";
import { goArch } from "../os/platform.ts";
import { preparePod } from "../os/pod_files.ts";
import { PodHolders, type PodProcessState } from "./pod_holders.ts";

/** What every pod-process backend has. */
export interface PodProcessBackendOptions {
  /** The sandboxer's --dir (a pod's files live in `<dir>/<id>/`). */
  readonly dir: string;
  readonly supervisor: Supervisor;
}

export abstract class PodProcessBackend<
  O extends PodProcessBackendOptions = PodProcessBackendOptions,
  S extends PodProcessState = PodProcessState,
> implements SandboxBackend<S> {
  readonly platform = { os: "linux", architecture: goArch(), variant: "" };
  protected readonly opts: O;
  protected readonly holders: PodHolders;
  #listener: SandboxExitListener | undefined;

  constructor(opts: O) {
    this.opts = opts;
    this.holders = new PodHolders(
      opts.supervisor,
      (id, exit) => this.#listener?.sandboxExited(id, exit),
    );
  }

  abstract start(record: SandboxRecord<S>): Promise<StartedProcess>;
  abstract stop(record: SandboxRecord<S>, timeoutMs: number): Promise<SandboxExit>;
  abstract cleanup(record: SandboxRecord<S>): Promise<void>;
  abstract metrics(record: SandboxRecord<S>): Promise<StoredAnyBytes | undefined>;

  /** Undoes a Start that never returned (found in state "created" after a restart). */
  protected async abandonStart(record: SandboxRecord<S>): Promise<void> {
    await this.holders.killUnfinished(record.id);
  }

  setExitListener(listener: SandboxExitListener): void {
    this.#listener = listener;
  }

  async create(record: SandboxRecord<S>): Promise<void> {
    await preparePod(join(this.opts.dir, record.id), record);
  }

  async recover(record: SandboxRecord<S>): Promise<RecoveredSandbox> {
    if (record.state === "running") return await this.holders.recoverRunning(record);
    if (record.state === "created") {
      await this.abandonStart(record);
      record.pid = 0;
    }
    return { alive: false, exit: record.exit ?? { status: 0, at: now() } };
  }
}
