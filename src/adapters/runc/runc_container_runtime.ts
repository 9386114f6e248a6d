/**
 * Containers of runC pods, made by the real runc. Each container process
 * (init or exec) runs under a monitor helper that owns its stdio and pty and
 * records its exit, so the daemon can die and come back without losing an
 * exit code. Specs are rewritten to join the pod's namespaces. On a node the
 * rootfs mounts of Task.Create are made in runc's own mount namespace, so they
 * live in the container's namespace only (see #create); in a guest, and for
 * mounts mount(2) cannot make alone, at the bundle's root, removed on Delete.
 *
 * @module
 */
import type { OciSpec } from "../../domain/oci.ts";
import { join } from "node:path";
import { GUEST_EPHEMERAL_DIR, POD_PID_NS } from "../../ports/agent_protocol.ts";
import { log } from "../../lib/log.ts";
import { isExecutableFile, keepRunnableHooks } from "../oci/guest_hooks.ts";
import { traced } from "../../lib/trace.ts";
import { FailedPreconditionError } from "../../domain/errors.ts";
import { hasOwnPidNamespace, joinPodNamespaces, propagatesToNode } from "../../domain/oci.ts";
import type { SandboxRecord } from "../../domain/sandbox.ts";
import type { ContainerRecord, ExecRecord, ProcessExit } from "../../domain/task.ts";
import type {
  Capabilities,
  ProcessInfo,
  StartedProcess,
  StatsCapability,
  StoredAnyBytes,
  UpdateCapability,
} from "../../ports/container_runtime.ts";
import {
  cgroupExists,
  cgroupMetrics,
  type CgroupPaths,
  cgroupPathsOf,
  cgroupProcesses,
  oomKills,
  removeCgroup,
} from "../os/cgroups.ts";
import type { ExitRecord, RootfsMount } from "../../ports/supervisor.ts";
import {
  isMountPoint,
  mountAll,
  mountRootfs,
  namespaceRootfsMounts,
  prepareRootfsTarget,
} from "../os/mounts.ts";
import { rootfsMountTarget } from "../../domain/bundle_paths.ts";
import { OomWatcher } from "../os/oom_watcher.ts";
import type { RuncPodState } from "./runc_sandbox_backend.ts";
import { addPodFileMounts, detachedShmSource } from "../os/pod_files.ts";
import { initToken } from "../supervisor/process_tokens.ts";
import { readSpec } from "../os/bundle.ts";
import { signalName } from "../os/signals.ts";
import { sleep } from "../../lib/sync.ts";
import { MonitoredContainers, type MonitoredState } from "../oci/monitored_containers.ts";
import { bundleDiskOf, GuestDisks } from "./guest_disks.ts";

/** What a runc container or exec keeps in its record. */
export interface RuncProcessState extends MonitoredState {
  cgroups?: CgroupPaths;
  ownPidNs?: boolean;
}

type C = ContainerRecord<RuncProcessState>;
type E = ExecRecord<RuncProcessState>;

const SIGKILL = 9;

function oomKey(sandboxId: string, containerId: string): string {
  return `${sandboxId}/${containerId}`;
}

/** runc-backed containers. */
export class RuncContainerRuntime extends MonitoredContainers<RuncProcessState>
  implements UpdateCapability<RuncProcessState>, StatsCapability<RuncProcessState> {
  readonly capabilities: Capabilities<RuncProcessState> = {
    exec: this,
    pause: this,
    update: this,
    stats: this,
  };
  protected readonly runtimeName = "runc";
  #oom = new OomWatcher();
  #podPid: Promise<number> | undefined;
  /** In a guest: the pod's hot-plugged disks. */
  #disks = new GuestDisks();

  /** A node's spec: the containers join the pod holder's namespaces and get its files. */
  async #podSpec(sb: SandboxRecord, spec: OciSpec): Promise<OciSpec> {
    joinPodNamespaces(spec, {
      network: `/proc/${sb.pid}/ns/net`,
      ipc: `/proc/${sb.pid}/ns/ipc`,
      uts: `/proc/${sb.pid}/ns/uts`,
      pid: `/proc/${sb.pid}/ns/pid`,
    });
    const detached = (sb.backend as RuncPodState).shm === "detached";
    const shm = detached ? detachedShmSource(sb.pid) : undefined;
    await addPodFileMounts(spec, join(this.opts.dir, sb.id), shm);
    return spec;
  }

  /**
   * A guest's spec, prepared by the host (the pod is the whole VM) but for what only the guest
   * has: the pod's files and pid namespace, its memory volumes, and which hooks it can run. Undefined
   * when nothing changes.
   */
  async #guestSpec(sb: SandboxRecord, c: C, spec: OciSpec): Promise<OciSpec | undefined> {
    // The pod's shared files, as a node's containers get them (the agent wrote them).
    let changed = await addPodFileMounts(spec, join(this.opts.dir, sb.id));
    const podPid = spec.linux?.namespaces?.find((n) => n.type === "pid" && n.path === POD_PID_NS);
    if (podPid) {
      // The pod's shared pid namespace, held in the guest by a holder of its own (no pause).
      podPid.path = `/proc/${await this.#podPidNamespace()}/ns/pid`;
      changed = true;
    }
    // The pod's memory volumes: one guest tmpfs each, made by the first container naming it.
    for (const m of spec.mounts ?? []) {
      const src = m.source ?? "";
      if (!src.startsWith(`${GUEST_EPHEMERAL_DIR}/`) || await isMountPoint(src)) continue;
      await Deno.mkdir(src, { recursive: true, mode: 0o777 });
      const tmpfs = { type: "tmpfs", source: "tmpfs", target: "" };
      await mountAll([{ ...tmpfs, options: ["mode=0777", "nosuid", "nodev"] }], src);
    }
    // Disks the host attached (block volumes, a block rootfs): found, mounted, renumbered.
    if (await this.#disks.prepare(c.id, spec)) changed = true;
    await this.#disks.memoryLimited(c.id, spec);
    // The host's spec may name hooks the guest does not have: runc would fail on them.
    const r = keepRunnableHooks(spec, isExecutableFile);
    if (r.dropped.length) {
      log.warn("hooks not in the guest are not run", { container: c.id, hooks: r.dropped });
      return r.spec;
    }
    return changed ? spec : undefined;
  }

  /** The guest's pod pid namespace holder (started once; the VM is the pod). */
  #podPidNamespace(): Promise<number> {
    this.#podPid ??= this.opts.supervisor.hold("pod-pid-ns", {
      hostNetwork: true,
      hostIpc: true,
      hostUts: true,
    }).then((h) => h.pid);
    this.#podPid.catch(() => (this.#podPid = undefined));
    return this.#podPid;
  }

  async create(sb: SandboxRecord, c: C): Promise<StartedProcess> {
    try {
      return await this.#create(sb, c);
    } catch (e) {
      if (this.opts.guest) await this.#disks.release(c.id);
      throw e;
    }
  }

  async #create(sb: SandboxRecord, c: C): Promise<StartedProcess> {
    if (this.opts.guest) {
      // A bundle on a disk (a pod without a shared directory): mounted where a share's is.
      const disk = bundleDiskOf(c.rootfs);
      if (disk) {
        await this.#disks.mountBundle(c.id, disk, c.bundle);
        c = { ...c, rootfs: [] };
      }
    }
    const read = await readSpec(c.bundle);
    const changed = this.opts.guest
      ? await this.#guestSpec(sb, c, read)
      : await this.#podSpec(sb, read);
    if (changed) await Deno.writeTextFile(join(c.bundle, "config.json"), JSON.stringify(changed));
    const spec = changed ?? read;
    const state = this.stateDir(sb.id, c.id);
    await Deno.mkdir(state, { recursive: true, mode: 0o700 });
    const backend = c.backend;
    let rootfsMounts: RootfsMount[] | undefined;
    if (c.rootfs.length) {
      // Checked before anything is mounted: never a path outside the bundle.
      const target = rootfsMountTarget(c.bundle, spec.root?.path);
      // On a node, mounted where only runc and the container see them: each mount left in
      // the node's namespace is copied and scanned by every later runc (measured beside 500
      // containers: a new `runc run` 1.8x as slow as beside none with their rootfs on the
      // node, 1.3x with none there). Not for a container whose mounts propagate to the node:
      // a volume on the mount holding the bundle, a slave in that namespace, would not.
      rootfsMounts = this.opts.guest || propagatesToNode(spec)
        ? undefined
        : namespaceRootfsMounts(c.rootfs, target);
      if (rootfsMounts) {
        await prepareRootfsTarget(target);
        backend.rootfsInContainer = true;
      } else {
        backend.rootfs = target;
        await mountRootfs(c.rootfs, target);
      }
    }
    const token = initToken(c.id);
    const pidFile = join(state, "init.pid");
    const logFile = join(c.bundle, "log.json");
    await Deno.remove(logFile).catch(() => {});
    const { helperPid, pid } = await traced(
      "runc create",
      { "kuasar.pod": sb.id, "kuasar.container": c.id },
      () =>
        this.launch(sb.id, token, c.io, pidFile, state, {
          argv: (console) => this.cli.createArgv(c.id, c.bundle, pidFile, logFile, console),
          logFile,
          rootfsMounts,
        }),
    );
    // runc writes it through the daemon's umask; a state file is the daemon's alone.
    await Deno.chmod(pidFile, 0o600).catch(() => {});
    backend.helperPid = helperPid;
    backend.ownPidNs = hasOwnPidNamespace(spec);
    backend.cgroups = await cgroupPathsOf(pid).catch(() => undefined);
    this.#watchOom(sb.id, c, 0n);
    this.watch(sb.id, c, undefined, helperPid);
    await this.io.attach(sb.id, token, c.io);
    return { pid };
  }

  protected override async initExited(
    sandboxId: string,
    c: C,
    r: ExitRecord,
  ): Promise<void> {
    const b = c.backend;
    // Kills not seen yet; without a watch (no FFI), any kill the cgroup counted.
    const watched = await this.#oom.finish(oomKey(sandboxId, c.id));
    if (!watched && b.cgroups && await oomKills(b.cgroups).catch(() => 0n) > 0n) {
      this.listener?.processOom?.(sandboxId, c.id);
    }
    // Without a pid namespace of its own, the init's death does not take the
    // other processes of the container down: do it, as containerd's shim does.
    if (!b.ownPidNs) await this.cli.kill(c.id, SIGKILL, true).catch(() => {});
    await super.initExited(sandboxId, c, r);
  }

  async start(_sb: SandboxRecord, c: C): Promise<void> {
    await this.cli.start(c.id);
  }

  /** Reports OOM kills in the container's cgroup while it runs (`known`: kills already seen). */
  #watchOom(sandboxId: string, c: C, known: bigint): void {
    const cgroups = c.backend.cgroups;
    if (!cgroups) return;
    this.#oom.watch(
      oomKey(sandboxId, c.id),
      cgroups,
      () => this.listener?.processOom?.(sandboxId, c.id),
      known,
    );
  }

  /** runc knows whether a container the record calls created was started. */
  async started(_sb: SandboxRecord, c: C): Promise<boolean> {
    const st = await this.cli.state(c.id).catch(() => undefined);
    return st?.status === "running" || st?.status === "paused";
  }

  override async recover(
    sb: SandboxRecord,
    c: C,
    e: E | undefined,
  ): Promise<ProcessExit | undefined> {
    const cgroups = c.backend.cgroups;
    // Watch again before the exit is followed (an exit right after must find
    // the watch); kills during the daemon's downtime are not news any more.
    if (!e && cgroups && await cgroupExists(cgroups)) {
      this.#watchOom(sb.id, c, await oomKills(cgroups).catch(() => 0n));
    }
    const exit = await super.recover(sb, c, e);
    if (!e && exit) this.#oom.unwatch(oomKey(sb.id, c.id));
    return exit;
  }

  override async delete(sb: SandboxRecord, c: C): Promise<void> {
    this.#oom.unwatch(oomKey(sb.id, c.id));
    await super.delete(sb, c);
    // Unmounted before the host detaches them (it does after this Delete).
    if (this.opts.guest) await this.#disks.release(c.id);
  }

  /** Any process left in the container's cgroup counts too (its init may be gone). */
  protected override async stillRuns(c: C): Promise<boolean> {
    const cgroups = c.backend.cgroups;
    if (cgroups && (await cgroupProcesses(cgroups)).length) return true;
    return await super.stillRuns(c);
  }

  /**
   * Kills what runc lost by its cgroup: every process in it, until none is
   * left (a fork racing the kill is found on the next round), then removes
   * the cgroup as `runc delete` would have.
   */
  protected override async killDirectly(c: C): Promise<void> {
    const cgroups = c.backend.cgroups;
    if (cgroups) {
      for (let round = 0; round < 40; round++) {
        const pids = await cgroupProcesses(cgroups);
        if (!pids.length) break;
        for (const pid of pids) {
          try {
            Deno.kill(pid, "SIGKILL");
          } catch { /* gone meanwhile */ }
        }
        await sleep(50);
      }
    }
    await super.killDirectly(c);
    if (cgroups) { for (const path of new Set(Object.values(cgroups))) await removeCgroup(path); }
  }

  /** Releases the OOM watch (the daemon is stopping). */
  async close(): Promise<void> {
    await this.#oom.close();
  }

  protected signalExec(_c: C, e: E, signal: number): Promise<void> {
    try {
      Deno.kill(e.pid, signalName(signal));
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
    return Promise.resolve();
  }

  async pids(_sb: SandboxRecord, c: C): Promise<ProcessInfo[]> {
    const byPid = new Map(Object.values(c.execs).map((e) => [e.pid, e.id]));
    const pids = await this.cli.ps(c.id).catch(() => [c.pid]);
    return pids.map((pid) => ({ pid, execId: byPid.get(pid) }));
  }

  async update(_sb: SandboxRecord, c: C, resources: unknown): Promise<void> {
    await this.cli.update(c.id, resources);
  }

  async stats(_sb: SandboxRecord, c: C): Promise<StoredAnyBytes> {
    const b = c.backend;
    if (!b.cgroups) throw new FailedPreconditionError(`Container "${c.id}" has no cgroup to read`);
    return await cgroupMetrics(b.cgroups);
  }
}
