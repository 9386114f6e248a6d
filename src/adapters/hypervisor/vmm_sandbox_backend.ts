/**
 * microVM pods: a pod is a VM booted from the guest image, whose agent (PID
 * 1) the sandboxer reaches over vsock or virtio-serial. The VMM (the
 * Hypervisor port: QEMU here) runs under the monitor helper, so its exit is
 * recorded even while the daemon is down, and a restarted daemon finds the VM
 * again.
 *
 * @module
 */
import { join } from "node:path";
import { traced } from "../../lib/trace.ts";
import {
  DeadlineExceededError,
  InternalError,
  InvalidArgumentError,
  NotFoundError,
  ResourceExhaustedError,
  UnavailableError,
  UnimplementedError,
} from "../../domain/errors.ts";
import { KeyedMutex } from "../../lib/sync.ts";
import { validateId } from "../../domain/ids.ts";
import { vmGrowthRefusal, type VmSize, vmSize } from "../../domain/vm_size.ts";
import type { OciSpec } from "../../domain/oci.ts";
import type { TasksDiff } from "../../domain/tasks_extension.ts";
import { guestBundle, makeShare, removeShare, shared, shareDir } from "./guest_share.ts";
import {
  BUNDLE_FSTYPE,
  type BundleDisks,
  bundleImage,
  packBundle,
  podBundleDir,
} from "./bundle_disk.ts";
import { dnsOfResolvConf, resolvConf } from "../../domain/pod_config.ts";
import { PodDisks } from "./pod_disks.ts";
import type { SandboxExit, SandboxRecord } from "../../domain/sandbox.ts";
import type { StartedProcess, StoredAnyBytes } from "../../ports/container_runtime.ts";
import { log } from "../../lib/log.ts";
import {
  cgroupMetrics,
  cgroupPathsFor,
  cgroupPathsOf,
  leastCpuWeight,
  makeCgroup,
  removeCgroup,
} from "../os/cgroups.ts";
import type { Supervisor } from "../../ports/supervisor.ts";
import { PodProcessBackend } from "../supervisor/pod_process_backend.ts";
import type { PodProcessState } from "../supervisor/pod_holders.ts";
import {
  holderToken,
  killByCommandLine,
  poolVmToken,
  sharedFsToken,
  socketPath,
} from "../supervisor/process_tokens.ts";
import { VmPool } from "./vm_pool.ts";
import { type AgentLink, AgentLinks, dial } from "./agent_links.ts";
import { type VmTemplate, VmTemplates } from "./vm_templates.ts";
import type { TtrpcClient } from "../ttrpc/client.ts";
import type { Hypervisor, VmDescription } from "../../ports/hypervisor.ts";
import {
  AGENT_VSOCK_PORT,
  BOOT_RESEED,
  BOOT_SERVICE,
  BUNDLE_DISK_MOUNT,
  SHARE_TAG,
} from "../../ports/agent_protocol.ts";
import { type Interface, type Route, SandboxServiceDefinition } from "../../gen/kuasar/sandbox.ts";
import { TaskDefinition as TaskV3 } from "../../gen/containerd/runtime/task/v3/shim.ts";
import { unaryClient } from "../ttrpc/typed.ts";
import {
  guestInterfaces,
  type MirroredInterface,
  mirroredLinks,
  mirrorInterfaces,
  podRoutes,
  unmirror,
  unmirrored,
} from "./pod_network.ts";
import type { StateLayout } from "../os/state_layout.ts";

/** How the vmm backend makes VMs. */
export interface VmmBackendOptions {
  readonly dir: string;
  /** Where the daemon's own entries under --dir are (short socket names). */
  readonly layout: StateLayout;
  readonly supervisor: Supervisor;
  /** The VMM that runs each pod's VM. */
  readonly hypervisor: Hypervisor;
  readonly kernel: string;
  readonly initrd: string;
  readonly kernelParams: string;
  readonly memoryMiB: number;
  readonly vcpus: number;
  /** How the VMM runs guests, for the logs and the pod's record. */
  readonly accel: "kvm" | "tcg";
  /** Give VMs a vhost-vsock device (the host has /dev/vhost-vsock). */
  readonly vsock: boolean;
  readonly bootTimeoutMs: number;
  /** How often running guests' clocks are set from the host's; 0: at start and recovery only. */
  readonly clockSyncMs?: number;
  /** QEMU's virtiofsd, sharing `<dir>/<id>/shared` as the guest's /run/kuasar/shared; unset: none. */
  readonly virtiofsd?: string;
  /** Its options from the config (cache mode, thread pool). */
  readonly virtiofsdOptions: readonly string[];
  /** Give each VM the debug console (`[hypervisor.task] debug`): `kuasar ctl shell`. */
  readonly debugConsole?: boolean;
  /** Disks a VM can have attached at once (block volumes, block rootfs); default 3. */
  readonly diskSlots?: number;
  /**
   * Containers' bundles go to the guest as disk images (no virtiofsd; every container takes
   * a disk slot, default 8 then); unset: shared over virtiofs.
   */
  readonly bundleDisks?: BundleDisks;
  /** Room for CPU hot-plug (`default_max_vcpus`); 0: none. */
  readonly maxVcpus?: number;
  /** DIMM slots for memory hot-plug up to the host's memory (`mem_slots`); 0: none. */
  readonly memorySlots?: number;
  /**
   * Where VM templates live, when pods' VMs start from one (`[hypervisor] template`): the
   * VMM can, bundles are on disks and the agent is on virtio-serial (checked by the config).
   */
  readonly templateDir?: string;
  /** VMs kept restored and warmed ahead of pods (`template_pool`, with templates); 0: none. */
  readonly templatePool?: number;
  /** Shapes of VM with a template (`template_shapes`): the config's and others; default 1. */
  readonly templateShapes?: number;
}

/** A VM of the pool: restored from `template`, run through a throwaway container, no pod's. */
interface PoolVm {
  /** Its name in the pool, and the pseudo pod id its files and links go by until taken. */
  readonly name: string;
  readonly id: string;
  readonly token: string;
  readonly template: VmTemplate;
  readonly helperPid: number;
  readonly pid: number;
  dead: boolean;
}

/** Where the VMs of the pool get their cgroups until a pod takes them. */
const POOL_CGROUP = "/kuasar-vmm-pool";
/** The pseudo pod id of pool VM `name`: `.` never starts a pod id (ids.ts), so none is a pod's. */
function poolVmId(name: string): string {
  return `.vm-pool-${name}`;
}

/**
 * Hot-plug slots of a VM when the config says nothing. Each is a PCIe root port the guest
 * enumerates at boot: 10 of them cost ~0.25 s of a TCG boot here, 4 nothing measurable.
 */
const DEFAULT_DISK_SLOTS = 3;
/** The same when every container's bundle is a disk too. */
const DEFAULT_BUNDLE_DISK_SLOTS = 8;
/** NICs a running VM can be given (interfaces a CNI plugin adds after the pod started). */
const NIC_SLOTS = 1;
/** With templates, a VM's NICs are all hot-plugged (a clone has none): room for the pod's. */
const TEMPLATE_NIC_SLOTS = 1 + NIC_SLOTS;

/** A VM's control sockets and console, by pod. */
async function vmPaths(o: VmmBackendOptions, id: string) {
  const dir = o.dir;
  const s = o.layout.path("sockets");
  await Deno.mkdir(s, { recursive: true, mode: 0o700 });
  const token = `vm@${id}`;
  return {
    // The name QEMU's QMP socket always had, so a restarted daemon finds running VMs.
    control: await socketPath(s, token, "qmp"),
    agent: await socketPath(s, token, "agent"),
    debug: await socketPath(s, token, "debug"),
    fs: await socketPath(s, token, "fs"),
    shared: join(dir, id, "shared"),
    console: join(dir, id, "console.log"),
    events: join(dir, id, "vmm-events.log"),
  };
}

/** The pod's VM as the VMM sees it; `nics` and `shares` matter only at launch. */
function describe(
  o: VmmBackendOptions,
  id: string,
  p: Awaited<ReturnType<typeof vmPaths>>,
  launch: Pick<VmDescription, "nics" | "shares"> = { nics: [], shares: [] },
): VmDescription {
  return {
    id,
    name: `kuasar-${id.slice(0, 12)}`,
    kernel: o.kernel,
    initrd: o.initrd,
    kernelParams: o.kernelParams,
    memoryMiB: o.memoryMiB,
    vcpus: o.vcpus,
    consoleLog: p.console,
    eventLog: p.events,
    controlSocket: p.control,
    agentSocket: p.agent,
    debugSocket: debugConsole(o) ? p.debug : undefined,
    vsockCid: o.vsock ? vsockCid(id) : undefined,
    diskSlots: diskSlots(o),
    stateDir: join(o.dir, id),
    nicSlots: o.hypervisor.capabilities.nicHotplug
      ? (o.templateDir ? TEMPLATE_NIC_SLOTS : NIC_SLOTS)
      : 0,
    memorySlots: o.hypervisor.capabilities.resize ? o.memorySlots ?? 0 : 0,
    ...launch,
  };
}

/**
 * A VM's size and its room to grow, for `size` (the config's, grown to what a pod asks for):
 * containers raised later (Task.Update) grow into `default_max_vcpus`, and with `mem_slots`
 * into the host's memory (as Kuasar). The template VM is sized here too, so that pods asking
 * for nothing beyond the config's match it.
 */
function vmShape(o: VmmBackendOptions, size: { vcpus: number; memoryMiB: number }) {
  const resize = o.hypervisor.capabilities.resize;
  const memorySlots = resize ? o.memorySlots ?? 0 : 0;
  return {
    vcpus: size.vcpus,
    memoryMiB: size.memoryMiB,
    maxVcpus: resize && o.maxVcpus ? Math.max(size.vcpus, o.maxVcpus) : size.vcpus,
    maxMemoryMiB: memorySlots ? Math.max(size.memoryMiB, hostMemoryMiB()) : size.memoryMiB,
    memorySlots,
  };
}

/** The shape of the config's VMs (`vcpus`, `memory_in_mb`), pods without limits have. */
function configShape(o: VmmBackendOptions) {
  return vmShape(o, { vcpus: o.vcpus, memoryMiB: o.memoryMiB });
}

/** Whether VMs `a` and `b` have one shape (so one template). */
function sameShape(a: Partial<ReturnType<typeof vmShape>>, b: ReturnType<typeof vmShape>): boolean {
  return a.vcpus === b.vcpus && a.memoryMiB === b.memoryMiB && a.maxVcpus === b.maxVcpus &&
    a.maxMemoryMiB === b.maxMemoryMiB && a.memorySlots === b.memorySlots;
}

/** Other shapes whose booted pods are counted (a template is built at the second). */
const SHAPES_COUNTED = 64;
/** The sockets' token of the config's shape's template VM, while it is built. */
const TEMPLATE_TOKEN = "vm-template";
/** The same for other shapes' (`template_shapes`), built one at a time. */
const SHAPE_TEMPLATE_TOKEN = "vm-template-shape";

/** `argv` run in the pod's netns when it has one, so that its devices (taps) are the pod's. */
function inPodNetns(record: SandboxRecord<VmmPodState>, argv: string[]): string[] {
  return record.netnsPath ? ["nsenter", `--net=${record.netnsPath}`, "--", ...argv] : argv;
}

/** The VM's own cgroup under the pod's parent: QEMU's memory is charged there from the start. */
function vmCgroup(record: SandboxRecord<VmmPodState>): string {
  return join(record.pod.cgroupParent || "/kuasar-vmm", record.id);
}

/** Whether VMs get the debug console: asked for, on a VMM with virtio-serial ports. */
function debugConsole(o: VmmBackendOptions): boolean {
  return (o.debugConsole ?? false) && o.hypervisor.capabilities.serialPorts;
}

/** The VM's hot-plug slots for disks: none when the VMM cannot hot-plug them. */
function diskSlots(o: VmmBackendOptions): number {
  if (!o.hypervisor.capabilities.diskHotplug) return 0;
  return o.diskSlots ?? (o.bundleDisks ? DEFAULT_BUNDLE_DISK_SLOTS : DEFAULT_DISK_SLOTS);
}

/** A vsock context id for a pod (3 and up; 0-2 are reserved). */
export function vsockCid(id: string): number {
  let h = 0;
  for (const ch of id) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return 3 + (h % 0x7ffffff0);
}

/** Pod lifecycle for the vmm sandboxer. */
/** What a VM pod keeps in its record. */
export interface VmmPodState extends PodProcessState {
  /** The taps mirroring the pod's CNI interfaces (in its netns). */
  taps?: string[];
  /** The VM's cgroup (QEMU and its threads). */
  cgroupsPath?: string;
  /** The size the VM was started with (the config's, grown to the pod's limits). */
  vcpus?: number;
  memoryMiB?: number;
  /** What CPU and memory hot-plug may grow it to (the host's CPUs and memory). */
  maxVcpus?: number;
  maxMemoryMiB?: number;
  accel?: "kvm" | "tcg";
  /** The debug console's socket, when the VM has one. */
  debugConsole?: string;
  /** The guest kernel's boot id when the pod started (a later different one: a reboot). */
  guestBootId?: string;
  /**
   * Where the pod's containers' bundles go as disk images, when they do (share_fs = "None",
   * Firecracker): the pod's own, kept when the config changes while it runs.
   */
  bundleDisks?: BundleDisks;
  /** The template the VM was restored from (its key), if it was not booted. */
  template?: string;
  /** The VM was made ahead of the pod (`template_pool`): its name in the pool. */
  pooled?: string;
}

/** The pod's bundle-disk settings, if its containers' bundles go to its VM as disks. */
export function podBundleDisks(record: SandboxRecord): BundleDisks | undefined {
  const b = (record.backend as VmmPodState).bundleDisks;
  return b && typeof b.dir === "string" && typeof b.freeMiB === "number" ? b : undefined;
}

export class VmmSandboxBackend extends PodProcessBackend<VmmBackendOptions, VmmPodState> {
  #log = log.with({ component: "vmm-sandbox" });
  /** The connections to the pods' agents, shared with the containers' runtime. */
  readonly links: AgentLinks = new AgentLinks(
    async (id) =>
      this.opts.hypervisor.agentAddresses(
        describe(this.opts, id, await vmPaths(this.opts, id)),
        AGENT_VSOCK_PORT,
      ),
    (id, client) => this.#checkBoot(id, client),
  );

  /** Each running pod's guest boot id, as first seen (kept in its record across restarts). */
  #bootIds = new Map<string, string>();

  /**
   * A guest the VMM restarted by itself (Cloud Hypervisor and StratoVirt reboot a guest that
   * reboots or panics, where QEMU's -no-reboot exits) lost the pod's containers with its old
   * kernel: its VM is ended, its exit recorded as a crash, rather than left running an empty
   * guest. Asked of every new connection to the agent, a restarted daemon's included.
   */
  async #checkBoot(id: string, client: TtrpcClient): Promise<void> {
    const now = await AgentLinks.bootId(client);
    const first = this.#bootIds.get(id);
    if (!now || first === undefined || first === now) {
      if (now && first === undefined) this.#bootIds.set(id, now);
      return;
    }
    const pid = this.holders.runningPid(id);
    this.#log.warn("the VMM restarted the pod's guest by itself: ending the VM", {
      sandbox: id,
      hypervisor: this.opts.hypervisor.name,
      pid,
    });
    if (pid) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* gone */ }
    }
    throw new UnavailableError("The pod's VM rebooted (its guest kernel panicked?): it is ended");
  }

  /** The disks attached to the pods' VMs, shared with the containers' runtime. */
  readonly disks: PodDisks = new PodDisks(this.opts.dir, {
    slots: diskSlots(this.opts),
    attach: async (id, disk) =>
      await this.opts.hypervisor.attachDisk(await this.#described(id), disk),
    detach: async (id, disk) =>
      await this.opts.hypervisor.detachDisk(await this.#described(id), disk),
  });

  async #described(id: string): Promise<VmDescription> {
    return describe(this.opts, id, await vmPaths(this.opts, id));
  }

  async start(record: SandboxRecord<VmmPodState>): Promise<StartedProcess> {
    const o = this.opts;
    const p = await vmPaths(o, record.id);
    for (const f of [p.control, p.agent, p.debug, p.events]) await Deno.remove(f).catch(() => {});
    // Grown to what the pod asks for (its CPU quota and memory limit), as Kuasar does.
    const size = vmShape(
      o,
      vmSize({ vcpus: o.vcpus, memoryMiB: o.memoryMiB }, record.pod.resources),
    );
    const { maxVcpus, maxMemoryMiB } = size;
    record.backend = {
      ...record.backend,
      vcpus: size.vcpus,
      memoryMiB: size.memoryMiB,
      maxVcpus,
      maxMemoryMiB,
    };
    if (o.bundleDisks) record.backend = { ...record.backend, bundleDisks: o.bundleDisks };
    const shape = { ...describe(o, record.id, p), ...size };
    // A VM whose netns has more interfaces than a clone has NIC slots boots.
    const fits = !this.#templates || !record.netnsPath ||
      (await unmirrored(record.netnsPath)).length <= shape.nicSlots;
    const template = fits ? await this.#templateFor(shape) : undefined;
    if (template) {
      const taken = await this.#takePooled(record, shape, template);
      if (taken) return taken;
      const cloned = await this.#startClone(record, shape, template);
      if (cloned) return cloned;
    }
    const started = await this.#boot(record, p, size);
    // The next pods of this shape start from a template (built once this one runs), or from
    // the one rebuilt after its restore failed.
    if (fits && this.#templates) this.#buildShapeTemplate(size, template !== undefined);
    return started;
  }

  /** Boots the pod's VM: no template, or its restore failed. */
  async #boot(
    record: SandboxRecord<VmmPodState>,
    p: Awaited<ReturnType<typeof vmPaths>>,
    size: ReturnType<typeof vmShape>,
  ): Promise<StartedProcess> {
    const o = this.opts;
    // The CNI interfaces, mirrored onto taps the VM's NICs use (a queue per vCPU).
    const nics = record.netnsPath ? await mirrorInterfaces(record.netnsPath, size.vcpus) : [];
    record.backend = { ...record.backend, taps: nics.map((n) => n.tap) };
    const routes = record.netnsPath ? await podRoutes(record.netnsPath, nics) : [];
    const virtiofs = o.virtiofsd && !o.bundleDisks
      ? [{ socket: await this.#startVirtiofsd(record, p), tag: SHARE_TAG }]
      : [];
    const vm = {
      ...describe(o, record.id, p, {
        nics: nics.map((n) => ({ tap: n.tap, mac: n.mac, queues: size.vcpus })),
        shares: virtiofs,
      }),
      ...size,
    };
    const argv = inPodNetns(record, o.hypervisor.argv(vm));
    const cgroupsPath = vmCgroup(record);
    record.backend = {
      ...record.backend,
      cgroupsPath,
      // Where `kuasar ctl shell` connects (Controller.Status, verbose).
      ...(debugConsole(o) ? { debugConsole: p.debug } : {}),
    };
    const t0 = performance.now();
    const attrs = {
      "kuasar.pod": record.id,
      "kuasar.hypervisor": o.hypervisor.name,
      "kuasar.accel": o.accel,
    };
    const h = await traced("vm launch", attrs, async () => {
      const h = await o.supervisor.startMonitored({
        token: holderToken(record.id),
        monitorLog: join(o.dir, record.id, "monitor.log"),
        argv: () => argv,
        cgroupProcs: await makeCgroup(cgroupsPath),
      });
      record.backend = { ...record.backend, holderPid: h.helperPid, accel: o.accel };
      this.holders.watch(record.id, h.helperPid, h.pid);
      await o.hypervisor.boot(vm, t0 + o.bootTimeoutMs);
      return h;
    });
    const network = { interfaces: guestInterfaces(nics), routes };
    const vmm = performance.now() - t0;
    const checked = await traced(
      "vm boot and agent connect",
      attrs,
      () => this.#initAgent(record, t0 + o.bootTimeoutMs, network),
    ) - t0;
    this.#ready(record.id, size, {
      vmmMs: Math.round(vmm),
      agentCheckMs: Math.round(checked),
      agentReadyMs: Math.round(performance.now() - t0),
    });
    return { pid: h.pid };
  }

  /** The pod's VM is set up: its clock kept, and its start logged with `timings`. */
  #ready(
    id: string,
    size: { vcpus: number; memoryMiB: number },
    timings: Record<string, string | number>,
  ): void {
    this.#keepClockSynced(id);
    this.#log.info("vm ready", {
      sandbox: id,
      hypervisor: this.opts.hypervisor.name,
      accel: this.opts.accel,
      vcpus: size.vcpus,
      memoryMiB: size.memoryMiB,
      ...timings,
    });
  }

  #templates = this.opts.templateDir && this.opts.hypervisor.templating
    ? new VmTemplates({
      dir: this.opts.templateDir,
      templating: this.opts.hypervisor.templating,
      bootTimeoutMs: this.opts.bootTimeoutMs,
      agentAnswers: async (vm, deadline) => {
        const client = await dial([{ transport: "unix", path: vm.agentSocket }], deadline);
        try {
          await warmAgent(client, deadline);
        } finally {
          client.close();
        }
      },
      withoutDaemonFds: (argv) => [this.opts.supervisor.binary, "exec", "--", ...argv],
      owner: this.opts.dir,
      shapes: this.opts.templateShapes,
    })
    : undefined;

  #templateSwept = false;
  /** When the last template build failed: the next is not tried before a minute has passed. */
  #templateFailedAt = -Infinity;
  /** The build of another shape's template under way, if any: one at a time. */
  #shapeBuild: Promise<void> | undefined;
  /** When each other shape's build last failed: once a minute at most. */
  #shapeFailedAt = new Map<string, number>();
  /** Pods of each other shape booted (the last `SHAPES_COUNTED` shapes seen). */
  #shapeBoots = new Map<string, number>();

  /** The template VM of `size` with the sockets of `token` (one VM at a time per token). */
  async #templateVm(token: string, size: ReturnType<typeof vmShape>): Promise<VmDescription> {
    const o = this.opts;
    const sockets = o.layout.path("sockets");
    await Deno.mkdir(sockets, { recursive: true, mode: 0o700 });
    return {
      ...describe(o, "template", {
        control: await socketPath(sockets, token, "qmp"),
        agent: await socketPath(sockets, token, "agent"),
        debug: await socketPath(sockets, token, "debug"),
        // The template's own, in its directory (VmTemplates).
        console: "",
        events: "",
      } as Awaited<ReturnType<typeof vmPaths>>),
      ...size,
    };
  }

  /** Ends the template VM being built, if any, and the pool's VMs (the daemon stops). */
  async closeTemplates(): Promise<void> {
    await this.#pool?.close();
    for (const vm of this.#poolVms) await this.#endPoolVm(vm);
    await this.#templates?.close();
  }

  /**
   * The template VM of the config's shape, built in the background (pods boot meanwhile); and,
   * templates on or not, the pool VMs a crashed daemon left go.
   */
  prepareTemplate(): void {
    this.#sweepPool().catch((e) =>
      this.#log.warn("pool VMs of a previous daemon not swept", { error: String(e) })
    );
    const o = this.opts;
    (async () => {
      // Template VMs left by a daemon that crashed while building them, templates on or not (at
      // start only: later, the ones this daemon builds could be running).
      if (!this.#templateSwept) {
        const sockets = o.layout.path("sockets");
        for (const token of [TEMPLATE_TOKEN, SHAPE_TEMPLATE_TOKEN]) {
          await killByCommandLine(`unix:${await socketPath(sockets, token, "qmp")},`);
          for (const kind of ["qmp", "agent", "debug"] as const) {
            await Deno.remove(await socketPath(sockets, token, kind)).catch(() => {});
          }
        }
        this.#templateSwept = true;
      }
      const t = this.#templates;
      if (!t) return;
      const vm = await this.#templateVm(TEMPLATE_TOKEN, configShape(o));
      // Unfinished templates, and shapes beyond template_shapes (it may have been lowered).
      await t.trim(vm);
      const built = await t.ensure(vm, true);
      // VMs of an older template (another guest image or QEMU) would never be taken.
      this.#pool?.prune((v) => v.template.key !== built.key);
      this.#pool?.fill();
    })().catch((e) => {
      this.#templateFailedAt = performance.now();
      this.#log.warn("no VM template: pods boot", { error: String(e), dir: o.templateDir });
    });
  }

  /**
   * Builds the template of `size`, another shape than the config's (a pod's CPU and memory
   * limits), in the background, once two of its pods have booted (or its restore failed) and
   * `template_shapes` leaves room for it: one such build at a time, each shape's retried a
   * minute after it failed.
   */
  #buildShapeTemplate(size: ReturnType<typeof vmShape>, restoreFailed: boolean): void {
    const t = this.#templates;
    const o = this.opts;
    if (!t || (o.templateShapes ?? 1) < 2 || !this.#templateSwept) return;
    if (sameShape(size, configShape(o))) return;
    const name = `${size.vcpus}/${size.memoryMiB}/${size.maxVcpus}/${size.maxMemoryMiB}`;
    // A shape seen once may never come back: its template would only push out another's.
    const boots = (this.#shapeBoots.get(name) ?? 0) + 1;
    this.#shapeBoots.delete(name);
    this.#shapeBoots.set(name, boots);
    for (const k of this.#shapeBoots.keys()) {
      if (this.#shapeBoots.size <= SHAPES_COUNTED) break;
      this.#shapeBoots.delete(k);
    }
    if (this.#shapeBuild || (boots < 2 && !restoreFailed)) return;
    if (performance.now() - (this.#shapeFailedAt.get(name) ?? -Infinity) < 60_000) return;
    this.#shapeBuild = (async () => {
      await t.ensure(await this.#templateVm(SHAPE_TEMPLATE_TOKEN, size));
      this.#shapeFailedAt.delete(name);
    })().catch((e) => {
      this.#shapeFailedAt.set(name, performance.now());
      this.#log.warn("no VM template of a pod's shape: its pods boot", {
        vcpus: size.vcpus,
        memoryMiB: size.memoryMiB,
        error: String(e),
      });
    }).finally(() => this.#shapeBuild = undefined);
  }

  /** The template a pod's VM of `shape` can start from, if one is built. */
  async #templateFor(shape: VmDescription) {
    if (!this.#templates) return undefined;
    const ready = await this.#templates.ready(shape).catch(() => undefined);
    // None for the config's shape (the guest image or QEMU changed, or it was dropped): built
    // again in the background, at most once a minute after a failure. Other shapes' are built
    // once their pods have booted (start).
    if (
      !ready && sameShape(shape, configShape(this.opts)) &&
      performance.now() - this.#templateFailedAt > 60_000
    ) this.prepareTemplate();
    return ready;
  }

  /**
   * Starts the pod's VM from `template`: a clone of it restored, its random state reseeded from
   * the host before anything reads it, its clock set, then its own hostname, NICs and routes.
   * A restore that fails is undone and the template dropped (rebuilt at the next start): the
   * pod boots instead (undefined).
   */
  async #startClone(
    record: SandboxRecord<VmmPodState>,
    vm: VmDescription,
    template: VmTemplate,
  ): Promise<StartedProcess | undefined> {
    const o = this.opts;
    const templating = o.hypervisor.templating!;
    const p = await vmPaths(o, record.id);
    const queues = vm.vcpus;
    const nics = record.netnsPath
      ? await mirrorInterfaces(record.netnsPath, queues, 0, vm.nicSlots)
      : [];
    const routes = record.netnsPath ? await podRoutes(record.netnsPath, nics) : [];
    const argv = inPodNetns(record, templating.argv(vm, template.memory, "clone"));
    const cgroupsPath = vmCgroup(record);
    const t0 = performance.now();
    const deadline = t0 + o.bootTimeoutMs;
    const attrs = {
      "kuasar.pod": record.id,
      "kuasar.hypervisor": o.hypervisor.name,
      "kuasar.accel": o.accel,
    };
    let h: Awaited<ReturnType<Supervisor["startMonitored"]>>;
    try {
      h = await traced("vm restore", attrs, async () => {
        const h = await o.supervisor.startMonitored({
          token: holderToken(record.id),
          monitorLog: join(o.dir, record.id, "monitor.log"),
          argv: () => argv,
          cgroupProcs: await makeCgroup(cgroupsPath),
        });
        try {
          await templating.restore(vm, template.state, deadline);
        } catch (e) {
          try {
            Deno.kill(h.pid, "SIGKILL");
          } catch { /* gone */ }
          await this.holders.forget(record.id);
          throw e;
        }
        return h;
      });
    } catch (e) {
      if (record.netnsPath) { for (const n of nics) await unmirror(record.netnsPath, n); }
      await this.#templates!.discard(template);
      this.#log.warn("vm restore from template failed: booting, and building it again", {
        sandbox: record.id,
        template: template.key,
        error: String(e),
      });
      this.prepareTemplate();
      return undefined;
    }
    record.backend = {
      ...record.backend,
      taps: nics.map((n) => n.tap),
      cgroupsPath,
      holderPid: h.helperPid,
      accel: o.accel,
      template: template.key,
      ...(debugConsole(o) ? { debugConsole: p.debug } : {}),
    };
    this.holders.watch(record.id, h.helperPid, h.pid);
    const restored = performance.now() - t0;
    // Where a clone's start goes (logged with "vm ready"), from the end of its restore.
    const { phases, phase } = phaseTimer(performance.now());
    await traced("vm reseed and agent connect", attrs, async () => {
      await this.#reseed(record.id, p.agent, deadline);
      phase("reseedMs");
      this.#bootIds.delete(record.id);
      const agent = await this.#identify(record, deadline, phase);
      for (const nic of nics) {
        await o.hypervisor.attachNic(vm, { ...nic, queues, slot: nic.slot! });
      }
      if (nics.length) {
        await agent.updateInterfaces({ interfaces: guestInterfaces(nics) }, { timeoutMs: 30_000 });
        await agent.updateRoutes({ routes }, { timeoutMs: 10_000 });
        phase("nicsMs");
      }
    });
    this.#ready(record.id, vm, {
      template: template.key,
      restoreMs: Math.round(restored),
      ...phases,
      agentReadyMs: Math.round(performance.now() - t0),
    });
    return { pid: h.pid };
  }

  /**
   * A clone's part as the pod's VM, once its entropy is its own: the links' connection (its boot
   * id recorded), its clock set (the template's stopped when it was saved; a pool VM's waited),
   * the pod's hostname, DNS and /dev/shm. Each step is timed by `phase`.
   */
  async #identify(
    record: SandboxRecord<VmmPodState>,
    deadline: number,
    phase: (name: string) => void,
  ): Promise<AgentLink["sandbox"]> {
    const agent = (await this.links.connect(record.id, deadline)).sandbox;
    record.backend = { ...record.backend, guestBootId: this.#bootIds.get(record.id) };
    phase("connectMs");
    await syncClock(agent, { alwaysSet: true });
    phase("clockMs");
    await agent.setupSandbox({
      config: { typeUrl: "PodSandboxConfig", value: podSandboxJson(record) },
      interfaces: [],
      routes: [],
    }, { timeoutMs: 10_000 });
    phase("setupMs");
    return agent;
  }

  /**
   * Gives the clone's guest kernel fresh entropy from the host, before any connection of the
   * links (whose first call reads the boot id): clones must not share their template's.
   */
  async #reseed(id: string, agentSocket: string, deadline: number): Promise<void> {
    const seeder = await dial([{ transport: "unix", path: agentSocket }], deadline);
    try {
      const said = await seeder.call(
        BOOT_SERVICE,
        BOOT_RESEED,
        crypto.getRandomValues(new Uint8Array(64)),
        { timeoutMs: 10_000 },
      );
      this.#log.debug("vm reseeded", { sandbox: id, guest: new TextDecoder().decode(said).trim() });
    } finally {
      seeder.close();
    }
  }

  // ------------------------------------------------------------- the pool (template_pool)

  /** The pool's VMs not taken by a pod (being made, or ready). */
  #poolVms = new Set<PoolVm>();
  #poolSwept: Promise<void> | undefined;
  #pool = this.#templates && (this.opts.templatePool ?? 0) > 0
    ? new VmPool<PoolVm>({
      size: this.opts.templatePool!,
      make: () => this.#makePoolVm(),
      discard: (vm) => this.#endPoolVm(vm),
      alive: (vm) => !vm.dead,
    })
    : undefined;

  /** Where pool VM `name`'s files are until a pod takes it (`<dir>/.vm-pool-<name>/`). */
  #poolDir(name: string): string {
    return join(this.opts.dir, poolVmId(name));
  }

  /**
   * Restores a VM from the template of the config's shape in a netns of its own, reseeds it and
   * runs a throwaway container in it (disk, crun, the agent's container paths: what a clone's
   * first container otherwise pays for under emulation).
   */
  async #makePoolVm(): Promise<PoolVm> {
    const o = this.opts;
    await this.#sweepPool();
    const templating = o.hypervisor.templating!;
    const name = Array.from(
      crypto.getRandomValues(new Uint8Array(6)),
      (b) => b.toString(16).padStart(2, "0"),
    ).join("");
    const id = poolVmId(name);
    const p = await vmPaths(o, id);
    const vm = { ...describe(o, id, p), ...configShape(o) };
    const template = await this.#templates!.ready(vm);
    if (!template) throw new UnavailableError("no VM template built yet");
    await Deno.mkdir(this.#poolDir(name), { mode: 0o700 });
    const token = poolVmToken(name);
    const deadline = performance.now() + o.bootTimeoutMs;
    let pv: PoolVm | undefined;
    try {
      const h = await o.supervisor.startMonitored({
        token,
        monitorLog: join(this.#poolDir(name), "monitor.log"),
        // A netns of its own until a pod's taps are moved in (mirrorInterfaces `via`).
        argv: () => ["unshare", "--net", "--", ...templating.argv(vm, template.memory, "clone")],
        cgroupProcs: await (async () => {
          const procs = await makeCgroup(join(POOL_CGROUP, name));
          // Made in the background: pods starting meanwhile (the one that took the last VM,
          // its first container) come first. The weight is the parent's, which competes with
          // the pods' parents; a pod that takes the VM moves it into its own cgroup.
          await leastCpuWeight(POOL_CGROUP);
          return procs;
        })(),
      });
      pv = { name, id, token, template, helperPid: h.helperPid, pid: h.pid, dead: false };
      const vmOf = pv;
      this.#poolVms.add(vmOf);
      // Dead while pooled: out of the pool, ended, and another made.
      const died = () => {
        vmOf.dead = true;
        this.#pool?.prune((v) => v === vmOf);
      };
      o.supervisor.exits.expect(token, h.helperPid, { exited: died, lost: died });
      await templating.restore(vm, template.state, deadline);
      await this.#reseed(id, p.agent, deadline);
      this.#bootIds.delete(id);
      await this.links.connect(id, deadline);
      await this.#warmUp(id, deadline);
      if (vmOf.dead) throw new UnavailableError("the VM exited while being made");
      // For `kuasar doctor`: the pool holds it (until a take writes `taken`); its QEMU's pid.
      await Deno.writeTextFile(join(this.#poolDir(name), "ready"), String(h.pid), { mode: 0o600 });
      return vmOf;
    } catch (e) {
      if (pv) await this.#endPoolVm(pv);
      else await this.#removePoolFiles(name);
      throw e;
    }
  }

  /**
   * Runs a throwaway container in pool VM `id` the way a pod's first runs (its bundle on a
   * hot-plugged disk, crun), to its exit, and lets its disk go.
   */
  async #warmUp(id: string, deadline: number): Promise<void> {
    const o = this.opts;
    const b = o.bundleDisks!;
    const cid = "kuasar-warm-up";
    const root = join(o.dir, id, "warm-up-root");
    await Deno.mkdir(join(root, "bin"), { recursive: true, mode: 0o755 });
    // A static binary (the helper's usage, exit 2) is all the container needs.
    await Deno.copyFile(o.supervisor.binary, join(root, "bin", "warm-up"));
    const spec: OciSpec = {
      ociVersion: "1.0.2",
      process: { args: ["/bin/warm-up"], cwd: "/", user: { uid: 0, gid: 0 }, env: ["PATH=/bin"] },
      root: { path: root, readonly: true },
      mounts: [{ destination: "/proc", type: "proc", source: "proc", options: [] }],
      linux: { namespaces: [{ type: "pid" }, { type: "mount" }, { type: "ipc" }, { type: "uts" }] },
    } as OciSpec;
    const share = join(o.dir, id, "warm-up-share");
    const image = bundleImage(b, id, cid);
    await makeShare(share, cid, spec, [], root);
    try {
      await packBundle(share, image, 0);
    } finally {
      await removeShare(share);
    }
    const left = () => ({ timeoutMs: Math.max(1, deadline - performance.now()) });
    try {
      const serial = await this.disks.acquire(id, cid, image, false);
      const { tasks } = await this.links.get(id);
      await tasks.create({
        id: cid,
        bundle: guestBundle(cid),
        rootfs: [{ type: BUNDLE_DISK_MOUNT, source: serial, target: "", options: [BUNDLE_FSTYPE] }],
        stdin: "",
        stdout: "",
        stderr: "",
        terminal: false,
        checkpoint: "",
        parentCheckpoint: "",
        options: undefined,
      }, left());
      const exited = tasks.wait({ id: cid, execId: "" }, left());
      await tasks.start({ id: cid, execId: "" }, left());
      await exited;
      await tasks.delete({ id: cid, execId: "" }, left());
      await this.disks.release(id, cid);
      // Its disk is unplugged in the background: the VM is ready once it is gone.
      while (
        await Deno.readTextFile(join(o.dir, id, "disks.json"))
          .then((t) => JSON.parse(t).disks?.length > 0, () => false)
      ) {
        if (performance.now() > deadline) {
          throw new DeadlineExceededError("the warm-up container's disk was not detached");
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    } finally {
      await Deno.remove(podBundleDir(b, id), { recursive: true }).catch(() => {});
      await Deno.remove(root, { recursive: true }).catch(() => {});
    }
  }

  /** Ends a pool VM no pod took, and removes what it had. */
  async #endPoolVm(vm: PoolVm): Promise<void> {
    this.#poolVms.delete(vm);
    this.opts.supervisor.exits.cancel(vm.token);
    await this.links.drop(vm.id);
    this.#bootIds.delete(vm.id);
    await this.#killPoolVm(vm.name);
  }

  /**
   * Kills pool VM `name` (QEMU and its monitor: both name its directory on their command line;
   * a taken VM's too, so only for one no pod keeps) and removes what it had.
   */
  async #killPoolVm(name: string): Promise<void> {
    await killByCommandLine(`${this.#poolDir(name)}/`);
    await this.opts.supervisor.killOrphans(poolVmToken(name));
    await this.opts.supervisor.exits.remove(poolVmToken(name));
    await this.#removePoolFiles(name);
  }

  async #removePoolFiles(name: string): Promise<void> {
    const p = await vmPaths(this.opts, poolVmId(name));
    for (const f of [p.control, p.agent, p.debug, `${p.control}.m`]) {
      await Deno.remove(f).catch(() => {});
    }
    await Deno.remove(this.#poolDir(name), { recursive: true }).catch(() => {});
    if (this.opts.bundleDisks) {
      await Deno.remove(podBundleDir(this.opts.bundleDisks, poolVmId(name)), { recursive: true })
        .catch(() => {});
    }
    await removeCgroup(join(POOL_CGROUP, name)).catch(() => {});
  }

  /**
   * Once per daemon, before its first pool VM: the pool VMs a previous daemon left (it crashed)
   * go, but not one a pod took (`taken` names it) whose pod is still there: that is the pod's.
   */
  #sweepPool(): Promise<void> {
    // Once: the pool's first VM waits for it (a sweep still listing would take it for a leftover).
    return this.#poolSwept ??= this.#sweepPoolOnce();
  }

  async #sweepPoolOnce(): Promise<void> {
    for await (const e of Deno.readDir(this.opts.dir)) {
      const name = /^\.vm-pool-([0-9a-f]{12})$/.exec(e.name)?.[1];
      if (!name) continue;
      const taken = await Deno.readTextFile(join(this.#poolDir(name), "taken")).catch(() => "");
      if (taken && await Deno.stat(join(this.opts.dir, taken)).then(() => true, () => false)) {
        continue;
      }
      await this.#killPoolVm(name);
    }
  }

  /**
   * Starts the pod on a VM of the pool made from `template`, if one is ready: its sockets and
   * logs become the pod's, QEMU moves into the pod's cgroup, its clock is set, and it gets the
   * pod's hostname and NICs (taps made in its netns, then moved into the pod's). Undefined when
   * none is ready, or when handing it over failed (it is ended; the pod restores its own VM).
   */
  async #takePooled(
    record: SandboxRecord<VmmPodState>,
    vm: VmDescription,
    template: VmTemplate,
  ): Promise<StartedProcess | undefined> {
    const pv = this.#pool?.take((v) => v.template.key === template.key);
    if (!pv) return undefined;
    this.#poolVms.delete(pv);
    const o = this.opts;
    const t0 = performance.now();
    const deadline = t0 + o.bootTimeoutMs;
    const from = await vmPaths(o, pv.id);
    const to = await vmPaths(o, record.id);
    const cgroupsPath = vmCgroup(record);
    const queues = vm.vcpus;
    // Where the hand-over goes (logged with "vm ready").
    const { phases, phase } = phaseTimer(t0);
    try {
      o.supervisor.exits.cancel(pv.token);
      // Whose it is, should the daemon stop before the pod's record says (#sweepPool).
      await Deno.writeTextFile(join(this.#poolDir(pv.name), "taken"), record.id, { mode: 0o600 });
      await this.links.drop(pv.id);
      const moves: [string, string][] = [
        [from.control, to.control],
        [from.agent, to.agent],
        [from.debug, to.debug],
        [from.console, to.console],
        [from.events, to.events],
        [join(this.#poolDir(pv.name), "monitor.log"), join(o.dir, record.id, "monitor.log")],
      ];
      for (const [a, b] of moves) {
        await Deno.rename(a, b).catch((e) => {
          if (!(e instanceof Deno.errors.NotFound)) throw e;
        });
      }
      record.backend = {
        ...record.backend,
        taps: [],
        cgroupsPath,
        holderPid: pv.helperPid,
        holderToken: pv.token,
        accel: o.accel,
        template: template.key,
        pooled: pv.name,
        ...(debugConsole(o) ? { debugConsole: to.debug } : {}),
      };
      // Its monitor too, as a booted VM's (which joins the pod's cgroup before it starts QEMU).
      for (const f of await makeCgroup(cgroupsPath)) {
        for (const pid of [pv.helperPid, pv.pid]) await Deno.writeTextFile(f, String(pid));
      }
      await removeCgroup(join(POOL_CGROUP, pv.name)).catch(() => {});
      phase("handOverMs");
      const bootId = this.#bootIds.get(pv.id);
      this.#bootIds.delete(pv.id);
      if (bootId) this.#bootIds.set(record.id, bootId);
      const agent = await this.#identify(record, deadline, phase);
      if (record.netnsPath) {
        const nics = await mirrorInterfaces(record.netnsPath, queues, 0, vm.nicSlots, {
          netns: `/proc/${pv.pid}/ns/net`,
          plug: (nic) => o.hypervisor.attachNic(vm, { ...nic, queues, slot: nic.slot! }),
        });
        record.backend = { ...record.backend, taps: nics.map((n) => n.tap) };
        if (nics.length) {
          const routes = await podRoutes(record.netnsPath, nics);
          await agent.updateInterfaces({ interfaces: guestInterfaces(nics) }, {
            timeoutMs: 30_000,
          });
          await agent.updateRoutes({ routes }, { timeoutMs: 10_000 });
        }
        phase("nicsMs");
      }
      // Followed as the pod's from here (had it died meanwhile, its exit is delivered at once).
      // Its pool directory stays, `taken`, until the pod goes: should the daemon die before the
      // pod's record says whose VM it is, a restart finds it there (abandonStart).
      this.holders.watch(record.id, pv.helperPid, pv.pid, pv.token);
    } catch (e) {
      await this.#killPoolVm(pv.name);
      // Its sockets under the pod's names, for the VM the pod restores instead; its logs kept
      // beside that VM's, for the operator to see why (the pod's directory goes with the pod).
      for (const f of [to.control, to.agent, to.debug]) await Deno.remove(f).catch(() => {});
      const kept = `pool-${pv.name}`;
      for (const f of [to.console, to.events, join(o.dir, record.id, "monitor.log")]) {
        await Deno.rename(f, `${f}.${kept}`).catch(() => {});
      }
      await this.links.drop(record.id);
      this.#bootIds.delete(record.id);
      if (record.netnsPath) {
        for (const l of await mirroredLinks(record.netnsPath).catch(() => [])) {
          await unmirror(record.netnsPath, { name: l.ifname, tap: l.tap });
        }
      }
      const { holderPid: _h, holderToken: _t, pooled: _p, ...rest } = record.backend;
      record.backend = rest;
      this.#log.warn("vm of the pool not handed over: the pod restores its own", {
        sandbox: record.id,
        pooled: pv.name,
        logs: `${to.console}.${kept}`,
        error: String(e),
      });
      return undefined;
    }
    this.#ready(record.id, vm, {
      template: template.key,
      pooled: pv.name,
      ...phases,
      agentReadyMs: Math.round(performance.now() - t0),
    });
    return { pid: pv.pid };
  }

  /** Starts virtiofsd on the pod's shared directory; resolves with its socket once it listens. */
  async #startVirtiofsd(
    record: SandboxRecord<VmmPodState>,
    p: { fs: string; shared: string },
  ): Promise<string> {
    await Deno.mkdir(p.shared, { recursive: true, mode: 0o700 });
    await Deno.remove(p.fs).catch(() => {});
    await this.opts.supervisor.startMonitored({
      token: sharedFsToken(record.id),
      monitorLog: join(this.opts.dir, record.id, "virtiofsd.log"),
      argv: () => [
        this.opts.virtiofsd!,
        `--socket-path=${p.fs}`,
        "-o",
        `source=${p.shared}`,
        ...this.opts.virtiofsdOptions,
        "-o",
        "sandbox=chroot",
        "-o",
        "announce_submounts",
      ],
    });
    for (let i = 0; i < 250; i++) {
      if (await Deno.stat(p.fs).then(() => true, () => false)) return p.fs;
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new DeadlineExceededError(`virtiofsd did not create ${p.fs}`);
  }

  /**
   * Waits until the agent answers Check, then hands it the pod's settings
   * (SetupSandbox: hostname, sysctls, DNS) and sets its clock (SyncClock).
   * Resolves with when Check answered (`performance.now()`).
   */
  async #initAgent(
    record: SandboxRecord<VmmPodState>,
    deadline: number,
    network: { interfaces: Interface[]; routes: Route[] },
  ): Promise<number> {
    this.#bootIds.delete(record.id); // a new VM: its first boot id is the pod's
    const agent = (await this.links.connect(record.id, deadline)).sandbox;
    const checked = performance.now();
    record.backend = { ...record.backend, guestBootId: this.#bootIds.get(record.id) };
    await agent.setupSandbox({
      config: { typeUrl: "PodSandboxConfig", value: podSandboxJson(record) },
      ...network,
    }, { timeoutMs: 10_000 });
    await syncClock(agent);
    return checked;
  }

  /**
   * Guest clocks drift (a host suspend, an NTP step on the host, a long-lived pod): each running
   * VM's is set from the host's every `clockSyncMs`, and once more when a restarted daemon finds
   * it, as Kuasar's sandboxer does every 60 s.
   */
  #clocked = new Set<string>();
  #clockTimer: ReturnType<typeof setInterval> | undefined;

  #keepClockSynced(id: string): void {
    this.#clocked.add(id);
    const every = this.opts.clockSyncMs ?? 0;
    if (this.#clockTimer || every <= 0) return;
    this.#clockTimer = setInterval(() => {
      for (const pod of this.#clocked) this.#syncClockOf(pod);
    }, every);
    Deno.unrefTimer(this.#clockTimer);
  }

  #syncClockOf(id: string): void {
    if (!this.holders.running(id)) return;
    this.links.get(id).then((l) => syncClock(l.sandbox)).catch((e) =>
      this.#log.debug("guest clock not synced", { sandbox: id, error: String(e) })
    );
  }

  /** Also ends a pool VM the unfinished Start had taken (its `taken` file names the pod). */
  protected override async abandonStart(record: SandboxRecord<VmmPodState>): Promise<void> {
    await super.abandonStart(record);
    for await (const e of Deno.readDir(this.opts.dir)) {
      const name = /^\.vm-pool-([0-9a-f]{12})$/.exec(e.name)?.[1];
      if (!name) continue;
      const taken = await Deno.readTextFile(join(this.#poolDir(name), "taken")).catch(() => "");
      if (taken === record.id) await this.#killPoolVm(name);
    }
  }

  override async recover(record: SandboxRecord<VmmPodState>) {
    // Known before any connection to the agent: a guest rebooted while the daemon was down.
    const bootId = record.backend.guestBootId;
    if (typeof bootId === "string" && bootId) this.#bootIds.set(record.id, bootId);
    const r = await super.recover(record);
    if (r.alive) {
      this.#keepClockSynced(record.id);
      this.#syncClockOf(record.id);
    }
    return r;
  }

  /**
   * Interfaces a CNI plugin added to the pod's netns after the VM started (an engine that
   * sets up the network late) are mirrored and their NICs hot-plugged, then configured by the
   * agent. Checked before each container is created, so its network is complete.
   */
  plugLateInterfaces(record: SandboxRecord<VmmPodState>): Promise<void> {
    const netns = record.netnsPath;
    if (!netns || !this.vmRunning(record.id) || !this.opts.hypervisor.capabilities.nicHotplug) {
      return Promise.resolve();
    }
    return this.#netLock.run(record.id, async () => {
      const before = await mirroredLinks(netns);
      const firstSlot = Math.max(-1, ...before.map((l) => l.slot ?? -1)) + 1;
      const queues = record.backend.vcpus ?? this.opts.vcpus;
      const vm = await this.#described(record.id);
      const plug = (nic: MirroredInterface) =>
        this.opts.hypervisor.attachNic(vm, { ...nic, queues, slot: nic.slot! });
      // A VM made ahead of its pod runs in a netns of its own: its taps are made there, plugged
      // and moved into the pod's (as at its hand-over).
      const qemu = this.holders.runningPid(record.id);
      const via = record.backend.pooled && qemu
        ? { netns: `/proc/${qemu}/ns/net`, plug }
        : undefined;
      // Only the interfaces the VM has slots for are mirrored: a tap records its interface as
      // done, and one without a NIC would be skipped silently from then on.
      let fresh: MirroredInterface[];
      try {
        fresh = await mirrorInterfaces(netns, queues, firstSlot, vm.nicSlots - firstSlot, via);
      } catch (e) {
        // The taps of this round (plugged or not) go, so that the next look finds them again.
        const now = await mirroredLinks(netns).catch(() => []);
        const old = new Set(before.map((l) => l.tap));
        for (const l of now) {
          if (!old.has(l.tap)) await unmirror(netns, { name: l.ifname, tap: l.tap });
        }
        throw e;
      }
      const left = await unmirrored(netns);
      // Taps made in the pod's netns are plugged now (with `via` they were as they were made).
      for (const [i, nic] of (via ? [] : fresh).entries()) {
        try {
          await plug(nic);
        } catch (e) {
          for (const n of fresh.slice(i)) await unmirror(netns, n);
          throw e;
        }
      }
      if (fresh.length) {
        const agent = (await this.links.get(record.id)).sandbox;
        await agent.updateInterfaces({ interfaces: guestInterfaces(fresh) }, {
          timeoutMs: 30_000,
        });
        const all = [...before.map((l) => ({ name: l.ifname })), ...fresh];
        await agent.updateRoutes({ routes: await podRoutes(netns, all) }, { timeoutMs: 10_000 });
        this.#log.info("late interfaces hot-plugged", {
          sandbox: record.id,
          interfaces: fresh.map((n) => n.name),
        });
      }
      if (left.length) {
        throw new ResourceExhaustedError(
          `Interface "${left[0].ifname}" appeared in the pod's netns after start, and the VM ` +
            `has all its ${vm.nicSlots} NIC hot-plug slots in use`,
        );
      }
    });
  }

  #netLock = new KeyedMutex();

  /**
   * Grows the pod's VM for a container raised beyond it: vCPUs and memory hot-plugged (up to
   * the room it was started with), then onlined by the guest. Refused with the sizes where the
   * VMM cannot or the room is not there.
   */
  resizeVm(record: SandboxRecord<VmmPodState>, want: VmSize): Promise<void> {
    return this.#netLock.run(record.id, async () => {
      const b = record.backend;
      const vm = {
        vcpus: b.vcpus ?? this.opts.vcpus,
        memoryMiB: b.memoryMiB ?? this.opts.memoryMiB,
      };
      const max = this.opts.hypervisor.capabilities.resize
        ? { vcpus: b.maxVcpus ?? vm.vcpus, memoryMiB: b.maxMemoryMiB ?? vm.memoryMiB }
        : vm;
      const refusal = vmGrowthRefusal(vm, want, max);
      if (refusal) {
        refusal.message += max.vcpus === vm.vcpus && max.memoryMiB === vm.memoryMiB
          ? " ([hypervisor] default_max_vcpus and mem_slots give VMs room to grow)"
          : "";
        throw refusal;
      }
      const got = await this.opts.hypervisor.resize(await this.#described(record.id), want);
      await onlineInGuest((await this.links.get(record.id)).sandbox, got);
      record.backend = { ...record.backend, ...got };
      this.#log.info("vm grown", { sandbox: record.id, from: vm, to: got });
    });
  }

  /** Whether the pod's VM runs (its QEMU has not exited). */
  vmRunning(id: string): boolean {
    return this.holders.running(id);
  }

  stop(record: SandboxRecord<VmmPodState>, timeoutMs: number): Promise<SandboxExit> {
    return this.holders.stop(record, timeoutMs, async (pid, sig) => {
      if (sig === "SIGTERM") {
        // The VMM's own orderly exit (the guest has nothing that must be flushed yet).
        const p = await vmPaths(this.opts, record.id);
        await this.opts.hypervisor.requestStop(describe(this.opts, record.id, p));
        return;
      }
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* gone */ }
    });
  }

  async cleanup(record: SandboxRecord<VmmPodState>): Promise<void> {
    this.#clocked.delete(record.id);
    this.#bootIds.delete(record.id);
    const pid = this.holders.runningPid(record.id);
    if (pid) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* gone */ }
      await this.holders.waitGone(record.id);
    }
    await this.holders.forget(record.id, record.backend.holderToken);
    await this.links.drop(record.id);
    const taps = new Set(Array.isArray(record.backend.taps) ? record.backend.taps : []);
    // State read back from disk: checked, not trusted. Hot-plugged NICs' taps are the netns's.
    if (record.netnsPath) {
      for (const l of await mirroredLinks(record.netnsPath).catch(() => [])) taps.add(l.tap);
      for (const tap of taps) {
        await this.opts.supervisor.run([
          "nsenter",
          `--net=${record.netnsPath}`,
          "--",
          "ip",
          "link",
          "del",
          String(tap),
        ])
          .catch(() => {});
      }
    }
    // The record may predate the Start that made it (the daemon died in it): the path is the
    // pod's own either way.
    for (const path of new Set([record.backend.cgroupsPath, vmCgroup(record)])) {
      if (typeof path === "string") await removeCgroup(path);
    }
    // virtiofsd leaves with the VMM's connection; whatever is left of it goes: its monitor, and
    // a virtiofsd no VMM ever connected to (a VMM that failed first), known by its own socket.
    await this.opts.supervisor.killOrphans(sharedFsToken(record.id));
    await this.opts.supervisor.exits.remove(sharedFsToken(record.id));
    const p = await vmPaths(this.opts, record.id);
    if (this.opts.virtiofsd) await killByCommandLine(`--socket-path=${p.fs}\0`);
    for (const f of [p.control, p.agent, p.fs, p.debug]) await Deno.remove(f).catch(() => {});
    const bundles = podBundleDisks(record);
    if (bundles) {
      await Deno.remove(podBundleDir(bundles, record.id), { recursive: true }).catch(() => {});
    }
    const pooled = record.backend.pooled;
    if (typeof pooled === "string" && /^[0-9a-f]{12}$/.test(pooled)) {
      await this.#removePoolFiles(pooled);
    }
  }

  /**
   * Shares announced containers into the guest ahead of their Task.Create
   * (iSulad, Kuasar's containerd); withdrawn ones that were never created go.
   */
  async tasksChanged(record: SandboxRecord<VmmPodState>, diff: TasksDiff): Promise<void> {
    // A bundle disk is packed at Task.Create: a copy made earlier would miss what changes since.
    if (podBundleDisks(record)) return;
    for (const t of diff.addedTasks) {
      const cid = validateId("container", t.task_id);
      if (!t.spec || typeof t.spec !== "object") {
        throw new InvalidArgumentError(`Task "${cid}" in extensions.tasks has no spec`);
      }
      const spec = t.spec as OciSpec;
      const share = shareDir(this.opts.dir, record.id, cid);
      if (await shared(share)) continue;
      const root = spec.root?.path ?? "";
      if (!t.rootfs.length && !root.startsWith("/")) {
        throw new InvalidArgumentError(
          `Task "${cid}" in extensions.tasks has neither rootfs mounts nor an absolute root path`,
        );
      }
      await makeShare(
        share,
        cid,
        spec,
        t.rootfs.map((m) => ({ ...m, target: "" })),
        root,
        this.disks.attacher(record.id, cid),
      ).catch(async (e) => {
        await this.disks.release(record.id, cid);
        throw e;
      });
      this.#log.debug("container shared in advance", { sandbox: record.id, container: cid });
    }
    for (const cid of diff.removedTasks) {
      if (record.containers[cid]) continue; // Task.Delete removes it
      await removeShare(shareDir(this.opts.dir, record.id, validateId("container", cid)));
      await this.disks.release(record.id, cid);
    }
  }

  async metrics(record: SandboxRecord<VmmPodState>): Promise<StoredAnyBytes | undefined> {
    if (typeof record.backend.cgroupsPath === "string") {
      return await cgroupMetrics(cgroupPathsFor(record.backend.cgroupsPath));
    }
    if (!record.pid) return undefined;
    return await cgroupMetrics(await cgroupPathsOf(record.pid));
  }
}

/**
 * The pod's settings as Kuasar's host sends them to the agent: PodSandboxConfig as JSON. A pod
 * without DNS settings gets the node's (its resolv.conf), as containerd's own sandboxes do.
 */
export function podSandboxJson(
  record: SandboxRecord<VmmPodState>,
  nodeResolvConf = () => Deno.readTextFileSync("/etc/resolv.conf"),
): Uint8Array {
  const pod = record.pod;
  const dns = resolvConf(pod.dns) !== undefined ? pod.dns : (() => {
    try {
      return dnsOfResolvConf(nodeResolvConf());
    } catch {
      return undefined;
    }
  })();
  return new TextEncoder().encode(JSON.stringify({
    metadata: { name: pod.name, namespace: pod.namespace, uid: pod.uid },
    hostname: pod.hostname,
    dns_config: dns
      ? { servers: dns.servers, searches: dns.searches, options: dns.options }
      : undefined,
    linux: { sysctls: pod.sysctls },
  }));
}

/** The host's memory (in the guest's 128 MiB blocks): how far memory hot-plug may grow a VM. */
function hostMemoryMiB(): number {
  const kb = Number(/MemTotal:\s+(\d+)/.exec(Deno.readTextFileSync("/proc/meminfo"))?.[1] ?? 0);
  return Math.floor(kb / 1024 / 128) * 128;
}

/**
 * Has the guest take hot-plugged CPUs and memory blocks online (no udev there) and waits until
 * it has `size`: its online memory blocks add up to the memory, `nproc` to the vCPUs.
 */
async function onlineInGuest(agent: AgentLink["sandbox"], size: VmSize): Promise<void> {
  const script = [
    `want_cpus=${size.vcpus}; want_mib=${size.memoryMiB}; i=0`,
    "bs=$(( $(printf '%d' 0x$(cat /sys/devices/system/memory/block_size_bytes)) / 1048576 ))",
    "while :; do",
    "  for f in /sys/devices/system/cpu/cpu[0-9]*/online; do",
    '    [ "$(cat $f)" = 1 ] || echo 1 > $f; done 2>/dev/null',
    "  for f in /sys/devices/system/memory/memory[0-9]*/state; do",
    '    [ "$(cat $f)" = online ] || echo online > $f; done 2>/dev/null',
    "  blocks=$(grep -l '^online' /sys/devices/system/memory/memory[0-9]*/state | wc -l)",
    '  [ "$(nproc)" -ge $want_cpus ] && [ $((blocks * bs)) -ge $want_mib ] && exit 0',
    '  i=$((i + 1)); [ $i -ge 150 ] && { echo "cpus $(nproc), memory $((blocks * bs)) MiB"; exit 1; }',
    "  sleep 0.2",
    "done",
  ].join("\n");
  const r = await agent.execVMProcess({ command: script, stdin: new Uint8Array() }, {
    timeoutMs: 60_000,
  }).catch((e) => {
    throw new InternalError(`The guest did not take its hot-plugged CPUs and memory: ${e}`);
  });
  void r;
}

/**
 * The calls a clone's start makes of its agent, made of the template's before it is saved,
 * so that its V8 has compiled them: Check, Reseed, both steps of SyncClock, SetupSandbox of an
 * empty pod config, a task call (for a container that does not exist). None of them leaves
 * anything a clone would keep: the template's boot id is never read (the kernel draws it on
 * first read), reseeding only adds the host's entropy, each clone sets its clock again and
 * its SetupSandbox writes the pod's files over these (the pod's /dev/shm tmpfs, mounted
 * here, is the one it would mount: empty, same options).
 */
async function warmAgent(client: TtrpcClient, deadline: number): Promise<void> {
  const sandbox = unaryClient(client, SandboxServiceDefinition);
  const tasks = unaryClient(client, TaskV3);
  // A call that timed out could still run when the VM is saved, and finish in every clone:
  // each has the time left of the template's build, not a timeout of its own.
  const left = () => ({ timeoutMs: Math.max(1, deadline - performance.now()) });
  for (let i = 0; i < 3; i++) {
    await sandbox.check({ service: "" }, left());
    await client.call(
      BOOT_SERVICE,
      BOOT_RESEED,
      crypto.getRandomValues(new Uint8Array(64)),
      left(),
    );
    await syncClock(sandbox, { alwaysSet: true, timeoutMs: left().timeoutMs });
    await sandbox.setupSandbox({
      config: { typeUrl: "PodSandboxConfig", value: new TextEncoder().encode("{}") },
      interfaces: [],
      routes: [],
    }, left());
    await tasks.state({ id: "kuasar-template-warm-up", execId: "" }, left()).catch((e) => {
      // A guest without a Task API still makes a template (its pods fail as booted ones do).
      if (!(e instanceof NotFoundError) && !(e instanceof UnimplementedError)) throw e;
    });
  }
}

/**
 * Kuasar's two-step clock sync: measure the offset, then have the guest apply it (when it is
 * over 10 ms, or `alwaysSet`).
 */
/** Durations of named steps, each from the end of the one before (the first from `start`). */
function phaseTimer(start: number) {
  const phases: Record<string, number> = {};
  let mark = start;
  const phase = (name: string) => {
    const now = performance.now();
    phases[name] = Math.round(now - mark);
    mark = now;
  };
  return { phases, phase };
}

async function syncClock(
  agent: AgentLink["sandbox"],
  o: { alwaysSet?: boolean; timeoutMs?: number } = {},
) {
  const ns = () => BigInt(Date.now()) * 1_000_000n;
  const p = await agent.syncClock({
    ClientSendTime: ns(),
    ClientArriveTime: 0n,
    ServerSendTime: 0n,
    ServerArriveTime: 0n,
    Delta: 0n,
  }, { timeoutMs: o.timeoutMs ?? 1000 });
  const arrived = ns();
  const delta = ((p.ClientSendTime - p.ClientArriveTime) + (arrived - p.ServerSendTime)) / 2n;
  if (o.alwaysSet || delta > 10_000_000n || delta < -10_000_000n) {
    await agent.syncClock({ ...p, ServerArriveTime: arrived, Delta: delta }, {
      timeoutMs: o.timeoutMs ?? 1000,
    });
  }
}
