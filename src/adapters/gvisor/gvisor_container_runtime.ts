/**
 * Containers of gVisor pods: runsc subcontainers of the pod's sandbox.
 *
 * runsc differs from runc in ways this file is about:
 * - a subcontainer takes its stdio from `runsc start` (not `create`), so
 *   Create runs `runsc create` directly and Start runs `runsc start` under a
 *   monitor that owns the stdio; but its pty comes from `create`, so a
 *   terminal container's monitor runs `runsc create` instead;
 * - container processes live inside the sandbox, not on the host: the
 *   monitor learns the exit from `runsc wait` (waiter mode), and an exec's
 *   host pid is that of the `runsc exec` process waiting for it, so signals go
 *   through `runsc kill --pid` with the pid inside the sandbox;
 * - every container of a pod shares the sandbox's host cgroup; stats are the
 *   sandbox's.
 *
 * @module
 */
import { join } from "node:path";
import { FailedPreconditionError, InternalError, UnimplementedError } from "../../domain/errors.ts";
import type { OciSpec } from "../../domain/oci.ts";
import type { SandboxRecord } from "../../domain/sandbox.ts";
import type { ContainerRecord, ExecRecord, Io, ProcessExit } from "../../domain/task.ts";
import { now } from "../../domain/time.ts";
import type {
  ContainerRuntime,
  ProcessExitListener,
  ProcessInfo,
  StoredAnyBytes,
} from "../../ports/container_runtime.ts";
import { sleep } from "../../app/sync.ts";
import { readSpec } from "../os/bundle.ts";
import { cgroupMetrics, cgroupPathsOf } from "../os/cgroups.ts";
import type { ExitWatcher } from "../os/exit_watcher.ts";
import { HelperFailedError } from "../os/helper.ts";
import { startMonitored } from "../os/monitored.ts";
import { mountAll, mountsUnder, unmountAll } from "../os/mounts.ts";
import { addPodFileMounts } from "../os/pod_files.ts";
import { ProcessIo } from "../os/process_io.ts";
import { execToken, initToken } from "../os/process_tokens.ts";
import { lastRuncError, type RuncCli } from "../runc/runc_cli.ts";
import type { StreamHub } from "../task/streaming.ts";
import { CONTAINER_TYPE, SANDBOX_ID } from "./gvisor_sandbox_backend.ts";

/** What the gVisor container runtime needs. */
export interface GvisorContainerRuntimeOptions {
  /** The sandboxer's --dir. */
  readonly dir: string;
  readonly helper: string;
  readonly exits: ExitWatcher;
  readonly runsc: RuncCli;
  readonly streams: StreamHub;
}

/** Backend state kept in a container or exec record. */
interface GvisorBackend {
  /** Pid of the monitor (set once started). */
  helperPid?: number;
  /** Pid inside the sandbox (execs), for `runsc kill --pid`. */
  innerPid?: number;
  rootfs?: string;
}

/**
 * Makes a container spec a subcontainer of sandbox `sandboxId`: runsc reads
 * the CRI annotations, and namespace paths (of the pod's host processes) mean
 * nothing inside a sandbox.
 */
export function asSubcontainer(spec: OciSpec, sandboxId: string): void {
  spec.annotations = {
    ...spec.annotations,
    [CONTAINER_TYPE]: "container",
    [SANDBOX_ID]: sandboxId,
  };
  for (const ns of spec.linux?.namespaces ?? []) delete ns.path;
}

/** runsc-backed containers. */
export class GvisorContainerRuntime implements ContainerRuntime {
  #opts: GvisorContainerRuntimeOptions;
  #runsc: RuncCli;
  #io: ProcessIo;
  #listener: ProcessExitListener | undefined;

  constructor(opts: GvisorContainerRuntimeOptions) {
    this.#opts = opts;
    this.#runsc = opts.runsc;
    this.#io = new ProcessIo(opts.streams, join(opts.dir, "s"));
  }

  setExitListener(listener: ProcessExitListener): void {
    this.#listener = listener;
  }

  stateDir(sandboxId: string, containerId: string): string {
    return join(this.#opts.dir, sandboxId, "c", containerId);
  }

  async create(sb: SandboxRecord, c: ContainerRecord): Promise<void> {
    const spec = await readSpec(c.bundle);
    asSubcontainer(spec, sb.id);
    await addPodFileMounts(spec, join(this.#opts.dir, sb.id));
    await Deno.writeTextFile(join(c.bundle, "config.json"), JSON.stringify(spec));
    const state = this.stateDir(sb.id, c.id);
    await Deno.mkdir(state, { recursive: true, mode: 0o700 });
    const b = c.backend as GvisorBackend;
    if (c.rootfs.length) {
      b.rootfs = join(c.bundle, spec.root?.path ?? "rootfs");
      await mountAll(c.rootfs, b.rootfs);
    }
    const pidFile = join(state, "init.pid");
    const logFile = join(state, "create.log.json");
    try {
      if (c.io.terminal) {
        // runsc hands out a container's pty at create: the monitor takes it
        // now, and learns the exit by waiting (which holds until the start).
        const token = initToken(c.id);
        const h = await this.#monitor(sb.id, token, c.io, pidFile, state, {
          argv: (console) => [
            ...this.#runsc.global(logFile),
            "create",
            "--bundle",
            c.bundle,
            "--pid-file",
            pidFile,
            "--console-socket",
            console!,
            c.id,
          ],
          waitArgv: [...this.#runsc.global(), "wait", c.id],
          logFile,
        });
        c.pid = h.pid;
        b.helperPid = h.helperPid;
        this.#watch(sb.id, c, undefined, h.helperPid);
        await this.#io.attach(sb.id, token, c.io);
        return;
      }
      await this.#runsc.createDetached(c.id, c.bundle, pidFile, logFile);
      c.pid = Number((await Deno.readTextFile(pidFile)).trim());
    } catch (e) {
      if (b.rootfs) await unmountAll(b.rootfs).catch(() => {});
      throw e;
    }
  }

  async start(sb: SandboxRecord, c: ContainerRecord): Promise<void> {
    // A pty container's monitor exists since create: it owns the terminal.
    if ((c.backend as GvisorBackend).helperPid) return await this.#runsc.start(c.id);
    const state = this.stateDir(sb.id, c.id);
    const token = initToken(c.id);
    const logFile = join(state, "start.log.json");
    const h = await this.#monitor(sb.id, token, c.io, join(state, "init.pid"), state, {
      argv: () => [...this.#runsc.global(logFile), "start", c.id],
      waitArgv: [...this.#runsc.global(), "wait", c.id],
      logFile,
    });
    (c.backend as GvisorBackend).helperPid = h.helperPid;
    this.#watch(sb.id, c, undefined, h.helperPid);
    await this.#io.attach(sb.id, token, c.io);
  }

  async startExec(sb: SandboxRecord, c: ContainerRecord, e: ExecRecord): Promise<void> {
    const state = this.stateDir(sb.id, c.id);
    const processFile = join(state, `exec-${e.id}.json`);
    const spec = { ...(e.spec as Record<string, unknown>), terminal: e.io.terminal };
    await Deno.writeTextFile(processFile, JSON.stringify(spec));
    const token = execToken(c.id, e.id);
    const innerPidFile = join(state, `exec-${e.id}.inner-pid`);
    const logFile = join(state, `exec-${e.id}.log.json`);
    const h = await this.#monitor(sb.id, token, e.io, join(state, `exec-${e.id}.pid`), state, {
      argv: (console) => [
        ...this.#runsc.global(logFile),
        "exec",
        "--detach",
        "--process",
        processFile,
        "--pid-file",
        join(state, `exec-${e.id}.pid`),
        "--internal-pid-file",
        innerPidFile,
        ...(console ? ["--console-socket", console] : []),
        c.id,
      ],
      logFile,
    });
    e.pid = h.pid;
    const b = e.backend as GvisorBackend;
    b.helperPid = h.helperPid;
    b.innerPid = Number((await Deno.readTextFile(innerPidFile).catch(() => "")).trim()) ||
      undefined;
    this.#watch(sb.id, c, e, h.helperPid);
    await this.#io.attach(sb.id, token, e.io);
  }

  async #monitor(
    sandboxId: string,
    token: string,
    io: Io,
    pidFile: string,
    stateDir: string,
    cmd: { argv: (console?: string) => string[]; waitArgv?: string[]; logFile: string },
  ) {
    const deps = { helper: this.#opts.helper, exits: this.#opts.exits, io: this.#io };
    try {
      return await startMonitored(deps, { token, io, pidFile, stateDir, ...cmd });
    } catch (e) {
      if (e instanceof HelperFailedError) {
        const why = await lastRuncError(cmd.logFile) ?? e.message;
        throw new InternalError(`runsc failed in sandbox "${sandboxId}": ${why}`);
      }
      throw e;
    }
  }

  #watch(sandboxId: string, c: ContainerRecord, e: ExecRecord | undefined, helperPid: number) {
    const token = e ? execToken(c.id, e.id) : initToken(c.id);
    this.#opts.exits.expect(token, helperPid, {
      exited: (r) =>
        this.#listener?.processExited(sandboxId, c.id, e?.id, { status: r.status, at: r.at }),
      lost: () => this.#lost(sandboxId, c, e),
    });
  }

  /** The monitor died without a record: wait until runsc sees the container stopped. */
  async #lost(sandboxId: string, c: ContainerRecord, e: ExecRecord | undefined): Promise<void> {
    if (!e) {
      for (;;) {
        const st = await this.#runsc.state(c.id).catch(() => undefined);
        if (!st || st.status === "stopped") break;
        await sleep(2000);
      }
    }
    this.#listener?.processExited(sandboxId, c.id, e?.id, { status: 255, at: now() });
  }

  async kill(
    _sb: SandboxRecord,
    c: ContainerRecord,
    e: ExecRecord | undefined,
    signal: number,
    all: boolean,
  ): Promise<void> {
    if (!e) {
      await this.#runsc.kill(c.id, signal, all);
      return;
    }
    const b = e.backend as GvisorBackend;
    if (!e.pid || !b.innerPid) {
      throw new FailedPreconditionError(`Cannot signal exec "${e.id}": it was not started`);
    }
    if (!await this.#opts.exits.alive(execToken(c.id, e.id), Number(b.helperPid))) return;
    await this.#runsc.run(
      ["kill", "--pid", String(b.innerPid), c.id, String(signal)],
      `signal exec "${e.id}"`,
    ).catch((err) => {
      // The process ended between the check and the signal.
      if (!/no such process|not found|not running/i.test(String(err))) throw err;
    });
  }

  async delete(sb: SandboxRecord, c: ContainerRecord): Promise<void> {
    const token = initToken(c.id);
    const exits = this.#opts.exits;
    exits.cancel(token);
    await this.#runsc.delete(c.id, true);
    const helperPid = Number((c.backend as GvisorBackend).helperPid ?? 0);
    for (let i = 0; i < 50 && helperPid && await exits.alive(token, helperPid); i++) {
      await sleep(50);
    }
    const rootfs = (c.backend as GvisorBackend).rootfs ?? join(c.bundle, "rootfs");
    if ((await mountsUnder(rootfs).catch(() => [])).length) await unmountAll(rootfs);
    await exits.remove(token);
    await this.#io.release(sb.id, token, c.io);
    await Deno.remove(this.stateDir(sb.id, c.id), { recursive: true }).catch(() => {});
  }

  async deleteExec(sb: SandboxRecord, c: ContainerRecord, e: ExecRecord): Promise<void> {
    const token = execToken(c.id, e.id);
    await this.#opts.exits.remove(token);
    await this.#io.release(sb.id, token, e.io);
    const state = this.stateDir(sb.id, c.id);
    for (const suffix of [".json", ".pid", ".inner-pid", ".log.json"]) {
      await Deno.remove(join(state, `exec-${e.id}${suffix}`)).catch(() => {});
    }
  }

  /** Pids inside the sandbox (gVisor's own pid space), as `runsc ps` lists them. */
  async pids(_sb: SandboxRecord, c: ContainerRecord): Promise<ProcessInfo[]> {
    const out = await this.#runsc.run(
      ["ps", "--format", "json", c.id],
      `list processes of "${c.id}"`,
    );
    const byInner = new Map(
      Object.values(c.execs).map((e) => [(e.backend as GvisorBackend).innerPid, e.id]),
    );
    const list = JSON.parse(out || "[]");
    return (Array.isArray(list) ? list : [])
      .map((p) => Number(typeof p === "object" && p ? p.PID ?? p.pid : p))
      .filter((pid) => Number.isInteger(pid) && pid > 0)
      .map((pid) => ({ pid, execId: byInner.get(pid) }));
  }

  async pause(_sb: SandboxRecord, c: ContainerRecord): Promise<void> {
    await this.#runsc.pause(c.id);
  }

  async resume(_sb: SandboxRecord, c: ContainerRecord): Promise<void> {
    await this.#runsc.resume(c.id);
  }

  update(): Promise<void> {
    // runsc has no update verb: the sandbox's resources are the pod's.
    return Promise.reject(
      new UnimplementedError("gVisor cannot change a running container's resources"),
    );
  }

  async stats(sb: SandboxRecord, _c: ContainerRecord): Promise<StoredAnyBytes> {
    if (!sb.pid) throw new FailedPreconditionError(`Sandbox "${sb.id}" is not running`);
    return await cgroupMetrics(await cgroupPathsOf(sb.pid));
  }

  async resizePty(
    _sb: SandboxRecord,
    c: ContainerRecord,
    e: ExecRecord | undefined,
    width: number,
    height: number,
  ): Promise<void> {
    await this.#io.control(
      e ? execToken(c.id, e.id) : initToken(c.id),
      `resize ${width} ${height}`,
    );
  }

  async closeStdin(sb: SandboxRecord, c: ContainerRecord, e: ExecRecord | undefined) {
    await this.#io.closeStdin(sb.id, e ? execToken(c.id, e.id) : initToken(c.id), (e ?? c).io);
  }

  async recover(
    sb: SandboxRecord,
    c: ContainerRecord,
    e: ExecRecord | undefined,
  ): Promise<ProcessExit | undefined> {
    const exits = this.#opts.exits;
    const token = e ? execToken(c.id, e.id) : initToken(c.id);
    const helperPid = Number(((e ?? c).backend as GvisorBackend).helperPid ?? 0);
    if (!e && !helperPid) {
      const rec = await exits.read(token);
      if (rec) return { status: rec.status, at: rec.at };
      const st = await this.#runsc.state(c.id).catch(() => undefined);
      // Created, never started: runsc holds it, ready to start.
      if (st?.status === "created") return undefined;
      // Started by a daemon that died before it saved the monitor's pid.
      if (st && st.status !== "stopped") {
        this.#lost(sb.id, c, undefined);
        return undefined;
      }
      return { status: 255, at: now() };
    }
    if (await exits.alive(token, helperPid)) await this.#io.attach(sb.id, token, (e ?? c).io);
    const rec = await exits.read(token);
    if (rec) return { status: rec.status, at: rec.at };
    if (await exits.alive(token, helperPid)) {
      this.#watch(sb.id, c, e, helperPid);
      return undefined;
    }
    return { status: 255, at: now() };
  }
}
