/**
 * Containers of VM pods, seen from the host. containerd (unchanged, 2.x)
 * talks to the host daemon's task address with host paths; this runtime
 * makes them visible in the guest and relays each call to the agent's Task
 * API, which runs the container with the guest's crun (or runc):
 *
 * - the rootfs mounts are mounted, and every host bind mount of the spec is
 *   bind-mounted, under `<dir>/<pod>/shared/<container>/`, which the guest
 *   sees over virtiofs as `/run/kuasar/shared/<container>/`, next to the
 *   spec rewritten for the guest (guest_spec.ts);
 * - or, in a VM sharing no directory, the same packed into a disk image the
 *   guest mounts there instead (bundle_disk.ts);
 * - stdio (FIFOs, files, or containerd's streams) stays on the host, copied
 *   to and from the agent's streams (guest_io.ts);
 * - every process has a Task.Wait pending at the agent; its answer is the
 *   exit. A VM that dies takes its processes with it: they exit 137. The
 *   agent's GetEvents is followed for what only the guest sees (OOM kills).
 *
 * State lives in the guest; after a restart the host asks the agent (State)
 * and re-attaches the waits and the stdio copies.
 *
 * @module
 */
import { detached } from "../../lib/trace.ts";
import { join } from "node:path";
import { grownVmSize, type VmSize } from "../../domain/vm_size.ts";
import { Code, codeOf, UnavailableError } from "../../domain/errors.ts";
import type { SandboxRecord } from "../../domain/sandbox.ts";
import type { ContainerRecord, ExecRecord, Io, Mount, ProcessExit } from "../../domain/task.ts";
import { now } from "../../domain/time.ts";
import { TaskOOM } from "../../gen/containerd/events/task.ts";
import { Status } from "../../gen/containerd/types/task/task.ts";
import { log } from "../../lib/log.ts";
import type {
  Capabilities,
  ContainerRuntime,
  ExecCapability,
  PauseCapability,
  ProcessExitListener,
  ProcessInfo,
  StartedProcess,
  StatsCapability,
  StoredAnyBytes,
  UpdateCapability,
} from "../../ports/container_runtime.ts";
import { sleep } from "../../lib/sync.ts";
import { fromTimestamp } from "../convert.ts";
import { readSpec } from "../os/bundle.ts";
import { type StreamHub, streamingId } from "../task/streaming.ts";
import type { OutputHolder } from "../kind_host.ts";
import type { AgentLink, AgentLinks } from "./agent_links.ts";
import type { PodDisks } from "./pod_disks.ts";
import { guestIo, GuestStdio, releaseOutputs } from "./guest_io.ts";
import { BUNDLE_FSTYPE, type BundleDisks, bundleImage, packBundle } from "./bundle_disk.ts";
import { BUNDLE_DISK_MOUNT } from "../../ports/agent_protocol.ts";
import { guestBundle, makeShare, removeShare, shared, shareDir } from "./guest_share.ts";

/** What the runtime needs from the pod side. */
export interface VmContainerOptions {
  /** The sandboxer's --dir. */
  readonly dir: string;
  readonly links: AgentLinks;
  /** Whether the pod's VM is running (its QEMU has not exited). */
  readonly vmRunning: (sandboxId: string) => boolean;
  /** The host's Streaming service, for containerd's streaming IO. */
  readonly streams: StreamHub;
  /** Keeps output FIFOs open across a restart of this daemon (the task relay). */
  readonly outputHolder?: OutputHolder;
  /** The disks attached to the pods' VMs. */
  readonly disks: PodDisks;
  /** Grows the pod's VM to at least `want` (CPU and memory hot-plug), or refuses with why. */
  readonly resizeVm: (sb: SandboxRecord, want: VmSize) => Promise<void>;
  /** Gives the pod's VM the interfaces added to its netns since (before a container runs). */
  readonly plugLateInterfaces: (sb: SandboxRecord) => Promise<void>;
  /** A pod's bundles go to the guest as disks, not over virtiofs (bundle_disk.ts); unset: shared. */
  readonly bundleDisksOf: (sb: SandboxRecord) => BundleDisks | undefined;
}

/** Exit status of a process whose VM died: killed. */
const VM_GONE_STATUS = 128 + 9;
const PROCESS_SPEC_TYPE = "types.containerd.io/opencontainers/runtime-spec/1/Process";
const RESOURCES_TYPE = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";

const te = new TextEncoder();

function key(sandboxId: string, cid: string, execId?: string): string {
  return `${sandboxId}/${cid}/${execId ?? ""}`;
}

/** The name a process's streams and shares go by: the container id, `.exec` for an exec. */
function streamBase(cid: string, execId?: string): string {
  return execId ? `${cid}.${execId}` : cid;
}

/** Containers relayed to the guest agent. */
export class VmContainerRuntime
  implements ContainerRuntime, ExecCapability, PauseCapability, UpdateCapability, StatsCapability {
  readonly capabilities: Capabilities = { exec: this, pause: this, update: this, stats: this };
  #o: VmContainerOptions;
  #listener: ProcessExitListener | undefined;
  #stdio = new Map<string, GuestStdio>();
  /** Processes whose exit is awaited; removing a key ends its wait. */
  #watched = new Set<string>();
  /** Pods whose agent events are followed. */
  #following = new Set<string>();
  #log = log.with({ component: "vm-containers" });

  constructor(opts: VmContainerOptions) {
    this.#o = opts;
  }

  setExitListener(listener: ProcessExitListener): void {
    this.#listener = listener;
  }

  /** The pod's agent connection; UNAVAILABLE once its VM is gone. */
  async #link(sandboxId: string): Promise<AgentLink> {
    if (!this.#o.vmRunning(sandboxId)) {
      throw new UnavailableError(`The VM of sandbox "${sandboxId}" is not running`);
    }
    return await this.#o.links.get(sandboxId);
  }

  /** The Task API of the pod's agent. */
  async #agent(sandboxId: string) {
    return (await this.#link(sandboxId)).tasks;
  }

  // ------------------------------------------------------------- processes

  async create(sb: SandboxRecord, c: ContainerRecord): Promise<StartedProcess> {
    const share = shareDir(this.#o.dir, sb.id, c.id);
    const t0 = performance.now();
    try {
      // Made already when the engine announced the container (extensions.tasks).
      const early = await shared(share);
      const spec = early
        ? await readSpec(c.bundle).catch(() => undefined)
        : await readSpec(c.bundle);
      if (!early && spec) {
        const root = join(c.bundle, spec.root?.path ?? "rootfs");
        await makeShare(share, c.id, spec, c.rootfs, root, this.#o.disks.attacher(sb.id, c.id));
      }
      const bundleDisk = await this.#packed(sb, c.id, share);
      await this.#o.plugLateInterfaces(sb);
      await this.#growForLimits(sb, c.id, spec?.linux?.resources);
      const link = await this.#link(sb.id);
      const t1 = performance.now();
      const io = guestIo(c.io, streamBase(c.id));
      this.#attach(link, sb.id, c, undefined);
      const r = await link.tasks.create({
        id: c.id,
        bundle: guestBundle(c.id),
        rootfs: bundleDisk ? [{ ...bundleDisk, options: [...bundleDisk.options] }] : [],
        ...io,
        checkpoint: "",
        parentCheckpoint: "",
        options: undefined,
      });
      this.#watch(sb.id, c, undefined);
      this.#log.debug("container created in the guest", {
        sandbox: sb.id,
        container: c.id,
        shareMs: Math.round(t1 - t0),
        agentMs: Math.round(performance.now() - t1),
      });
      return { pid: r.pid };
    } catch (e) {
      await this.#release(sb.id, c.io, c.id, undefined);
      await removeShare(share);
      await this.#o.disks.release(sb.id, c.id).catch(() => {});
      await this.#removeImage(sb, c.id);
      throw e;
    }
  }

  /**
   * Without a shared directory: the share packed into the container's image, the staging
   * unmounted, the image attached; the mount naming it for the agent. Unset: shared.
   */
  async #packed(sb: SandboxRecord, cid: string, share: string): Promise<Mount | undefined> {
    const b = this.#o.bundleDisksOf(sb);
    if (!b) return undefined;
    const image = bundleImage(b, sb.id, cid);
    await packBundle(share, image, b.freeMiB);
    await removeShare(share);
    const serial = await this.#o.disks.acquire(sb.id, cid, image, false);
    return { type: BUNDLE_DISK_MOUNT, source: serial, target: "", options: [BUNDLE_FSTYPE] };
  }

  /** The container's image (unlinked: a VMM still holding it keeps it until it lets go). */
  async #removeImage(sb: SandboxRecord, cid: string): Promise<void> {
    const b = this.#o.bundleDisksOf(sb);
    if (b) await Deno.remove(bundleImage(b, sb.id, cid)).catch(() => {});
  }

  /**
   * A container whose limits exceed its VM (an engine that sized the pod smaller, or not at
   * all) grows it where the VM has room; where it has none the container still runs, with a
   * warning: its limit may never be reached, and refusing it would refuse what runC runs.
   */
  async #growForLimits(sb: SandboxRecord, cid: string, resources: unknown): Promise<void> {
    const grow = grownVmSize(sb.backend as Partial<VmSize>, resources);
    if (!grow) return;
    await this.#o.resizeVm(sb, grow).catch((e) => {
      if (codeOf(e) !== Code.FAILED_PRECONDITION) throw e;
      this.#log.warn("container limits beyond its VM", {
        sandbox: sb.id,
        container: cid,
        why: e.message,
      });
    });
  }

  async start(sb: SandboxRecord, c: ContainerRecord): Promise<void> {
    // The init keeps the pid Create reported (OCI: start runs the created process).
    await (await this.#agent(sb.id)).start({ id: c.id, execId: "" });
  }

  async startExec(sb: SandboxRecord, c: ContainerRecord, e: ExecRecord): Promise<StartedProcess> {
    const link = await this.#link(sb.id);
    const agent = link.tasks;
    const io = guestIo(e.io, streamBase(c.id, e.id));
    this.#attach(link, sb.id, c, e);
    let pid: number;
    try {
      await agent.exec({
        id: c.id,
        execId: e.id,
        ...io,
        spec: { typeUrl: PROCESS_SPEC_TYPE, value: te.encode(JSON.stringify(e.spec)) },
      });
      pid = (await agent.start({ id: c.id, execId: e.id })).pid;
    } catch (err) {
      await agent.delete({ id: c.id, execId: e.id }).catch(() => {});
      await this.#release(sb.id, e.io, c.id, e.id);
      throw err;
    }
    this.#watch(sb.id, c, e);
    return { pid };
  }

  async kill(
    sb: SandboxRecord,
    c: ContainerRecord,
    e: ExecRecord | undefined,
    signal: number,
    all: boolean,
  ): Promise<void> {
    if (!this.#o.vmRunning(sb.id)) {
      // Nothing runs in a VM that is gone.
      this.#vmGone(sb.id, c, e ? [e] : [undefined, ...Object.values(c.execs)]);
      return;
    }
    await (await this.#agent(sb.id)).kill({ id: c.id, execId: e?.id ?? "", signal, all });
  }

  async delete(sb: SandboxRecord, c: ContainerRecord): Promise<void> {
    if (this.#o.vmRunning(sb.id)) {
      await (await this.#agent(sb.id)).delete({ id: c.id, execId: "" }).catch((err) => {
        if (codeOf(err) !== Code.NOT_FOUND) throw err;
      });
    }
    await this.#release(sb.id, c.io, c.id, undefined);
    await removeShare(shareDir(this.#o.dir, sb.id, c.id));
    // After the agent's Delete, which unmounted in the guest what only this container used.
    if (this.#o.vmRunning(sb.id)) await this.#o.disks.release(sb.id, c.id);
    await this.#removeImage(sb, c.id);
  }

  async deleteExec(sb: SandboxRecord, c: ContainerRecord, e: ExecRecord): Promise<void> {
    if (this.#o.vmRunning(sb.id)) {
      await (await this.#agent(sb.id)).delete({ id: c.id, execId: e.id }).catch((err) => {
        if (codeOf(err) !== Code.NOT_FOUND) throw err;
      });
    }
    await this.#release(sb.id, e.io, c.id, e.id);
  }

  async pids(sb: SandboxRecord, c: ContainerRecord): Promise<ProcessInfo[]> {
    const byPid = new Map(Object.values(c.execs).map((e) => [e.pid, e.id]));
    const r = await (await this.#agent(sb.id)).pids({ id: c.id });
    return r.processes.map((p) => ({ pid: p.pid, execId: byPid.get(p.pid) }));
  }

  async pause(sb: SandboxRecord, c: ContainerRecord): Promise<void> {
    await (await this.#agent(sb.id)).pause({ id: c.id });
  }

  async resume(sb: SandboxRecord, c: ContainerRecord): Promise<void> {
    await (await this.#agent(sb.id)).resume({ id: c.id });
  }

  async update(sb: SandboxRecord, c: ContainerRecord, resources: unknown): Promise<void> {
    // Raised beyond its VM: the VM grows first (hot-plug), or the Update is refused with the
    // sizes, rather than accepted and OOM-killed or throttled later.
    const grow = grownVmSize(sb.backend as Partial<VmSize>, resources);
    if (grow) await this.#o.resizeVm(sb, grow);
    await (await this.#agent(sb.id)).update({
      id: c.id,
      resources: { typeUrl: RESOURCES_TYPE, value: te.encode(JSON.stringify(resources)) },
      annotations: {},
    });
  }

  async stats(sb: SandboxRecord, c: ContainerRecord): Promise<StoredAnyBytes> {
    const r = await (await this.#agent(sb.id)).stats({ id: c.id });
    if (!r.stats) throw new UnavailableError(`The agent sent no stats for "${c.id}"`);
    return r.stats;
  }

  async resizePty(
    sb: SandboxRecord,
    c: ContainerRecord,
    e: ExecRecord | undefined,
    width: number,
    height: number,
  ): Promise<void> {
    await (await this.#agent(sb.id)).resizePty({ id: c.id, execId: e?.id ?? "", width, height });
  }

  async closeStdin(
    sb: SandboxRecord,
    c: ContainerRecord,
    e: ExecRecord | undefined,
  ): Promise<void> {
    await this.#stdio.get(key(sb.id, c.id, e?.id))?.endInput();
    await (await this.#agent(sb.id)).closeIO({ id: c.id, execId: e?.id ?? "", stdin: true });
  }

  async recover(
    sb: SandboxRecord,
    c: ContainerRecord,
    e: ExecRecord | undefined,
  ): Promise<ProcessExit | undefined> {
    const io = (e ?? c).io;
    if (!this.#o.vmRunning(sb.id)) {
      await releaseOutputs(this.#o.outputHolder, io);
      return { status: VM_GONE_STATUS, at: now() };
    }
    const link = await this.#link(sb.id);
    const s = await link.tasks.state({ id: c.id, execId: e?.id ?? "" });
    if (s.status === Status.STOPPED) {
      // Its output is not copied again: let containerd's reader see the end.
      await releaseOutputs(this.#o.outputHolder, io);
      return { status: s.exitStatus, at: fromTimestamp(s.exitedAt) ?? now() };
    }
    this.#attach(link, sb.id, c, e);
    this.#watch(sb.id, c, e);
    return undefined;
  }

  // ------------------------------------------------------------- internals

  /** Starts the stdio copies of a process (again, after a restart). */
  #attach(link: AgentLink, sandboxId: string, c: ContainerRecord, e: ExecRecord | undefined) {
    const io = (e ?? c).io;
    if (!io.stdin && !io.stdout && !io.stderr) return;
    this.#stdio.set(
      key(sandboxId, c.id, e?.id),
      new GuestStdio(
        link.client,
        io,
        streamBase(c.id, e?.id),
        this.#o.streams,
        sandboxId,
        this.#o.outputHolder,
      ),
    );
  }

  /** Waits at the agent for the exit of a process and reports it. */
  #watch(sandboxId: string, c: ContainerRecord, e: ExecRecord | undefined): void {
    const k = key(sandboxId, c.id, e?.id);
    this.#watched.add(k);
    this.#followEvents(sandboxId);
    // Not in the caller's trace: the wait outlives the Create/Exec that started it.
    detached(async () => {
      while (this.#watched.has(k)) {
        try {
          const r = await (await this.#agent(sandboxId)).wait({ id: c.id, execId: e?.id ?? "" });
          await this.#stdio.get(k)?.drained();
          this.#report(sandboxId, c.id, e?.id, {
            status: r.exitStatus,
            at: fromTimestamp(r.exitedAt) ?? now(),
          });
          return;
        } catch (err) {
          if (!this.#watched.has(k)) return;
          if (!this.#o.vmRunning(sandboxId)) {
            this.#report(sandboxId, c.id, e?.id, { status: VM_GONE_STATUS, at: now() });
            return;
          }
          this.#log.debug("wait at the agent failed; retrying", { process: k, error: err });
          await sleep(500);
        }
      }
    });
  }

  /**
   * Long-polls the agent's GetEvents while the VM runs. Exits already come
   * from the waits; what only the guest sees is an out-of-memory kill.
   */
  #followEvents(sandboxId: string): void {
    if (this.#following.has(sandboxId)) return;
    this.#following.add(sandboxId);
    detached(async () => {
      while (this.#o.vmRunning(sandboxId)) {
        try {
          const env = await (await this.#o.links.get(sandboxId)).sandbox.getEvents({});
          if (env.topic === "/tasks/oom" && env.event) {
            this.#listener?.processOom?.(sandboxId, TaskOOM.decode(env.event.value).containerId);
          }
        } catch {
          await sleep(500);
        }
      }
    }).finally(() => this.#following.delete(sandboxId));
  }

  #vmGone(sandboxId: string, c: ContainerRecord, procs: (ExecRecord | undefined)[]): void {
    for (const e of procs) {
      if ((e ?? c).state === "stopped") continue;
      this.#report(sandboxId, c.id, e?.id, { status: VM_GONE_STATUS, at: now() });
    }
  }

  #report(sandboxId: string, cid: string, execId: string | undefined, exit: ProcessExit): void {
    const k = key(sandboxId, cid, execId);
    if (!this.#watched.delete(k)) return;
    this.#listener?.processExited(sandboxId, cid, execId, exit);
  }

  /** Forgets a deleted process: its wait, its stdio copies, the host streams it had. */
  async #release(sandboxId: string, io: Io, cid: string, execId: string | undefined) {
    const k = key(sandboxId, cid, execId);
    const streams = [io.stdin, io.stdout, io.stderr].map((x) => x && streamingId(x))
      .filter((x): x is string => !!x);
    this.#o.streams.remove(sandboxId, streams);
    this.#watched.delete(k);
    const copies = this.#stdio.get(k);
    this.#stdio.delete(k);
    await copies?.close();
    await releaseOutputs(this.#o.outputHolder, io);
  }
}
