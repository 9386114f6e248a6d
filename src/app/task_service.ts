/**
 * The Task API (containerd.task.v2/v3.Task) semantics shared by every sandbox
 * kind: validation, lifecycle rules, persistence, exit bookkeeping and
 * events. What a kind does to really run a process is behind the
 * `ContainerRuntime` port.
 *
 * Every call is scoped to the sandbox whose task endpoint received it: a
 * container of another pod is NOT_FOUND there.
 *
 * @module
 */
import {
  AlreadyExistsError,
  FailedPreconditionError,
  InvalidArgumentError,
  InvalidTransitionError,
  NotFoundError,
  UnimplementedError,
} from "../domain/errors.ts";
import { validateId } from "../domain/ids.ts";
import { validateBundlePath } from "../domain/bundle_paths.ts";
import type { SandboxRecord } from "../domain/sandbox.ts";
import {
  checkDeletable,
  checkProcessTransition,
  type ContainerRecord,
  type ExecRecord,
  type Io,
  type Mount,
  type ProcessExit,
  type ProcessRecord,
  type ProcessState,
} from "../domain/task.ts";
import { type Instant, now } from "../domain/time.ts";
import type {
  Capabilities,
  Capability,
  ContainerRuntime,
  ProcessExitListener,
  ProcessInfo,
  StoredAnyBytes,
} from "../ports/container_runtime.ts";
import type { EventPublisher } from "../ports/event_publisher.ts";
import { log } from "../lib/log.ts";
import type { SandboxRegistry } from "./registry.ts";
import { withTimeout } from "../lib/sync.ts";

/** Capabilities by the Task API calls that need them, for messages. */
const CAPABILITY_NAMES: Record<Capability, string> = {
  exec: "Exec",
  pause: "Pause/Resume",
  update: "Update",
  stats: "Stats",
};

/** Task.Create input. */
export interface CreateTaskInput {
  readonly id: string;
  readonly bundle: string;
  readonly rootfs: readonly Mount[];
  readonly io: Io;
}

/**
 * How a call came. `replay`: the task relay sent it again to a restarted
 * daemon because the previous one died before answering it. Such a call may
 * already have taken effect; when the state shows it did (the same container,
 * bundle and spec), it is answered as it would have been, where a genuine
 * second call is refused (ALREADY_EXISTS, not created…).
 */
export interface CallOptions {
  readonly replay?: boolean;
}

/** What Task.State reports. */
export interface TaskState {
  readonly id: string;
  readonly execId: string;
  readonly bundle: string;
  readonly pid: number;
  readonly state: ProcessState;
  readonly io: Io;
  readonly exitStatus: number;
  readonly exitedAt?: Instant;
}

/** What Task.Delete and Task.Wait report. */
export interface TaskExit {
  readonly pid: number;
  readonly exitStatus: number;
  readonly exitedAt?: Instant;
}

const SIGKILL = 9;
const SIGTERM = 15;
/** How long a forced kill may take before Stop gives up waiting. */
const KILL_GRACE_MS = 10_000;

/** Task API use cases. */
export class TaskService implements ProcessExitListener {
  #reg: SandboxRegistry;
  #runtime: ContainerRuntime;
  #events: EventPublisher;
  #log = log.with({ component: "tasks" });
  /** Exit announcements held back while a Start of that process runs. */
  #held = new Map<string, (() => void)[]>();

  constructor(registry: SandboxRegistry, runtime: ContainerRuntime, events: EventPublisher) {
    this.#reg = registry;
    this.#runtime = runtime;
    this.#events = events;
    runtime.setExitListener(this);
  }

  /**
   * Runs a Start. An exit reported while it runs is held back and announced
   * after it, so /tasks/exit never precedes /tasks/start (as containerd's
   * shims guarantee).
   */
  async #starting(cid: string, execId: string | undefined, fn: () => Promise<void>): Promise<void> {
    const key = processKey(cid, execId);
    this.#held.set(key, []);
    try {
      await fn();
    } finally {
      const held = this.#held.get(key) ?? [];
      this.#held.delete(key);
      for (const release of held) release();
    }
  }

  // ------------------------------------------------------------------ lookups

  /**
   * The runtime's implementation of capability `k`; UNIMPLEMENTED, with the
   * runtime's reason, when it declares none.
   */
  #capability<K extends Capability>(k: K): NonNullable<Capabilities[K]> {
    const impl = this.#runtime.capabilities[k];
    if (impl) return impl as NonNullable<Capabilities[K]>;
    throw new UnimplementedError(
      this.#runtime.lacking?.[k] ?? `${CAPABILITY_NAMES[k]} is not supported by this sandboxer`,
    );
  }

  #container(sb: SandboxRecord, id: string): ContainerRecord {
    const c = sb.containers[id];
    if (!c) throw new NotFoundError(`Container "${id}" not found in sandbox "${sb.id}"`);
    return c;
  }

  #process(sb: SandboxRecord, id: string, execId: string): ContainerRecord | ExecRecord {
    const c = this.#container(sb, id);
    if (!execId) return c;
    const e = c.execs[execId];
    if (!e) throw new NotFoundError(`Exec process "${execId}" not found in container "${id}"`);
    return e;
  }

  // ------------------------------------------------------------------ Task API

  /** Task.Create: makes the container and its (not yet started) init process. */
  async create(
    sandboxId: string,
    namespace: string,
    input: CreateTaskInput,
    opts: CallOptions = {},
  ): Promise<number> {
    validateId("container", input.id);
    // Absolute and clean: what is mounted and written is derived from it.
    validateBundlePath(input.bundle);
    return await this.#reg.withContainer(sandboxId, input.id, async () => {
      const sb = this.#reg.get(sandboxId);
      if (sb.state !== "running") {
        throw new FailedPreconditionError(
          `Cannot create container "${input.id}": sandbox "${sandboxId}" is ${sb.state}`,
        );
      }
      const owner = this.#reg.sandboxOfContainer(input.id);
      const made = sb.containers[input.id];
      // Recovery undid a Create that never finished, so one found here finished.
      if (opts.replay && owner === sandboxId && made && !made.pending && sameCreate(made, input)) {
        this.#log.info("replayed create answered with its outcome", { container: input.id });
        return made.pid;
      }
      if (owner) {
        throw new AlreadyExistsError(
          `Container "${input.id}" already exists in sandbox "${owner}"`,
        );
      }
      const c: ContainerRecord = {
        id: input.id,
        sandboxId,
        namespace,
        bundle: input.bundle,
        rootfs: input.rootfs,
        io: input.io,
        createdAt: now(),
        state: "created",
        pid: 0,
        execs: {},
        backend: {},
        pending: "create",
      };
      sb.containers[c.id] = c;
      this.#reg.addContainer(sandboxId, c);
      await this.#reg.save(sb);
      try {
        c.pid = (await this.#runtime.create(sb, c)).pid;
      } catch (e) {
        await this.#runtime.delete(sb, c).catch((err) =>
          this.#log.warn("cleanup of failed create failed", { container: c.id, error: err })
        );
        delete sb.containers[c.id];
        this.#reg.removeContainer(c.id);
        await this.#reg.save(sb);
        throw e;
      }
      c.pending = undefined;
      await this.#reg.save(sb);
      this.#events.publish(namespace, {
        topic: "/tasks/create",
        containerId: c.id,
        bundle: c.bundle,
        rootfs: c.rootfs,
        io: c.io,
        pid: c.pid,
      });
      return c.pid;
    });
  }

  /** Task.Start: starts the init process, or an exec process added by Exec. */
  start(sandboxId: string, id: string, execId: string, opts: CallOptions = {}): Promise<number> {
    return this.#reg.withContainer(sandboxId, id, async () => {
      const sb = this.#reg.get(sandboxId);
      const c = this.#container(sb, id);
      const p = execId ? this.#process(sb, id, execId) : c;
      // A replayed Start that took effect before the crash: answer its pid.
      if (opts.replay && p.state !== "created" && p.pid && !p.undone) {
        this.#log.info("replayed start answered with its outcome", { container: id, exec: execId });
        return p.pid;
      }
      if (!execId) {
        // Start is only for a created process: paused → running is Resume.
        if (c.state !== "created") {
          throw new InvalidTransitionError(`container "${id}"`, c.state, "running");
        }
        await this.#starting(c.id, undefined, async () => {
          await this.#runtime.start(sb, c);
          // The process may already have exited (and been recorded) meanwhile.
          if (c.state === "created") c.state = "running";
          await this.#reg.save(sb);
          this.#events.publish(c.namespace, { topic: "/tasks/start", containerId: id, pid: c.pid });
        });
        return c.pid;
      }
      const e = this.#process(sb, id, execId) as ExecRecord;
      if (e.state !== "created") {
        throw new InvalidTransitionError(`exec process "${execId}"`, e.state, "running");
      }
      if (c.state !== "running") {
        throw new FailedPreconditionError(
          `Cannot start exec "${execId}": container "${id}" is ${c.state}`,
        );
      }
      e.pending = "start";
      await this.#reg.save(sb);
      await this.#starting(c.id, execId, async () => {
        try {
          e.pid = (await this.#capability("exec").startExec(sb, c, e)).pid;
        } catch (err) {
          e.pending = undefined;
          await this.#reg.save(sb);
          throw err;
        }
        e.pending = undefined;
        if (e.state === "created") e.state = "running";
        await this.#reg.save(sb);
        this.#events.publish(c.namespace, {
          topic: "/tasks/exec-started",
          containerId: id,
          execId,
          pid: e.pid,
        });
      });
      return e.pid;
    });
  }

  /** Task.Delete: removes a stopped (or never started) process and reports its exit. */
  delete(sandboxId: string, id: string, execId: string): Promise<TaskExit> {
    return this.#reg.withContainer(sandboxId, id, async () => {
      const sb = this.#reg.get(sandboxId);
      const c = this.#container(sb, id);
      if (execId) {
        const e = this.#process(sb, id, execId) as ExecRecord;
        checkDeletable(`exec process "${execId}"`, e.state);
        await this.#removeExec(sb, c, e);
        await this.#reg.save(sb);
        return exitOf(e);
      }
      checkDeletable(`container "${id}"`, c.state);
      for (const e of Object.values(c.execs)) {
        if (e.state === "running" || e.state === "paused") {
          await this.#runtime.kill(sb, c, e, SIGKILL, false).catch(() => {});
        }
        await this.#runtime.capabilities.exec?.deleteExec(sb, c, e).catch(() => {});
      }
      await this.#runtime.delete(sb, c);
      this.#releaseWaiters(c);
      delete sb.containers[id];
      this.#reg.removeContainer(id);
      await this.#reg.save(sb);
      const exit = exitOf(c);
      this.#events.publish(c.namespace, {
        topic: "/tasks/delete",
        containerId: id,
        id,
        pid: c.pid,
        exitStatus: exit.exitStatus,
        exitedAt: exit.exitedAt ?? now(),
      });
      return exit;
    });
  }

  /** Task.Exec: registers an exec process; Task.Start runs it. */
  async exec(
    sandboxId: string,
    id: string,
    execId: string,
    io: Io,
    spec: unknown,
    opts: CallOptions = {},
  ): Promise<void> {
    validateId("exec", execId);
    if (!spec || typeof spec !== "object") {
      throw new InvalidArgumentError(
        `Invalid spec of exec "${execId}": an OCI process object is required`,
      );
    }
    // Without a command the exec could only fail at Start (runc: "args must not be empty").
    const args = (spec as { args?: unknown }).args;
    if (!Array.isArray(args) || args.length === 0 || args.some((a) => typeof a !== "string")) {
      throw new InvalidArgumentError(
        `Invalid spec of exec "${execId}": process.args must be a non-empty list of strings`,
      );
    }
    return await this.#reg.withContainer(sandboxId, id, async () => {
      const sb = this.#reg.get(sandboxId);
      const c = this.#container(sb, id);
      const added = c.execs[execId];
      if (opts.replay && added && sameJson(added.spec, spec) && sameJson(added.io, io)) return;
      if (c.state !== "running") {
        throw new FailedPreconditionError(`Cannot exec in container "${id}": it is ${c.state}`);
      }
      if (added) {
        throw new AlreadyExistsError(
          `Exec process "${execId}" already exists in container "${id}"`,
        );
      }
      const e: ExecRecord = { id: execId, io, spec, state: "created", pid: 0, backend: {} };
      c.execs[execId] = e;
      this.#reg.addExec(id, e);
      await this.#reg.save(sb);
      this.#events.publish(c.namespace, { topic: "/tasks/exec-added", containerId: id, execId });
    });
  }

  /** Task.State. */
  state(sandboxId: string, id: string, execId: string): TaskState {
    const sb = this.#reg.get(sandboxId);
    const c = this.#container(sb, id);
    const p = this.#process(sb, id, execId);
    return {
      id,
      execId,
      bundle: c.bundle,
      pid: p.pid,
      state: p.state,
      io: p.io,
      exitStatus: p.exit?.status ?? 0,
      exitedAt: p.exit?.at,
    };
  }

  /** Task.Kill. A process that already exited is NOT_FOUND, as containerd's shims answer. */
  async kill(
    sandboxId: string,
    id: string,
    execId: string,
    signal: number,
    all: boolean,
    opts: CallOptions = {},
  ): Promise<void> {
    if (!Number.isInteger(signal) || signal < 0 || signal > 64) {
      throw new InvalidArgumentError(`Invalid signal ${signal}`);
    }
    return await this.#reg.withContainer(sandboxId, id, async () => {
      const sb = this.#reg.get(sandboxId);
      const c = this.#container(sb, id);
      const p = this.#process(sb, id, execId);
      if (signal === 0) {
        // A liveness probe, as kill(2) has it (iSulad's lib-shim-v2 sends it after a restart):
        // answered from the exit the monitor recorded, nothing is signalled.
        if (p.state === "stopped") {
          throw new NotFoundError(`Process "${execId || id}" already exited`);
        }
        return;
      }
      if (p.state === "stopped" && !(all && !execId)) {
        // A replayed Kill may be what stopped it: the signal was delivered then.
        if (opts.replay) return;
        throw new NotFoundError(`Cannot signal process "${execId || id}": it already exited`);
      }
      await this.#runtime.kill(sb, c, execId ? p as ExecRecord : undefined, signal, all);
    });
  }

  /**
   * Task.Pids. Never empty for a known task: containerd deletes a task whose
   * Pids comes back empty when it restarts, exited-but-undeleted ones included.
   */
  async pids(sandboxId: string, id: string): Promise<ProcessInfo[]> {
    const sb = this.#reg.get(sandboxId);
    const c = this.#container(sb, id);
    if (c.state === "stopped") return [{ pid: c.pid }];
    const list = await this.#runtime.pids(sb, c);
    return list.length ? list : [{ pid: c.pid }];
  }

  /** Task.Pause. */
  pause(sandboxId: string, id: string): Promise<void> {
    return this.#reg.withContainer(sandboxId, id, async () => {
      const sb = this.#reg.get(sandboxId);
      const c = this.#container(sb, id);
      checkProcessTransition(`container "${id}"`, c.state, "paused");
      await this.#capability("pause").pause(sb, c);
      // The process may have exited (and been recorded) meanwhile.
      if (c.state === "running") c.state = "paused";
      await this.#reg.save(sb);
      this.#events.publish(c.namespace, { topic: "/tasks/paused", containerId: id });
    });
  }

  /** Task.Resume. */
  resume(sandboxId: string, id: string): Promise<void> {
    return this.#reg.withContainer(sandboxId, id, async () => {
      const sb = this.#reg.get(sandboxId);
      const c = this.#container(sb, id);
      if (c.state !== "paused") {
        throw new FailedPreconditionError(`Cannot resume container "${id}": it is ${c.state}`);
      }
      await this.#capability("pause").resume(sb, c);
      if (c.state === "paused") c.state = "running";
      await this.#reg.save(sb);
      this.#events.publish(c.namespace, { topic: "/tasks/resumed", containerId: id });
    });
  }

  /** Task.Checkpoint: not offered (no CRIU integration). */
  checkpoint(sandboxId: string, id: string): never {
    this.#container(this.#reg.get(sandboxId), id);
    throw new UnimplementedError(
      `Cannot checkpoint container "${id}": checkpoints are not supported`,
    );
  }

  /** Task.ResizePty. */
  async resizePty(sandboxId: string, id: string, execId: string, width: number, height: number) {
    const sb = this.#reg.get(sandboxId);
    const c = this.#container(sb, id);
    const p = this.#process(sb, id, execId);
    if (!p.io.terminal) {
      throw new FailedPreconditionError(
        `Cannot resize process "${execId || id}": it has no terminal`,
      );
    }
    if (p.state === "stopped") return;
    await this.#runtime.resizePty(sb, c, execId ? p as ExecRecord : undefined, width, height);
  }

  /** Task.CloseIO. */
  async closeIo(sandboxId: string, id: string, execId: string, stdin: boolean): Promise<void> {
    const sb = this.#reg.get(sandboxId);
    const c = this.#container(sb, id);
    const p = this.#process(sb, id, execId);
    if (!stdin || p.state === "stopped") return;
    await this.#runtime.closeStdin(sb, c, execId ? p as ExecRecord : undefined);
  }

  /** Task.Update: `resources` is OCI LinuxResources JSON. */
  async update(sandboxId: string, id: string, resources: Uint8Array | undefined): Promise<void> {
    let parsed: unknown = {};
    if (resources && resources.length) {
      try {
        parsed = JSON.parse(new TextDecoder().decode(resources));
      } catch (e) {
        throw new InvalidArgumentError(`Invalid resources: not JSON: ${(e as Error).message}`);
      }
      if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) {
        throw new InvalidArgumentError("Invalid resources: a LinuxResources object is required");
      }
    }
    return await this.#reg.withContainer(sandboxId, id, async () => {
      const sb = this.#reg.get(sandboxId);
      const c = this.#container(sb, id);
      if (c.state === "stopped") {
        throw new FailedPreconditionError(`Cannot update container "${id}": it is stopped`);
      }
      await this.#capability("update").update(sb, c, parsed);
    });
  }

  /** Task.Wait: resolves when the process exits. */
  async wait(
    sandboxId: string,
    id: string,
    execId: string,
    signal?: AbortSignal,
  ): Promise<TaskExit> {
    const sb = this.#reg.get(sandboxId);
    const p = this.#process(sb, id, execId);
    const exit = await this.#reg.processExit(id, execId || undefined).wait(signal);
    return { pid: p.pid, exitStatus: exit.status, exitedAt: exit.at };
  }

  /** Task.Stats. */
  async stats(sandboxId: string, id: string): Promise<StoredAnyBytes> {
    const sb = this.#reg.get(sandboxId);
    const c = this.#container(sb, id);
    return await this.#capability("stats").stats(sb, c);
  }

  /** Task.Connect: the task pid of a container. */
  /**
   * Task.Connect. A container the pod does not have (yet) has task pid 0, as
   * containerd's runc shim answers: containerd 1.7 connects to a container's
   * shim, here the pod's socket, before it sends Task.Create. The pod must exist.
   */
  connect(sandboxId: string, id: string): { taskPid: number } {
    const sb = this.#reg.get(sandboxId);
    return { taskPid: sb.containers[id]?.pid ?? 0 };
  }

  // ------------------------------------------------------------ sandbox-wide

  /**
   * Stops every process of a sandbox: SIGTERM, then SIGKILL once `timeoutMs`
   * passed. Resolves when all have exited or the kill grace ran out too.
   */
  async stopAll(sb: SandboxRecord, timeoutMs: number): Promise<void> {
    const live = Object.values(sb.containers).filter((c) => c.state !== "stopped");
    if (!live.length) return;
    const exited = Promise.all(live.map((c) => this.#reg.processExit(c.id).wait()));
    if (timeoutMs > 0) {
      await Promise.all(
        live.map((c) =>
          this.#runtime.kill(sb, c, undefined, c.state === "created" ? SIGKILL : SIGTERM, false)
            .catch((e) => this.#log.debug("SIGTERM failed", { container: c.id, error: e }))
        ),
      );
      if (await withTimeout(exited, timeoutMs)) return;
    }
    await Promise.all(
      live.map((c) =>
        c.state === "stopped" ? undefined : this.#runtime.kill(sb, c, undefined, SIGKILL, true)
          .catch((e) => this.#log.debug("SIGKILL failed", { container: c.id, error: e }))
      ),
    );
    if (!await withTimeout(exited, KILL_GRACE_MS)) {
      this.#log.warn("containers did not exit after SIGKILL", { sandbox: sb.id });
    }
  }

  /** Releases what an exec holds and forgets it (its waiters get its exit, or are let go). */
  async #removeExec(sb: SandboxRecord, c: ContainerRecord, e: ExecRecord): Promise<void> {
    await this.#runtime.capabilities.exec?.deleteExec(sb, c, e);
    this.#releaseWaiters(c, e);
    delete c.execs[e.id];
    this.#reg.removeExec(c.id, e.id);
  }

  /**
   * An exec the engine withdrew from `extensions.tasks` (Controller.Update)
   * without a Task.Delete, as iSulad ends every exec: its record goes once
   * it no longer runs, instead of piling up until its container goes. One
   * that still runs stays (its Wait and Delete still work). The caller holds
   * the sandbox's lock and saves the record.
   */
  async withdrawExec(sb: SandboxRecord, containerId: string, execId: string): Promise<boolean> {
    const c = sb.containers[containerId];
    const e = c?.execs[execId];
    if (!e || e.state === "running" || e.state === "paused") return false;
    await this.#removeExec(sb, c, e);
    return true;
  }

  /**
   * Deletes every container of a sandbox (Shutdown), whatever its state. A
   * container the runtime cannot delete (its processes still run) stays in
   * the record and fails the call, so Shutdown is retried, not reported done.
   */
  async deleteAll(sb: SandboxRecord): Promise<void> {
    const failed: Error[] = [];
    for (const c of Object.values(sb.containers)) {
      for (const e of Object.values(c.execs)) {
        await this.#runtime.capabilities.exec?.deleteExec(sb, c, e).catch((err) =>
          this.#log.warn("cannot delete exec", { container: c.id, exec: e.id, error: err })
        );
      }
      try {
        await this.#runtime.delete(sb, c);
      } catch (err) {
        this.#log.warn("cannot delete container", { container: c.id, error: err });
        failed.push(err as Error);
        continue;
      }
      this.#releaseWaiters(c);
      delete sb.containers[c.id];
      this.#reg.removeContainer(c.id);
    }
    if (failed.length) throw failed[0];
  }

  /**
   * Reattaches the containers of a recovered sandbox: undoes what never
   * finished, adopts what runs, and records exits that happened meanwhile.
   */
  async recover(sb: SandboxRecord): Promise<void> {
    for (const c of Object.values(sb.containers)) {
      if (c.pending === "create") {
        this.#log.info("undoing unfinished create", { sandbox: sb.id, container: c.id });
        await this.#runtime.delete(sb, c).catch(() => {});
        delete sb.containers[c.id];
        this.#reg.removeContainer(c.id);
        continue;
      }
      for (const e of Object.values(c.execs)) await this.#recoverProcess(sb, c, e);
      await this.#recoverProcess(sb, c, undefined);
    }
  }

  async #recoverProcess(sb: SandboxRecord, c: ContainerRecord, e: ExecRecord | undefined) {
    const p: ProcessRecord = e ?? c;
    if (p.state === "stopped" || (e && p.state === "created" && !p.pending)) return;
    if (e && e.pending === "start") {
      // Start never returned: the exec may or may not run; make sure it does not.
      await this.#runtime.kill(sb, c, e, SIGKILL, false).catch(() => {});
      e.pending = undefined;
      // A replay of that Start must not be told it succeeded.
      e.undone = true;
    }
    try {
      const exit = await this.#runtime.recover(sb, c, e);
      if (exit) this.processExited(sb.id, c.id, e?.id, exit);
      else if (!e && c.state === "created" && await this.#runtime.started?.(sb, c)) {
        // Start ran, but the daemon died before recording it.
        this.#log.info("adopting a container started before the crash", { container: c.id });
        c.state = "running";
      }
    } catch (err) {
      this.#log.warn("cannot recover process", { container: c.id, exec: e?.id, error: err });
      this.processExited(sb.id, c.id, e?.id, { status: 255, at: now() });
    }
  }

  /**
   * A process deleted before it exited (never started, or forced) still
   * answers the Waits pending on it: a created init was killed by the
   * delete (137), an exec that never started had no process (0).
   */
  #releaseWaiters(c: ContainerRecord, exec?: ExecRecord): void {
    const release = (execId: string | undefined, p: ProcessRecord) => {
      if (!p.exit) this.#reg.processExit(c.id, execId).set({ status: p.pid ? 137 : 0, at: now() });
    };
    if (exec) return release(exec.id, exec);
    for (const e of Object.values(c.execs)) release(e.id, e);
    release(undefined, c);
  }

  // ------------------------------------------------------------ notifications

  /**
   * Records an exit reported by the runtime. The in-memory update is
   * synchronous (so it needs no lock and cannot deadlock with Stop waiting
   * for it); persistence follows asynchronously.
   */
  processExited(
    sandboxId: string,
    cid: string,
    execId: string | undefined,
    exit: ProcessExit,
  ): void {
    const sb = this.#reg.find(sandboxId);
    const c = sb?.containers[cid];
    const p: ProcessRecord | undefined = execId ? c?.execs[execId] : c;
    if (!sb || !c || !p || p.state === "stopped") return;
    p.state = "stopped";
    p.exit = exit;
    this.#reg.save(sb).catch((e) =>
      this.#log.error("cannot persist exit", { sandbox: sandboxId, error: e })
    );
    this.#log.debug("process exited", {
      sandbox: sandboxId,
      container: cid,
      exec: execId,
      status: exit.status,
    });
    const announce = () => {
      this.#events.publish(c.namespace, {
        topic: "/tasks/exit",
        containerId: cid,
        id: execId ?? cid,
        pid: p.pid,
        exitStatus: exit.status,
        exitedAt: exit.at,
      });
      this.#reg.processExit(cid, execId).set(exit);
    };
    const held = this.#held.get(processKey(cid, execId));
    if (held) held.push(announce);
    else announce();
  }

  processOom(sandboxId: string, cid: string): void {
    const c = this.#reg.find(sandboxId)?.containers[cid];
    if (c) this.#events.publish(c.namespace, { topic: "/tasks/oom", containerId: cid });
  }
}

/** Whether an existing container is what `input` asks for (a replay of its Create). */
function sameCreate(c: ContainerRecord, input: CreateTaskInput): boolean {
  return c.bundle === input.bundle && sameJson(c.io, input.io) && sameJson(c.rootfs, input.rootfs);
}

/** Structural equality of JSON-like values (records round-trip through JSON on disk). */
function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(canonical(a)) === JSON.stringify(canonical(b));
}

/** `v` with object keys sorted, so key order does not matter to `sameJson`. */
function canonical(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(canonical);
  if (!v || typeof v !== "object") return v;
  return Object.fromEntries(
    Object.keys(v).sort().map((k) => [k, canonical((v as Record<string, unknown>)[k])]),
  );
}

function processKey(cid: string, execId: string | undefined): string {
  return execId ? `${cid}/${execId}` : cid;
}

function exitOf(p: ProcessRecord): TaskExit {
  return { pid: p.pid, exitStatus: p.exit?.status ?? 0, exitedAt: p.exit?.at };
}
