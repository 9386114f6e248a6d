/**
 * The process that stands for a pod (runC's namespace holder, the monitor of
 * a gVisor sandbox's root container), followed through its exit record:
 * Wait, a graceful-then-forced Stop, and finding it again after a restart.
 * Backends differ only in how they signal it.
 *
 * @module
 */
import type { SandboxExit, SandboxRecord } from "../../domain/sandbox.ts";
import { now } from "../../domain/time.ts";
import type { RecoveredSandbox } from "../../ports/sandbox_backend.ts";
import { Latch, withTimeout } from "../../lib/sync.ts";
import { log } from "../../lib/log.ts";
import type { Supervisor } from "../../ports/supervisor.ts";
import { holderToken } from "./process_tokens.ts";

const KILL_WAIT_MS = 10_000;

/** Signals a pod's process ("SIGTERM" to ask, "SIGKILL" to force). */
export type PodSignal = (record: SandboxRecord, signal: "SIGTERM" | "SIGKILL") => Promise<void>;

/** Every pod process of a backend, by sandbox id. */
export class PodHolders {
  #supervisor: Supervisor;
  #onExit: (id: string, exit: SandboxExit) => void;
  #latches = new Map<string, Latch<SandboxExit>>();

  constructor(supervisor: Supervisor, onExit: (id: string, exit: SandboxExit) => void) {
    this.#supervisor = supervisor;
    this.#onExit = onExit;
  }

  /** Follows the pod process whose monitor (or holder) is `helperPid`. */
  watch(id: string, helperPid: number): void {
    const latch = new Latch<SandboxExit>();
    this.#latches.set(id, latch);
    const exited = (exit: SandboxExit) => {
      latch.set(exit);
      this.#onExit(id, exit);
    };
    this.#supervisor.exits.expect(holderToken(id), helperPid, {
      exited: (r) => exited({ status: r.status, at: r.at }),
      lost: () => exited({ status: 255, at: now() }),
    });
  }

  /** Asks the pod to end, forces it after `timeoutMs`; resolves with how it ended. */
  async stop(record: SandboxRecord, timeoutMs: number, signal: PodSignal): Promise<SandboxExit> {
    const latch = this.#latches.get(record.id);
    if (!latch || !record.pid) return { status: 0, at: now() };
    if (latch.isSet) return latch.value!;
    if (timeoutMs > 0) {
      await signal(record, "SIGTERM");
      const exit = await withTimeout(latch.wait(), timeoutMs);
      if (exit) return exit;
    }
    await signal(record, "SIGKILL");
    const exit = await withTimeout(latch.wait(), KILL_WAIT_MS);
    if (!exit) log.warn("pod did not end after SIGKILL", { sandbox: record.id, pid: record.pid });
    return exit ?? { status: 137, at: now() };
  }

  /** Waits (bounded) for a pod that is being taken down to be seen gone. */
  async waitGone(id: string): Promise<void> {
    const latch = this.#latches.get(id);
    if (latch && !latch.isSet) await withTimeout(latch.wait(), KILL_WAIT_MS);
  }

  /** Whether the pod's process is followed and has not ended. */
  running(id: string): boolean {
    const latch = this.#latches.get(id);
    return !!latch && !latch.isSet;
  }

  /** Forgets a pod: kills whatever still carries its exit file, removes the record. */
  async forget(id: string): Promise<number> {
    const token = holderToken(id);
    const killed = await this.#supervisor.killOrphans(token);
    this.#latches.delete(id);
    await this.#supervisor.exits.remove(token);
    return killed;
  }

  /**
   * After a restart: a running pod whose process still lives is followed
   * again; one that ended while the daemon was down reports how.
   */
  async recoverRunning(record: SandboxRecord): Promise<RecoveredSandbox> {
    const token = holderToken(record.id);
    const helperPid = Number(record.backend.holderPid ?? 0);
    const rec = await this.#supervisor.exits.read(token);
    if (rec) return { alive: false, exit: { status: rec.status, at: rec.at } };
    if (!await this.#supervisor.exits.alive(token, helperPid)) {
      return { alive: false, exit: { status: 255, at: now() } };
    }
    this.watch(record.id, helperPid);
    return { alive: true };
  }

  /** Kills the pod process of a Start that never returned (found on disk after a restart). */
  async killUnfinished(id: string): Promise<number> {
    return await this.#supervisor.killOrphans(holderToken(id));
  }
}
