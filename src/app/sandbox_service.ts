/**
 * containerd's Sandbox Controller semantics (Create, Start, Platform, Stop,
 * Wait, Status, Shutdown, Metrics, Update) for any sandbox kind, plus the
 * recovery of everything on disk after a restart. The kind-specific work is
 * behind the `SandboxBackend` port.
 *
 * @module
 */
import { base64Decode } from "../domain/encoding.ts";
import {
  AlreadyExistsError,
  InternalError,
  InvalidArgumentError,
  messageOf,
} from "../domain/errors.ts";
import { validateId } from "../domain/ids.ts";
import { type PodConfig, validatePodConfig } from "../domain/pod_config.ts";
import {
  checkSandboxTransition,
  type SandboxExit,
  type SandboxRecord,
  type StoredAny,
} from "../domain/sandbox.ts";
import {
  diffTaskResources,
  parseTaskResources,
  type TaskResources,
  TASKS_EXTENSION,
  TASKS_FIELD,
} from "../domain/tasks_extension.ts";
import { type Instant, now, toMillis } from "../domain/time.ts";
import type { StoredAnyBytes } from "../ports/container_runtime.ts";
import type { SandboxBackend, SandboxExitListener } from "../ports/sandbox_backend.ts";
import type { TaskEndpoint } from "../ports/task_endpoint.ts";
import { log } from "../lib/log.ts";
import type { SandboxRegistry } from "./registry.ts";
import type { TaskService } from "./task_service.ts";

/** Controller.Create input, decoded by the transport. */
export interface CreateSandboxInput {
  readonly id: string;
  readonly netnsPath: string;
  readonly pod: PodConfig;
  readonly podConfigAny?: StoredAny;
  readonly annotations: Record<string, string>;
  readonly labels: Record<string, string>;
  readonly extensions: Record<string, StoredAny>;
}

/** Controller.Start result. */
export interface StartedSandbox {
  readonly pid: number;
  readonly createdAt: Instant;
  readonly address: string;
  readonly version: number;
  readonly labels: Record<string, string>;
}

/** Controller.Status result. */
export interface SandboxStatus {
  readonly id: string;
  readonly pid: number;
  readonly state: "SANDBOX_READY" | "SANDBOX_NOTREADY";
  readonly info: Record<string, string>;
  readonly createdAt: Instant;
  readonly exitedAt?: Instant;
  readonly address: string;
  readonly version: number;
}

/** Controller.Update input. */
export interface UpdateSandboxInput {
  readonly fields: readonly string[];
  readonly labels: Record<string, string>;
  readonly extensions: Record<string, StoredAny>;
}

/** Settings of the controller. */
export interface SandboxServiceOptions {
  /** Sandbox kind name, e.g. "runc". */
  readonly kind: string;
  /** Task API version Start reports: 3 for containerd ≥ 2.1, 2 for Kuasar's peers. */
  readonly taskApiVersion: number;
  /** Grace period Stop gives processes when the request carries no timeout. */
  readonly defaultStopTimeoutMs: number;
  /**
   * Throws `InvalidArgumentError` unless the path names a network namespace
   * (the OS adapter looks at the file); every kind's Create runs it, so a bad
   * netns fails there rather than at Start, or never.
   */
  readonly checkNetns?: (path: string) => Promise<void>;
  /**
   * How long a sandbox may stay created without being started before it is
   * shut down (0 or unset: for ever). containerd never calls Shutdown when
   * its RunPodSandbox fails after Controller.Create (a pause image it cannot
   * pull, say): without this each such failure would leak a sandbox.
   */
  readonly createdSandboxTimeoutMs?: number;
}

/** Recovery summary. */
export interface RecoverySummary {
  readonly total: number;
  readonly running: number;
  readonly stopped: number;
  readonly failed: number;
  readonly millis: number;
}

/** Controller use cases. */
export class SandboxService implements SandboxExitListener {
  #reg: SandboxRegistry;
  #backend: SandboxBackend;
  #tasks: TaskService;
  #endpoint: TaskEndpoint;
  #opts: SandboxServiceOptions;
  #log = log.with({ component: "sandboxes" });
  /** Sandboxes whose Start is running, and exits reported meanwhile. */
  #starting = new Set<string>();
  /** Pods being taken down on request: their boundary's exit is expected. */
  #stopping = new Set<string>();
  #earlyExits = new Map<string, SandboxExit>();
  /** Created sandboxes not started yet, and when they are shut down unless started. */
  #unstarted = new Map<string, { timer: ReturnType<typeof setTimeout>; at: Date }>();

  constructor(
    registry: SandboxRegistry,
    backend: SandboxBackend,
    tasks: TaskService,
    endpoint: TaskEndpoint,
    options: SandboxServiceOptions,
  ) {
    this.#reg = registry;
    this.#backend = backend;
    this.#tasks = tasks;
    this.#endpoint = endpoint;
    this.#opts = options;
    backend.setExitListener(this);
  }

  /** Controller.Create. A failed create leaves nothing behind. */
  async create(input: CreateSandboxInput): Promise<void> {
    validateId("sandbox", input.id);
    if (input.netnsPath && !input.netnsPath.startsWith("/")) {
      throw new InvalidArgumentError(
        `Invalid netns path "${input.netnsPath}": an absolute path is required`,
      );
    }
    validatePodConfig(input.pod);
    if (input.netnsPath) await this.#opts.checkNetns?.(input.netnsPath);
    return await this.#reg.lock.run(input.id, async () => {
      if (this.#reg.has(input.id)) {
        throw new AlreadyExistsError(`Sandbox "${input.id}" already exists`);
      }
      await this.#reg.store.prepare(input.id);
      const record: SandboxRecord = {
        id: input.id,
        kind: this.#opts.kind,
        state: "created",
        createdAt: now(),
        pid: 0,
        netnsPath: input.netnsPath,
        pod: input.pod,
        podConfigAny: input.podConfigAny,
        annotations: input.annotations,
        labels: input.labels,
        extensions: input.extensions,
        taskAddress: "",
        taskApiVersion: this.#opts.taskApiVersion,
        backend: {},
        containers: {},
      };
      try {
        await this.#backend.create(record);
        this.#reg.add(record);
        await this.#reg.save(record);
      } catch (e) {
        this.#reg.remove(record.id, { status: 255, at: now() });
        await this.#backend.cleanup(record).catch(() => {});
        await this.#reg.flushSaves(record.id);
        await this.#reg.store.remove(record.id).catch(() => {});
        throw e;
      }
      this.#log.info("sandbox created", { sandbox: input.id });
      this.#shutdownUnlessStarted(input.id);
    });
  }

  /** Shuts sandbox `id` down once the grace of created sandboxes ran out, unless it was started. */
  #shutdownUnlessStarted(id: string): void {
    const ms = this.#opts.createdSandboxTimeoutMs ?? 0;
    if (ms <= 0) return;
    this.#forgetUnstarted(id);
    const timer = setTimeout(() => {
      this.#unstarted.delete(id);
      this.#shutdown(id, (sb) => {
        if (sb.state !== "created") return false;
        this.#log.warn("shutting down a sandbox created and never started", {
          sandbox: id,
          createdAt: new Date(toMillis(sb.createdAt)).toISOString(),
          graceSecs: ms / 1000,
        });
        return true;
      }).catch((e) =>
        this.#log.error("cannot shut down a sandbox never started", { sandbox: id, error: e })
      );
    }, ms);
    // A pending shutdown never keeps a stopping daemon alive: the next one recovers the sandbox.
    Deno.unrefTimer(timer);
    this.#unstarted.set(id, { timer, at: new Date(Date.now() + ms) });
  }

  #forgetUnstarted(id: string): void {
    const u = this.#unstarted.get(id);
    if (u) clearTimeout(u.timer);
    this.#unstarted.delete(id);
  }

  /** Cancels the pending shutdowns of unstarted sandboxes (the daemon stops). */
  close(): void {
    for (const id of [...this.#unstarted.keys()]) this.#forgetUnstarted(id);
  }

  /** Controller.Start: brings the boundary up and serves the pod's Task API. */
  start(id: string): Promise<StartedSandbox> {
    return this.#reg.lock.run(id, async () => {
      const sb = this.#reg.get(id);
      checkSandboxTransition(id, sb.state, "running");
      this.#starting.add(id);
      try {
        sb.pid = (await this.#backend.start(sb)).pid;
        sb.taskAddress = this.#backend.ownTaskAddress?.(sb) ?? await this.#endpoint.open(id);
        const early = this.#earlyExits.get(id);
        if (early) {
          throw new InternalError(
            `Sandbox "${id}" exited during start with status ${early.status}`,
          );
        }
      } catch (e) {
        this.#log.warn("sandbox start failed", { sandbox: id, error: e });
        await this.#endpoint.close(id).catch(() => {});
        await this.#backend.stop(sb, 0).catch(() => {});
        sb.pid = 0;
        const early = this.#earlyExits.get(id);
        if (early) this.#markStopped(sb, early);
        await this.#reg.save(sb);
        throw e;
      } finally {
        this.#starting.delete(id);
        this.#earlyExits.delete(id);
      }
      if (sb.state === "created") {
        sb.state = "running";
        sb.startedAt = now();
      }
      this.#forgetUnstarted(id);
      await this.#reg.save(sb);
      this.#log.info("sandbox started", { sandbox: id, pid: sb.pid, address: sb.taskAddress });
      return {
        pid: sb.pid,
        createdAt: sb.createdAt,
        address: sb.taskAddress,
        version: sb.taskApiVersion,
        labels: sb.labels,
      };
    });
  }

  /** Controller.Platform. */
  platform(id: string): { os: string; architecture: string; variant: string } {
    this.#reg.get(id);
    return this.#backend.platform;
  }

  /**
   * Controller.Stop: processes get SIGTERM and `timeoutSecs` (or the default
   * grace) before SIGKILL, then the boundary goes the same way. Stopping an
   * unknown or stopped sandbox succeeds, as containerd retries Stop.
   */
  stop(id: string, timeoutSecs: number): Promise<void> {
    const timeoutMs = timeoutSecs > 0 ? timeoutSecs * 1000 : this.#opts.defaultStopTimeoutMs;
    return this.#reg.lock.run(id, async () => {
      const sb = this.#reg.find(id);
      if (!sb || sb.state === "stopped") return;
      if (sb.state === "running") {
        this.#stopping.add(id);
        try {
          await this.#tasks.stopAll(sb, timeoutMs);
          this.#markStopped(sb, await this.#backend.stop(sb, timeoutMs));
        } finally {
          this.#stopping.delete(id);
        }
      } else {
        this.#markStopped(sb, { status: 0, at: now() });
      }
      await this.#reg.save(sb);
      this.#log.info("sandbox stopped", { sandbox: id, status: sb.exit?.status });
    });
  }

  /** Controller.Wait: resolves when the sandbox has stopped. */
  async wait(id: string, signal?: AbortSignal): Promise<SandboxExit> {
    return await this.#reg.sandboxExit(id).wait(signal);
  }

  /** Controller.Status. */
  status(id: string, verbose: boolean): SandboxStatus {
    const sb = this.#reg.get(id);
    const info: Record<string, string> = {};
    if (verbose) {
      info.kind = sb.kind;
      info.netns = sb.netnsPath;
      info.containers = String(Object.keys(sb.containers).length);
      for (const [k, v] of Object.entries(sb.backend)) {
        if (typeof v === "string" || typeof v === "number") info[k] = String(v);
      }
      // READY/NOTREADY does not tell a created sandbox from a stopped one.
      info.lifecycle = sb.state;
      const u = this.#unstarted.get(id);
      if (u && sb.state === "created") info.shutdownUnlessStartedAt = u.at.toISOString();
    }
    return {
      id,
      pid: sb.state === "running" ? sb.pid : 0,
      state: sb.state === "running" ? "SANDBOX_READY" : "SANDBOX_NOTREADY",
      info,
      createdAt: sb.createdAt,
      exitedAt: sb.exit?.at,
      address: sb.taskAddress,
      version: sb.taskApiVersion,
    };
  }

  /**
   * Controller.Shutdown: deletes every container, takes the boundary down if
   * it still runs, releases all resources and the directory. Unknown ids
   * succeed.
   */
  shutdown(id: string): Promise<void> {
    return this.#shutdown(id, () => true);
  }

  /** Shutdown, if `when` holds for the sandbox under its lock. */
  #shutdown(id: string, when: (sb: SandboxRecord) => boolean): Promise<void> {
    return this.#reg.lock.run(id, async () => {
      const sb = this.#reg.find(id);
      if (!sb || !when(sb)) return;
      this.#forgetUnstarted(id);
      if (sb.state === "running") {
        this.#stopping.add(id);
        try {
          await this.#tasks.stopAll(sb, 0);
          this.#markStopped(sb, await this.#backend.stop(sb, 0));
        } finally {
          this.#stopping.delete(id);
        }
      }
      await this.#tasks.deleteAll(sb);
      await this.#endpoint.close(id);
      await this.#backend.cleanup(sb);
      this.#reg.remove(id, sb.exit ?? { status: 0, at: now() });
      await this.#reg.flushSaves(id);
      await this.#reg.store.remove(id);
      this.#log.info("sandbox shut down", { sandbox: id });
    });
  }

  /** Controller.Metrics: pod-level cgroup metrics. */
  async metrics(id: string): Promise<{ id: string; timestamp: Instant; data?: StoredAnyBytes }> {
    const sb = this.#reg.get(id);
    return { id, timestamp: now(), data: await this.#backend.metrics(sb) };
  }

  /**
   * Controller.Update. `extensions.tasks` carries Kuasar's task document
   * (JSON), `labels` and `extensions` replace the stored maps; other fields
   * are accepted and ignored.
   */
  update(id: string, input: UpdateSandboxInput): Promise<void> {
    return this.#reg.lock.run(id, async () => {
      const sb = this.#reg.get(id);
      if (input.fields.includes(TASKS_FIELD)) {
        const any = input.extensions[TASKS_EXTENSION];
        if (!any) {
          throw new InvalidArgumentError(
            `Cannot update "${TASKS_FIELD}": sandbox.extensions has no "tasks"`,
          );
        }
        const next = parseTaskResources(base64Decode(any.value));
        const prevAny = sb.extensions[TASKS_EXTENSION];
        const prev = this.#storedTasks(id, prevAny?.value);
        const diff = diffTaskResources(prev, next);
        this.#log.debug("tasks extension updated", {
          sandbox: id,
          added: diff.addedTasks.map((t) => t.task_id),
          removed: diff.removedTasks,
        });
        await this.#backend.tasksChanged?.(sb, diff);
        for (const p of diff.removedProcesses) {
          if (await this.#tasks.withdrawExec(sb, p.taskId, p.execId)) {
            this.#log.debug("withdrawn exec forgotten", { sandbox: id, exec: p.execId });
          }
        }
        sb.extensions[TASKS_EXTENSION] = any;
      }
      if (input.fields.includes("labels")) sb.labels = { ...input.labels };
      if (input.fields.includes("extensions")) {
        sb.extensions = { ...sb.extensions, ...input.extensions };
      }
      await this.#reg.save(sb);
    });
  }

  /** The stored tasks document; one that never parsed (e.g. set by Create) counts as empty. */
  #storedTasks(id: string, value: string | undefined): TaskResources {
    if (!value) return { tasks: [] };
    try {
      return parseTaskResources(base64Decode(value));
    } catch (e) {
      this.#log.warn("ignoring unreadable stored tasks document", { sandbox: id, error: e });
      return { tasks: [] };
    }
  }

  /** Reloads every sandbox under the state directory and reattaches to what still runs. */
  async recover(): Promise<RecoverySummary> {
    const started = performance.now();
    this.#reg.beginRecovery();
    const { records, broken } = await this.#reg.store.list().catch((e) => {
      this.#reg.recovering([]);
      throw e;
    });
    this.#reg.recovering(records.map((r) => r.id));
    for (const b of broken) {
      this.#log.warn("removing unreadable sandbox directory", { sandbox: b.id, error: b.error });
      await this.#reg.store.remove(b.id).catch(() => {});
    }
    let running = 0, stopped = 0, failed = 0;
    const queue = [...records];
    const worker = async () => {
      for (let sb = queue.shift(); sb; sb = queue.shift()) {
        try {
          await this.#recoverOne(sb);
          if (sb.state === "running") running++;
          else stopped++;
        } catch (e) {
          failed++;
          this.#log.error("cannot recover sandbox", { sandbox: sb.id, error: messageOf(e) });
        } finally {
          this.#reg.recovered(sb.id);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(32, queue.length) }, worker));
    const summary = {
      total: records.length,
      running,
      stopped,
      failed,
      millis: Math.round(performance.now() - started),
    };
    this.#log.info("recover sandboxes finished", { ...summary });
    return summary;
  }

  async #recoverOne(sb: SandboxRecord): Promise<void> {
    this.#reg.add(sb);
    const r = await this.#backend.recover(sb);
    const died = sb.state === "running" && !r.alive;
    if (died) this.#markStopped(sb, r.exit);
    await this.#tasks.recover(sb);
    // The pod died while we were down: its containers go too, as at run time.
    if (died) this.#tasks.stopAll(sb, 0).catch(() => {});
    const own = this.#backend.ownTaskAddress?.(sb);
    if (own) sb.taskAddress ||= own;
    else if (sb.state === "running" || Object.keys(sb.containers).length) {
      const address = await this.#endpoint.open(sb.id);
      if (sb.taskAddress && address !== sb.taskAddress) {
        this.#log.warn("task address changed on recovery", {
          sandbox: sb.id,
          was: sb.taskAddress,
          now: address,
        });
      }
      sb.taskAddress ||= address;
    }
    await this.#reg.save(sb);
    // Created before the restart and never started: the same grace from now on.
    if (sb.state === "created") this.#shutdownUnlessStarted(sb.id);
  }

  /** The boundary went away by itself (holder killed, VM crashed). */
  sandboxExited(id: string, exit: SandboxExit): void {
    const sb = this.#reg.find(id);
    if (sb && this.#starting.has(id)) {
      // Start is still running: it sees this and fails.
      this.#earlyExits.set(id, exit);
      return;
    }
    if (!sb || sb.state !== "running") return;
    // Expected during a requested stop; otherwise the pod died under us.
    if (this.#stopping.has(id)) this.#log.debug("sandbox exited", { sandbox: id });
    else this.#log.warn("sandbox exited", { sandbox: id, status: exit.status });
    this.#markStopped(sb, exit);
    this.#reg.save(sb).catch((e) =>
      this.#log.error("cannot persist sandbox exit", { sandbox: id, error: e })
    );
    // Containers do not outlive their pod.
    this.#tasks.stopAll(sb, 0).catch(() => {});
  }

  #markStopped(sb: SandboxRecord, exit: SandboxExit): void {
    if (sb.state === "stopped") return;
    sb.state = "stopped";
    sb.exit = exit;
    sb.pid = 0;
    this.#reg.sandboxExit(sb.id).set(exit);
  }
}
