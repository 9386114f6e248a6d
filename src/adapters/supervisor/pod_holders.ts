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
import { holderToken, isPoolVmToken } from "./process_tokens.ts";

const KILL_WAIT_MS = 10_000;

/** What a pod followed through its process keeps in its record. */
export interface PodProcessState {
  /** Pid of the supervisor of the pod's process (holder or monitor). */
  holderPid?: number;
  /**
   * The exit-record token of that supervisor when it is not the pod's own (`holderToken`): a
   * VM made ahead of its pod keeps the one it was started with.
   */
  holderToken?: string;
}

/**
 * The exit-record token of pod `id`'s process: `recorded` (from its record, read back from disk:
 * checked, not trusted, as it names a file and what is killed) when it is a pool VM's, else the
 * pod's own.
 */
function tokenOf(id: string, recorded: unknown): string {
  return typeof recorded === "string" && isPoolVmToken(recorded) ? recorded : holderToken(id);
}

/** Signals the pod's process `pid` ("SIGTERM" to ask, "SIGKILL" to force). */
export type PodSignal = (pid: number, signal: "SIGTERM" | "SIGKILL") => Promise<void>;

/** A pod process being followed. */
interface Followed {
  /** The pod's process (what containers join), known from the moment it started. */
  readonly pid: number;
  readonly latch: Latch<SandboxExit>;
  /** Its supervisor's exit-record token. */
  readonly token: string;
}

/** Every pod process of a backend, by sandbox id. */
export class PodHolders {
  #supervisor: Supervisor;
  #onExit: (id: string, exit: SandboxExit) => void;
  #pods = new Map<string, Followed>();

  constructor(supervisor: Supervisor, onExit: (id: string, exit: SandboxExit) => void) {
    this.#supervisor = supervisor;
    this.#onExit = onExit;
  }

  /**
   * Follows the pod process `pid` whose monitor (or holder) is `helperPid`:
   * from here on, Stop and cleanup can take it down even when the Start that
   * launched it fails. `token`: its supervisor's exit-record token, when not the pod's own.
   */
  watch(id: string, helperPid: number, pid: number, token = holderToken(id)): void {
    const latch = new Latch<SandboxExit>();
    this.#pods.set(id, { pid, latch, token });
    const exited = (exit: SandboxExit) => {
      latch.set(exit);
      this.#onExit(id, exit);
    };
    this.#supervisor.exits.expect(token, helperPid, {
      exited: (r) => exited({ status: r.status, at: r.at }),
      lost: () => exited({ status: 255, at: now() }),
    });
  }

  /** Asks the pod to end, forces it after `timeoutMs`; resolves with how it ended. */
  async stop(record: SandboxRecord, timeoutMs: number, signal: PodSignal): Promise<SandboxExit> {
    const pod = this.#pods.get(record.id);
    if (!pod || !pod.pid) return { status: 0, at: now() };
    const { pid, latch } = pod;
    if (latch.isSet) return latch.value!;
    if (timeoutMs > 0) {
      await signal(pid, "SIGTERM");
      const exit = await withTimeout(latch.wait(), timeoutMs);
      if (exit) return exit;
    }
    await signal(pid, "SIGKILL");
    const exit = await withTimeout(latch.wait(), KILL_WAIT_MS);
    if (!exit) log.warn("pod did not end after SIGKILL", { sandbox: record.id, pid });
    return exit ?? { status: 137, at: now() };
  }

  /** Waits (bounded) for a pod that is being taken down to be seen gone. */
  async waitGone(id: string): Promise<void> {
    const latch = this.#pods.get(id)?.latch;
    if (latch && !latch.isSet) await withTimeout(latch.wait(), KILL_WAIT_MS);
  }

  /** Whether the pod's process is followed and has not ended. */
  running(id: string): boolean {
    const latch = this.#pods.get(id)?.latch;
    return !!latch && !latch.isSet;
  }

  /** The pod's process while it is followed and has not ended. */
  runningPid(id: string): number | undefined {
    const pod = this.#pods.get(id);
    return pod && !pod.latch.isSet && pod.pid ? pod.pid : undefined;
  }

  /**
   * Forgets a pod: kills whatever still carries its exit file, removes the record. `token`: its
   * supervisor's token as its record says (`holderToken`), for a pod no longer followed.
   */
  async forget(id: string, token?: string): Promise<number> {
    const tokens = new Set([holderToken(id), this.#pods.get(id)?.token ?? tokenOf(id, token)]);
    let killed = 0;
    for (const token of tokens) killed += await this.#supervisor.killOrphans(token);
    this.#pods.delete(id);
    for (const token of tokens) await this.#supervisor.exits.remove(token);
    return killed;
  }

  /**
   * After a restart: a running pod whose process still lives is followed
   * again; one that ended while the daemon was down reports how.
   */
  async recoverRunning(record: SandboxRecord<PodProcessState>): Promise<RecoveredSandbox> {
    const token = tokenOf(record.id, record.backend.holderToken);
    const helperPid = Number(record.backend.holderPid ?? 0);
    const rec = await this.#supervisor.exits.read(token);
    if (rec) return { alive: false, exit: { status: rec.status, at: rec.at } };
    if (!await this.#supervisor.exits.alive(token, helperPid)) {
      return { alive: false, exit: { status: 255, at: now() } };
    }
    this.watch(record.id, helperPid, record.pid, token);
    return { alive: true };
  }

  /** Kills the pod process of a Start that never returned (found on disk after a restart). */
  async killUnfinished(id: string): Promise<number> {
    return await this.#supervisor.killOrphans(holderToken(id));
  }
}
