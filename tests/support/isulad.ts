/**
 * A stand-in for iSulad (openEuler's container engine) driving a sandboxer:
 * the calls it makes, in its order and with its request shapes, as read from
 * iSulad's `src/daemon/sandbox/sandboxer/` (controller client, sandbox tasks)
 * and `shim_rt_ops.c`, and from lib-shim-v2 (its Task API client). iSulad
 * cannot be built here, so this client is what the replay tests run.
 *
 * What makes it iSulad and not containerd:
 * - Create's `options` is the PodSandboxConfig with an EMPTY type URL;
 *   no rootfs; the netns path; the sandboxer's name.
 * - every container and exec is announced first by Controller.Update with
 *   `fields = ["extensions.tasks"]` and the whole task list as JSON in an Any
 *   of type `github.com/containerd/containerd/Tasks`; the rootfs is the one
 *   mount `{type: "bind", source: <image rootfs>}`;
 * - the Task API is v2 (`containerd.task.v2.Task`), one ttrpc connection per
 *   container, no metadata (no namespace) and no deadline on any call;
 *   Task.Create carries no rootfs and no options (the spec's root is the
 *   absolute path of the mounted image);
 * - an exec ends with an Update withdrawing it, never with Task.Delete;
 * - stop is Kill(stop signal), a wait, Kill(SIGKILL), then Kill(0) as a
 *   liveness probe; removal is Task.Delete, Task.Shutdown and the Update
 *   withdrawing the container;
 * - the pod's Wait runs in the background; on UNAVAILABLE it probes
 *   Platform every 5 s and waits again.
 *
 * @module
 */
import { join } from "node:path";
import { ControllerClient } from "../../src/adapters/grpc/controller_client.ts";
import { TtrpcClient } from "../../src/adapters/ttrpc/client.ts";
import { type UnaryClient, unaryClient } from "../../src/adapters/ttrpc/typed.ts";
import { Code, codeOf, type CodeValue } from "../../src/domain/errors.ts";
import { PodSandboxConfig } from "../../src/gen/cri/api.ts";
import { TaskDefinition as TaskV2 } from "../../src/gen/containerd/runtime/task/v2/shim.ts";
import type { TestDaemon } from "./daemon.ts";
import { randomId } from "./pod.ts";
import { ensureBusyboxRootfs } from "./rootfs.ts";

/** iSulad's constants (sandboxer_sandbox.cc). */
export const TASKS_FIELD = "extensions.tasks";
export const TASKS_TYPE_URL = "github.com/containerd/containerd/Tasks";
/** lib-shim-v2's exec spec type URL. */
export const PROCESS_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/** How iSulad retries a pod's Wait the sandboxer could not answer. */
const PLATFORM_PROBE_MS = 5_000;

/** The outcome of a background wait: an exit, an error, or abandoned by an engine restart. */
export type WaitOutcome =
  | { kind: "exit"; status: number }
  | { kind: "error"; code: CodeValue; message: string }
  | { kind: "abandoned" };

/** A pod as iSulad keeps it. */
export interface IsuladPod {
  readonly id: string;
  readonly pid: number;
  readonly address: string;
  readonly selinuxLabel: string | undefined;
  /** The background Controller.Wait of the current engine run. */
  wait: Promise<WaitOutcome>;
  /** How many times the Wait loop probed Platform after UNAVAILABLE. */
  platformProbes: number;
  /** The task list iSulad sends in every Update (its m_tasks). */
  readonly tasks: Map<string, SandboxTask>;
}

/** One entry of iSulad's `sandbox_tasks` JSON. */
export interface SandboxTask {
  task_id: string;
  spec: unknown;
  rootfs: { type: string; source: string }[];
  stdin: string;
  stdout: string;
  stderr: string;
  processes?: SandboxProcess[];
}

/** One exec of a task in the JSON. */
export interface SandboxProcess {
  exec_id: string;
  spec: unknown;
  stdin: string;
  stdout: string;
  stderr: string;
}

/** Stdio as iSulad passes it: FIFO paths it made and reads itself ("" for none). */
export interface Stdio {
  readonly stdin?: string;
  readonly stdout?: string;
  readonly stderr?: string;
}

/** A container iSulad created. */
export interface IsuladContainer {
  readonly id: string;
  readonly pod: IsuladPod;
  readonly bundle: string;
  /** The image rootfs iSulad's storage mounted (the spec's absolute root). */
  readonly rootfs: string;
  readonly pid: number;
  /** The background Task.Wait of the current engine run (set by start). */
  exit: Promise<WaitOutcome>;
}

/** What a container needs: its OCI spec (root.path is set here) and image. */
export interface ContainerSpec {
  /** The OCI runtime spec; root.path is replaced by the mounted image. */
  readonly spec: Record<string, unknown>;
  /** The image's read-only layer (the overlay's lowerdir); the busybox rootfs by default. */
  readonly image?: string;
  readonly terminal?: boolean;
  readonly stdio?: Stdio;
  readonly id?: string;
}

/** What the stop sequence saw. */
export interface StopResult {
  readonly exit: WaitOutcome;
  /** Code of Kill(SIGKILL) (NOT_FOUND once the stop signal ended it). */
  readonly sigkill: CodeValue;
  /** Code of the Kill(0) liveness probe after the exit. */
  readonly probe: CodeValue;
}

/** What the engine-restart resync saw for one pod and its containers. */
export interface ResyncResult {
  readonly status: Record<string, string>;
  readonly state: Record<string, StateResult>;
  readonly probe: Record<string, CodeValue>;
}

/** Task.State's answer: a status, or the error code. */
export type StateResult = { status: number } | { code: CodeValue };

type TaskClient = UnaryClient<typeof TaskV2>;

/** The code of a settled call: OK or the error's. */
async function codeOfCall(p: Promise<unknown>): Promise<CodeValue> {
  try {
    await p;
    return Code.OK;
  } catch (e) {
    return codeOf(e);
  }
}

function outcome(p: Promise<{ exitStatus: number }>, alive: () => boolean): Promise<WaitOutcome> {
  return p.then(
    (r): WaitOutcome => ({ kind: "exit", status: r.exitStatus }),
    (e): WaitOutcome =>
      alive()
        ? { kind: "error", code: codeOf(e), message: (e as Error).message }
        : { kind: "abandoned" },
  );
}

/** The engine. One object is one engine process; `restart` is a new one with the same memory. */
export class IsuladClient {
  readonly #d: TestDaemon;
  readonly #sandboxer: string;
  /** iSulad's storage root: image rootfs mounts live here. */
  readonly storage: string;
  #ctl: ControllerClient;
  /** lib-shim-v2's TTRPC_CLIENTS: one connection per container id. */
  #conns = new Map<string, { conn: TtrpcClient; task: TaskClient }>();
  /** Bumped by restart: background loops of an older run stop. */
  #run = 0;
  readonly pods = new Map<string, IsuladPod>();
  readonly containers = new Map<string, IsuladContainer>();
  readonly #mounted = new Set<string>();

  constructor(d: TestDaemon, sandboxer = d.kind) {
    this.#d = d;
    this.#sandboxer = sandboxer;
    this.storage = join(d.base, "isulad");
    this.#ctl = new ControllerClient(d.listen);
  }

  // ---------------------------------------------------------------- pods

  /** RunPodSandbox: Create (options untyped, netns, no rootfs), Start, background Wait. */
  async runPod(o: { netnsPath?: string; hostname?: string; id?: string } = {}) {
    const id = o.id ?? randomId();
    const config = PodSandboxConfig.fromPartial({
      metadata: { name: `isulad-${id.slice(0, 6)}`, namespace: "default", uid: id.slice(0, 8) },
      hostname: o.hostname ?? `isulad-${id.slice(0, 6)}`,
      linux: {
        cgroupParent: this.#d.cgroupParent,
        securityContext: { namespaceOptions: { network: 0, pid: 1, ipc: 0 } },
      },
    });
    await this.#ctl.create({
      sandboxId: id,
      sandboxer: this.#sandboxer,
      rootfs: [],
      netnsPath: o.netnsPath ?? "",
      // iSulad's InitCreateRequest sets the value only: the type URL stays empty.
      options: { typeUrl: "", value: PodSandboxConfig.encode(config).finish() },
    });
    const s = await this.#ctl.start(id);
    const pod: IsuladPod = {
      id,
      pid: s.pid,
      address: s.address,
      selinuxLabel: s.labels?.["selinux_label"],
      wait: Promise.resolve({ kind: "abandoned" }),
      platformProbes: 0,
      tasks: new Map(),
    };
    pod.wait = this.#waitPod(pod, this.#run);
    this.pods.set(id, pod);
    return pod;
  }

  /** The background Controller.Wait: on UNAVAILABLE, Platform every 5 s until it answers, then Wait again. */
  async #waitPod(pod: IsuladPod, run: number): Promise<WaitOutcome> {
    const alive = () => run === this.#run;
    for (;;) {
      const r = await outcome(this.#ctl.wait(pod.id), alive);
      if (r.kind !== "error" || r.code !== Code.UNAVAILABLE) return r;
      for (;;) {
        await new Promise((res) => setTimeout(res, PLATFORM_PROBE_MS));
        if (!alive()) return { kind: "abandoned" };
        pod.platformProbes++;
        if (await codeOfCall(this.#ctl.platform(pod.id)) === Code.OK) break;
      }
    }
  }

  /** StopPodSandbox then RemovePodSandbox: Stop(timeout 10), Shutdown; the pod's Wait ends. */
  async removePod(pod: IsuladPod): Promise<WaitOutcome> {
    await this.#ctl.stop(pod.id, 10);
    await this.#ctl.shutdown(pod.id);
    const w = await pod.wait;
    // The engine forgets the pod's containers and unmounts their images.
    for (const c of [...this.containers.values()].filter((c) => c.pod === pod)) {
      this.#dropConn(c.id);
      this.containers.delete(c.id);
    }
    for (const t of pod.tasks.values()) await this.#unmountImage(t.rootfs[0].source);
    this.pods.delete(pod.id);
    return w;
  }

  /** Controller.Update with the pod's whole task list (iSulad's DoSandboxUpdate). */
  async #update(pod: IsuladPod): Promise<void> {
    const json = JSON.stringify({ tasks: [...pod.tasks.values()] });
    await this.#ctl.update({
      sandboxId: pod.id,
      sandboxer: this.#sandboxer,
      fields: [TASKS_FIELD],
      sandbox: {
        sandboxId: pod.id,
        runtime: { name: this.#sandboxer, options: undefined },
        spec: undefined,
        labels: { name: `isulad-${pod.id.slice(0, 6)}` },
        createdAt: undefined,
        updatedAt: { seconds: BigInt(Math.floor(Date.now() / 1000)), nanos: 0 },
        extensions: { tasks: { typeUrl: TASKS_TYPE_URL, value: new TextEncoder().encode(json) } },
        sandboxer: this.#sandboxer,
      },
    });
  }

  // ----------------------------------------------------------- containers

  /** The connection lib-shim-v2 keeps for `id` (shim_v2_new makes a new one). */
  #task(id: string): TaskClient {
    const c = this.#conns.get(id);
    if (!c) throw new Error(`no shim v2 connection for ${id}`);
    return c.task;
  }

  async #connect(id: string, address: string): Promise<TaskClient> {
    this.#dropConn(id);
    // lib-shim-v2's new_conn: ttrpc+unix:// and unix:// are paths.
    const path = address.replace(/^ttrpc\+unix:\/\//, "").replace(/^unix:\/\//, "");
    const conn = await TtrpcClient.connectUnix(path);
    const task = unaryClient(conn, TaskV2);
    this.#conns.set(id, { conn, task });
    return task;
  }

  #dropConn(id: string): void {
    this.#conns.get(id)?.conn.close();
    this.#conns.delete(id);
  }

  /** iSulad's storage: an overlay of the image at <storage>/<id>/merged. */
  async #mountImage(id: string, image: string): Promise<string> {
    const dir = join(this.storage, id);
    const merged = join(dir, "merged"), upper = join(dir, "upper"), work = join(dir, "work");
    for (const p of [merged, upper, work]) await Deno.mkdir(p, { recursive: true });
    const r = await new Deno.Command("mount", {
      args: [
        "-t",
        "overlay",
        "overlay",
        "-o",
        `lowerdir=${image},upperdir=${upper},workdir=${work}`,
        merged,
      ],
      stderr: "piped",
    }).output();
    if (!r.success) throw new Error(`mount overlay: ${new TextDecoder().decode(r.stderr)}`);
    this.#mounted.add(merged);
    return merged;
  }

  async #unmountImage(merged: string): Promise<void> {
    if (!this.#mounted.delete(merged)) return;
    await new Deno.Command("umount", { args: [merged] }).output();
  }

  /**
   * CreateContainer + the runtime's create: announce the container (see
   * `announceContainer`), then Task.Create on a new connection (no rootfs,
   * no options).
   */
  async createContainer(pod: IsuladPod, o: ContainerSpec): Promise<IsuladContainer> {
    const a = await this.announceContainer(pod, o);
    const task = await this.#connect(a.id, pod.address);
    const r = await task.create({
      id: a.id,
      bundle: a.bundle,
      terminal: o.terminal ?? false,
      stdin: a.task.stdin,
      stdout: a.task.stdout,
      stderr: a.task.stderr,
      rootfs: [],
      checkpoint: "",
      parentCheckpoint: "",
      options: undefined,
    });
    const c: IsuladContainer = {
      id: a.id,
      pod,
      bundle: a.bundle,
      rootfs: a.rootfs,
      pid: r.pid,
      exit: Promise.resolve({ kind: "abandoned" }),
    };
    this.containers.set(a.id, c);
    return c;
  }

  /**
   * iSulad's PrepareContainer: mount the image, write the bundle (root.path
   * absolute), add the task to the list and send it all by Update.
   */
  async announceContainer(
    pod: IsuladPod,
    o: ContainerSpec,
  ): Promise<{ id: string; bundle: string; rootfs: string; task: SandboxTask }> {
    const id = o.id ?? randomId();
    const rootfs = await this.#mountImage(id, o.image ?? await ensureBusyboxRootfs());
    const spec = { ...o.spec, root: { path: rootfs, readonly: false } };
    const bundle = join(this.storage, "engines", id);
    await Deno.mkdir(bundle, { recursive: true });
    await Deno.writeTextFile(join(bundle, "config.json"), JSON.stringify(spec));
    const task: SandboxTask = {
      task_id: id,
      spec,
      rootfs: [{ type: "bind", source: rootfs }],
      stdin: o.stdio?.stdin ?? "",
      stdout: o.stdio?.stdout ?? "",
      stderr: o.stdio?.stderr ?? "",
    };
    pod.tasks.set(id, task);
    try {
      await this.#update(pod);
    } catch (e) {
      pod.tasks.delete(id);
      await this.#unmountImage(rootfs);
      throw e;
    }
    return { id, bundle, rootfs, task };
  }

  /** iSulad's PurgeContainer of a container never created (or the Update of a removal). */
  async withdrawContainer(pod: IsuladPod, id: string): Promise<void> {
    const rootfs = pod.tasks.get(id)?.rootfs[0]?.source;
    pod.tasks.delete(id);
    await this.#update(pod);
    if (rootfs) await this.#unmountImage(rootfs);
  }

  /** StartContainer: Task.Start, then the monitor's background Task.Wait. */
  async startContainer(c: IsuladContainer): Promise<number> {
    const task = this.#task(c.id);
    const r = await task.start({ id: c.id, execId: "" });
    this.#monitor(c);
    return r.pid;
  }

  /** shim_rt_monitor: a Task.Wait in the background. */
  #monitor(c: IsuladContainer): void {
    const run = this.#run;
    c.exit = outcome(this.#task(c.id).wait({ id: c.id, execId: "" }), () => run === this.#run);
  }

  /** Task.Stats as lib-shim-v2 asks (it decodes the value as cgroup v1 Metrics whatever its type). */
  async stats(c: IsuladContainer) {
    return (await this.#task(c.id).stats({ id: c.id })).stats;
  }

  /**
   * ExecSync / Exec: announce the process by Update, Task.Exec (spec JSON in
   * an Any), Start, Wait, then an Update withdrawing it (no Task.Delete).
   * The withdrawal happens even when a step fails, as iSulad's PurgeExec.
   */
  async exec(
    c: IsuladContainer,
    process: Record<string, unknown>,
    stdio: Stdio,
    execId = randomId(),
  ): Promise<{ execId: string; status: number }> {
    const p = await this.announceExec(c.pod, c.id, process, stdio, execId);
    try {
      const task = this.#task(c.id);
      await task.exec({
        id: c.id,
        execId,
        terminal: process.terminal === true,
        stdin: p.stdin,
        stdout: p.stdout,
        stderr: p.stderr,
        spec: {
          typeUrl: PROCESS_TYPE_URL,
          value: new TextEncoder().encode(JSON.stringify(process)),
        },
      });
      await task.start({ id: c.id, execId });
      const w = await task.wait({ id: c.id, execId });
      return { execId, status: w.exitStatus };
    } finally {
      await this.withdrawExec(c.pod, c.id, execId);
    }
  }

  /** iSulad's PrepareExec: the process added to its task, sent by Update. */
  async announceExec(
    pod: IsuladPod,
    taskId: string,
    process: Record<string, unknown>,
    stdio: Stdio,
    execId = randomId(),
  ): Promise<SandboxProcess> {
    const t = pod.tasks.get(taskId);
    if (!t) throw new Error(`container ${taskId} is not in the task list`);
    const p: SandboxProcess = {
      exec_id: execId,
      spec: process,
      stdin: stdio.stdin ?? "",
      stdout: stdio.stdout ?? "",
      stderr: stdio.stderr ?? "",
    };
    (t.processes ??= []).push(p);
    try {
      await this.#update(pod);
    } catch (e) {
      t.processes = t.processes.filter((x) => x !== p);
      throw e;
    }
    return p;
  }

  /** iSulad's PurgeExec: the process dropped from its task, sent by Update. */
  async withdrawExec(pod: IsuladPod, taskId: string, execId: string): Promise<void> {
    const t = pod.tasks.get(taskId);
    if (!t) return;
    t.processes = (t.processes ?? []).filter((p) => p.exec_id !== execId);
    await this.#update(pod);
  }

  /**
   * StopContainer: Kill(stop signal), wait up to `timeoutMs` for the exit,
   * Kill(SIGKILL), wait for the exit, then Kill(0) to probe liveness.
   */
  async stopContainer(c: IsuladContainer, signal = 15, timeoutMs = 1_000): Promise<StopResult> {
    const task = this.#task(c.id);
    const kill = (sig: number) =>
      codeOfCall(task.kill({ id: c.id, execId: "", signal: sig, all: false }));
    await task.kill({ id: c.id, execId: "", signal, all: false });
    await Promise.race([c.exit, new Promise((r) => setTimeout(r, timeoutMs))]);
    const sigkill = await kill(9);
    const exit = await c.exit;
    const probe = await kill(0);
    return { exit, sigkill, probe };
  }

  /** RemoveContainer: Task.Delete, Task.Shutdown, drop the connection, withdraw the task, unmount. */
  async removeContainer(c: IsuladContainer): Promise<{ exitStatus: number }> {
    const task = this.#task(c.id);
    const d = await task.delete({ id: c.id, execId: "" });
    await task.shutdown({ id: c.id, now: false });
    this.#dropConn(c.id);
    c.pod.tasks.delete(c.id);
    await this.#update(c.pod);
    await this.#unmountImage(c.rootfs);
    this.containers.delete(c.id);
    return { exitStatus: d.exitStatus };
  }

  /** Task.State of a container or exec over its container's connection: the status, or the error code. */
  async state(c: IsuladContainer, execId = ""): Promise<StateResult> {
    try {
      return { status: (await this.#task(c.id).state({ id: c.id, execId })).status };
    } catch (e) {
      return { code: codeOf(e) };
    }
  }

  // -------------------------------------------------------------- restart

  /**
   * The engine restarts: every connection of the old run drops (its
   * background waits end with it), then, with new connections, each pod gets
   * Controller.Status and a background Wait, and each container shim_v2_new
   * (a new connection), Task.State, a background Task.Wait and Kill(0).
   */
  async restart(): Promise<ResyncResult> {
    this.#run++;
    for (const id of [...this.#conns.keys()]) this.#dropConn(id);
    this.#ctl.close();
    this.#ctl = new ControllerClient(this.#d.listen);
    const status: Record<string, string> = {};
    const state: Record<string, StateResult> = {};
    const probe: Record<string, CodeValue> = {};
    for (const pod of this.pods.values()) {
      status[pod.id] = (await this.#ctl.status(pod.id)).state;
      pod.wait = this.#waitPod(pod, this.#run);
    }
    for (const c of this.containers.values()) {
      const task = await this.#connect(c.id, c.pod.address);
      state[c.id] = await this.state(c);
      this.#monitor(c);
      probe[c.id] = await codeOfCall(task.kill({ id: c.id, execId: "", signal: 0, all: false }));
    }
    return { status, state, probe };
  }

  /** Ends this engine: connections closed, images unmounted (what a failed test leaves). */
  async close(): Promise<void> {
    this.#run++;
    for (const id of [...this.#conns.keys()]) this.#dropConn(id);
    this.#ctl.close();
    for (const m of [...this.#mounted]) await this.#unmountImage(m);
  }
}
