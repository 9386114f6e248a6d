/**
 * Containers of Wasm pods: each is one module run by the Wasm host with the
 * engine its sandboxer (or annotation) picks. The rootfs is mounted as for
 * runc, the module found and checked in Task.Create, the host told to
 * prepare it; exits come back as exit records, like the monitor's, so
 * they survive a restart of this daemon.
 *
 * @module
 */
import { NotFoundError } from "../../domain/errors.ts";
import type { SandboxRecord } from "../../domain/sandbox.ts";
import type { ContainerRecord, ExecRecord, ProcessExit } from "../../domain/task.ts";
import { now } from "../../domain/time.ts";
import type {
  ContainerRuntime,
  ProcessExitListener,
  ProcessInfo,
  StartedProcess,
} from "../../ports/container_runtime.ts";
import { readSpec } from "../os/bundle.ts";
import type { Supervisor } from "../../ports/supervisor.ts";
import { mountRootfs, unmountOwn } from "../os/mounts.ts";
import { ownRootfsTarget, rootfsMountTarget } from "../../domain/bundle_paths.ts";
import { ProcessIo } from "../supervisor/process_io.ts";
import { initToken } from "../supervisor/process_tokens.ts";
import type { StreamHub } from "../task/streaming.ts";
import type { EngineName } from "./host/protocol.ts";
import type { WasmHostClient } from "./host_client.ts";
import type { StateLayout } from "../os/state_layout.ts";
import {
  annotatedWasm,
  checkIsWasm,
  engineOf,
  memoryLimitOf,
  modulePath,
  preopensOf,
  rootfsOf,
  wasmEntry,
} from "./wasm_spec.ts";

/** What the Wasm container runtime needs. */
export interface WasmContainerRuntimeOptions {
  readonly dir: string;
  /** Where the daemon's own entries under --dir are. */
  readonly layout: StateLayout;
  readonly supervisor: Supervisor;
  readonly host: WasmHostClient;
  readonly streams: StreamHub;
  /** Engine of containers that do not ask for one. */
  readonly engine: EngineName;
}

/** What a Wasm container keeps in its record. */
export interface WasmProcessState {
  hostPid?: number;
  rootfs?: string;
  engine?: EngineName;
}

type C = ContainerRecord<WasmProcessState>;

/** Wasm modules as containers: no exec (a module has no processes), no pause, update or stats. */
export class WasmContainerRuntime implements ContainerRuntime<WasmProcessState> {
  readonly capabilities = {};
  readonly lacking = {
    exec: "Exec is not supported in Wasm containers: a module has no processes",
    pause: "Pause and Resume are not supported for Wasm containers",
    update:
      "Update is not supported for Wasm containers: the memory limit is fixed when the module is created",
    stats: "Stats are not available for Wasm containers (they have no cgroup)",
  };
  #opts: WasmContainerRuntimeOptions;
  #io: ProcessIo;
  #listener: ProcessExitListener | undefined;

  constructor(opts: WasmContainerRuntimeOptions) {
    this.#opts = opts;
    this.#io = new ProcessIo(opts.streams, opts.layout.path("sockets"));
  }

  setExitListener(listener: ProcessExitListener): void {
    this.#listener = listener;
  }

  async create(sb: SandboxRecord, c: C): Promise<StartedProcess> {
    const spec = await readSpec(c.bundle);
    const entry = wasmEntry(spec);
    const engine = engineOf(spec, sb.annotations, this.#opts.engine);
    const rootfs = c.rootfs.length
      ? rootfsMountTarget(c.bundle, spec.root?.path)
      : rootfsOf(c.bundle, spec);
    const b = c.backend;
    b.engine = engine;
    if (c.rootfs.length) {
      b.rootfs = rootfs;
      await mountRootfs(c.rootfs, rootfs);
    }
    try {
      const module = modulePath(rootfs, entry, spec.process?.cwd, spec.process?.env);
      await checkIsWasm(module, entry, annotatedWasm(spec));
      const token = initToken(c.id);
      const exits = this.#opts.supervisor.exits;
      await exits.remove(token);
      const stdio = await this.#io.stdioPlan(token, c.io);
      const host = this.#opts.host;
      const hostPid = await host.ensure();
      await host.create({
        token: `${sb.id}/${c.id}`,
        exitFile: exits.path(token),
        engine,
        module,
        func: entry.func,
        args: spec.process?.args ?? [],
        env: spec.process?.env ?? [],
        preopens: await preopensOf(spec, rootfs),
        memoryLimit: memoryLimitOf(spec),
        ...stdio,
      });
      b.hostPid = hostPid;
      this.#watch(sb.id, c, hostPid);
      await this.#io.attach(sb.id, token, c.io);
      return { pid: hostPid };
    } catch (e) {
      if (b.rootfs) await unmountOwn(rootfs, c.rootfs.length).catch(() => {});
      throw e;
    }
  }

  #watch(sandboxId: string, c: C, hostPid: number): void {
    this.#opts.supervisor.exits.expect(initToken(c.id), hostPid, {
      // Reported once its streamed output was read: containerd stops reading at the exit.
      exited: async (r) => {
        await this.#io.delivered(sandboxId, c.io);
        this.#listener?.processExited(sandboxId, c.id, undefined, { status: r.status, at: r.at });
      },
      // The host died with the module: its exit status is unknown.
      lost: () =>
        this.#listener?.processExited(sandboxId, c.id, undefined, { status: 255, at: now() }),
    }, this.#opts.host.needle);
  }

  async start(sb: SandboxRecord, c: C): Promise<void> {
    await this.#opts.host.start(`${sb.id}/${c.id}`);
  }

  async kill(
    sb: SandboxRecord,
    c: C,
    e: ExecRecord | undefined,
    signal: number,
  ): Promise<void> {
    if (e) throw new NotFoundError(`Wasm containers have no exec process "${e.id}"`);
    await this.#opts.host.kill(`${sb.id}/${c.id}`, signal);
  }

  async delete(sb: SandboxRecord, c: C): Promise<void> {
    const token = initToken(c.id);
    this.#opts.supervisor.exits.cancel(token);
    if (await this.#opts.host.alive()) await this.#opts.host.delete(`${sb.id}/${c.id}`);
    const rootfs = ownRootfsTarget(c.bundle, c.rootfs.length, c.backend.rootfs);
    // Only the mounts Create made (directly; the mount table only read when that fails).
    if (rootfs) await unmountOwn(rootfs, c.rootfs.length);
    await this.#opts.supervisor.exits.remove(token);
    await this.#io.release(sb.id, token, c.io);
  }

  pids(_sb: SandboxRecord, c: C): Promise<ProcessInfo[]> {
    return Promise.resolve([{ pid: c.pid }]);
  }

  resizePty(): Promise<void> {
    return Promise.resolve(); // no pty: a module writes plain output
  }

  async closeStdin(sb: SandboxRecord, c: C): Promise<void> {
    // Streamed stdin ends in order with its stream's data; FIFO stdin at the host.
    if (await this.#io.closeStdin(sb.id, initToken(c.id), c.io)) return;
    await this.#opts.host.closeStdin(`${sb.id}/${c.id}`).catch((e) => {
      if (!(e instanceof NotFoundError)) throw e;
    });
  }

  /** The host knows whether a task the record calls created was started. */
  async started(sb: SandboxRecord, c: C): Promise<boolean> {
    const host = this.#opts.host;
    const tasks = await host.alive() ? await host.list() : [];
    return tasks.some((t) => t.token === `${sb.id}/${c.id}` && t.state === "running");
  }

  async recover(
    sb: SandboxRecord,
    c: C,
    e: ExecRecord | undefined,
  ): Promise<ProcessExit | undefined> {
    if (e) return { status: 255, at: now() };
    const token = initToken(c.id);
    const rec = await this.#opts.supervisor.exits.read(token);
    if (rec) return { status: rec.status, at: rec.at };
    const hostPid = Number(c.backend.hostPid ?? 0);
    const host = this.#opts.host;
    const tasks = await host.alive() ? await host.list() : [];
    const t = tasks.find((x) => x.token === `${sb.id}/${c.id}`);
    // The host that ran it is gone (a new one knows nothing of it): the status is unknown.
    if (!t || (await host.ensure()) !== hostPid) return { status: 255, at: now() };
    await this.#io.attach(sb.id, token, c.io);
    this.#watch(sb.id, c, hostPid);
    return undefined;
  }
}
