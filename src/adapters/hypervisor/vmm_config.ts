/**
 * `[hypervisor]` of the vmm sandboxer's config, with Kuasar's keys for QEMU,
 * Cloud Hypervisor and StratoVirt (kuasar-spec §3.2-3.5) so its config files
 * load unchanged. Kuasar builds one binary per VMM; here the file says which:
 * `qemu_path` is QEMU, `path` names Cloud Hypervisor, StratoVirt or
 * Firecracker by its file name, and `vmm` (ours) says it outright. Every key
 * is optional: `kuasar vmm` without a config runs QEMU on the guest image
 * that `deno task guest-image` installs. Unknown keys are errors.
 *
 * @module
 */
import { z } from "zod";
import { InvalidArgumentError } from "../../domain/errors.ts";
import { DEFAULT_GUEST_OCI_RUNTIME, OCI_RUNTIME_PARAM } from "../../ports/agent_protocol.ts";

const virtiofsd = z.strictObject({
  path: z.string().min(1).optional(),
  log_level: z.string().optional(),
  cache: z.string().optional(),
  thread_pool_size: z.number().int().min(0).optional(),
  socket_path: z.string().optional(),
  shared_dir: z.string().optional(),
  syslog: z.boolean().optional(),
});

/** The VMMs a `[hypervisor]` table can name. */
export const VMMS = ["qemu", "cloud-hypervisor", "stratovirt", "firecracker"] as const;
export type VmmName = typeof VMMS[number];

export const hypervisorSettings = z.strictObject({
  // Used.
  /** Ours: which VMM, when `path`'s file name does not say. */
  vmm: z.enum(VMMS).optional(),
  qemu_path: z.string().min(1).optional(),
  /** Kuasar's for Cloud Hypervisor and StratoVirt: the VMM binary. */
  path: z.string().min(1).optional(),
  vcpus: z.number().int().min(1).max(256).optional(),
  memory_in_mb: z.number().int().min(128).optional(),
  /** Empty or unset: the guest image's (Kuasar's config_clh.toml sets initrd_path = ""). */
  kernel_path: z.string().optional(),
  initrd_path: z.string().optional(),
  kernel_params: z.string().optional(),
  /** "kvm" or "tcg" forces the accelerator; empty: probed (KVM when it really works). */
  machine_accelerators: z.string().optional(),
  use_vsock: z.boolean().optional(),
  /** Ours: how long Start waits for the agent (TCG boots take seconds). */
  boot_timeout_secs: z.number().int().min(1).optional(),
  /** Ours: how often running guests' clocks are set from the host's (Kuasar: 60 s); 0: never. */
  clock_sync_interval_secs: z.number().int().min(0).optional(),
  /** Ours: PCIe root ports left free for block volumes (disks hot-plugged per pod); default 3. */
  hotplug_disk_slots: z.number().int().min(0).max(30).optional(),
  /**
   * Kuasar's: room for CPU hot-plug (`maxcpus`); 0 (the default, as Kuasar's): none, and a
   * container raised beyond the VM's vCPUs is refused.
   */
  default_max_vcpus: z.number().int().min(0).max(256).optional(),
  /**
   * Kuasar's: DIMM slots for memory hot-plug, up to the host's memory (`slots`, `maxmem`).
   * Kuasar defaults to 1; ours is 0 (none), as the room costs QEMU ~60 MiB more per VM here.
   */
  mem_slots: z.number().int().min(0).max(256).optional(),
  /**
   * Kuasar's: how the guest gets containers' files. VirtioFS (and Virtio9P, which is served
   * by virtiofs here); "None" (ours): each container's bundle packed into a disk image
   * (Firecracker's only way, as it has no virtiofs).
   */
  share_fs: z.enum(["Virtio9P", "VirtioFS", "None"]).optional(),
  /** Ours: where bundle images live with share_fs = "None" (on disk: they hold containers' writes). */
  bundle_disk_dir: z.string().min(1).optional(),
  /** Ours: room in each bundle image for its container's writes, MiB; default 1024. */
  bundle_disk_free_mb: z.number().int().min(0).max(1 << 20).optional(),
  /**
   * Ours: start pods' VMs from a saved template VM instead of booting them (QEMU, bundles on
   * disks, the agent on virtio-serial; docs/vmm.md). Off by default.
   */
  template: z.boolean().optional(),
  /** Ours: where templates live (absolute; on tmpfs for shared pages); default under --dir. */
  template_dir: z.string().min(1).startsWith("/").optional(),
  /**
   * Ours: VMs kept restored from the template and warmed by a throwaway container, ahead of
   * pods (each costs a clone's memory while it waits); default 0, none.
   */
  template_pool: z.number().int().min(0).max(64).optional(),
  /**
   * Ours: how many shapes of VM have a template: the config's, and those of pods with CPU or
   * memory limits, each built once two such pods have booted (the least recently used goes
   * when there is no room). Each takes its VM's memory in template_dir. Default 4.
   */
  template_shapes: z.number().int().min(1).max(16).optional(),
  // Kuasar's, accepted so its files load; not used (a warning at start names those set).
  /** QEMU: pc or q35; StratoVirt: e.g. "q35,mem-share=on" (checked per VMM). */
  machine_type: z.string().optional(),
  image_path: z.string().optional(),
  firmware_path: z.string().optional(),
  firmware: z.string().optional(),
  cpu_features: z.string().optional(),
  cpu_model: z.string().optional(),
  default_bridges: z.number().int().optional(),
  entropy_source: z.string().optional(),
  mem_offset: z.number().int().optional(),
  memory_path: z.string().optional(),
  file_backend_mem_path: z.string().optional(),
  mem_prealloc: z.boolean().optional(),
  enable_mem_prealloc: z.boolean().optional(),
  hugepages: z.boolean().optional(),
  enable_vhost_user_store: z.boolean().optional(),
  enable_swap: z.boolean().optional(),
  msize_9p: z.number().int().optional(),
  virtio_9p_direct_io: z.boolean().optional(),
  virtio_9p_multidevs: z.string().optional(),
  enable_iothreads: z.boolean().optional(),
  /** QEMU: VirtioBlk, VirtioScsi, VirtioMmio; StratoVirt: virtio-blk, virtio-scsi, virtio-mmio. */
  block_device_driver: z.enum([
    "VirtioBlk",
    "VirtioScsi",
    "VirtioMmio",
    "virtio-blk",
    "virtio-scsi",
    "virtio-mmio",
  ]).optional(),
  disable_nvdimm: z.boolean().optional(),
  debug: z.boolean().optional(),
  virtiofs_daemon_path: z.string().optional(),
  virtiofs_cache: z.string().optional(),
  virtiofs_extra_args: z.array(z.string()).optional(),
  virtiofs_cache_size: z.number().int().optional(),
  virtiofsd: virtiofsd.optional(),
  /** StratoVirt's: its vhost-user-fs daemon. */
  virtiofsd_conf: z.strictObject({ path: z.string().min(1).optional() }).optional(),
  task: z.strictObject({
    debug: z.boolean().optional(),
    enable_tracing: z.boolean().optional(),
    /** Ours: the OCI runtime in the guest, crun (the default) or runc; both are in the image. */
    oci_runtime: z.enum(["crun", "runc"]).optional(),
  }).optional(),
});

export type HypervisorSettings = z.infer<typeof hypervisorSettings>;

/** Which VMM the settings are for. */
export function vmmOf(s: HypervisorSettings): VmmName {
  const named = s.path === undefined ? undefined : vmmNamed(s.path);
  const vmm = s.vmm ?? (s.qemu_path !== undefined || s.path === undefined ? "qemu" : named);
  if (!vmm) {
    throw new InvalidArgumentError(
      `hypervisor.path: "${s.path}" does not say which VMM it is: set [hypervisor] vmm to one of ` +
        VMMS.join(", "),
    );
  }
  // Two VMMs named in one table is a mistake to point out, not a choice to make silently.
  if (s.qemu_path !== undefined && vmm !== "qemu") {
    throw new InvalidArgumentError(
      `hypervisor.qemu_path is set but the table is for ${vmm}: remove one of them`,
    );
  }
  if (named && named !== vmm) {
    throw new InvalidArgumentError(
      `hypervisor.path: "${s.path}" is ${named} but the table is for ${vmm}: remove one of them`,
    );
  }
  return vmm;
}

/** The VMM a binary's file name says (release names included), if any. */
function vmmNamed(path: string): VmmName | undefined {
  const file = path.slice(path.lastIndexOf("/") + 1);
  if (/^(cloud-hypervisor|cloud_hypervisor|clh)(-static)?(-aarch64)?$/.test(file)) {
    return "cloud-hypervisor";
  }
  if (/^stratovirt(-static)?$/.test(file)) return "stratovirt";
  if (/^firecracker(-v[\d.]+)?(-(x86_64|aarch64))?$/.test(file)) return "firecracker";
  return undefined;
}

/** Where bundle images live unless `bundle_disk_dir` says. */
export const DEFAULT_BUNDLE_DISK_DIR = "/var/lib/kuasar/bundle-disks";

/**
 * Whether containers' bundles go to the guest as disk images rather than over virtiofs:
 * `share_fs = "None"`, and always on Firecracker (a shared file system there is refused).
 */
export function bundlesOnDisks(s: HypervisorSettings): boolean {
  if (vmmOf(s) !== "firecracker") return s.share_fs === "None";
  if (s.share_fs !== undefined && s.share_fs !== "None") {
    throw new InvalidArgumentError(
      `hypervisor.share_fs: "${s.share_fs}" is not possible on Firecracker, which has no ` +
        'virtiofs: remove it or set "None"',
    );
  }
  return true;
}

/** Keys this sandboxer reads; the others of the schema are accepted so Kuasar's files load. */
const USED = new Set([
  "vmm",
  "vcpus",
  "memory_in_mb",
  "kernel_path",
  "initrd_path",
  "kernel_params",
  "machine_accelerators",
  "use_vsock",
  "boot_timeout_secs",
  "clock_sync_interval_secs",
  "virtiofsd",
  "default_max_vcpus",
  "mem_slots",
  "hotplug_disk_slots",
  "bundle_disk_dir",
  "bundle_disk_free_mb",
  "template",
  "template_dir",
  "template_pool",
  "template_shapes",
]);

/** Keys read for one VMM only. */
const USED_BY: Record<VmmName, readonly string[]> = {
  qemu: ["qemu_path"],
  "cloud-hypervisor": ["path", "hugepages", "entropy_source", "debug"],
  stratovirt: ["path", "machine_type", "firmware", "enable_mem_prealloc", "debug"],
  firecracker: ["path"],
};

/** The keys of `s` that are set but not used (an operator is told, not left guessing). */
export function unusedKeys(s: HypervisorSettings): string[] {
  const vmm = vmmOf(s);
  const unused = Object.keys(s).filter((k) =>
    !USED.has(k) && !USED_BY[vmm].includes(k) && k !== "task" &&
    // Virtio9P is served by virtiofs: the key is read, that value is not.
    !(k === "share_fs" && s.share_fs !== "Virtio9P")
  );
  // [hypervisor.task] debug is the debug console; the guest's spans follow the host's tracing.
  if (s.task?.enable_tracing !== undefined) unused.push("task.enable_tracing");
  return unused.sort();
}

/**
 * virtiofsd options from `[hypervisor.virtiofsd]` (QEMU's virtiofsd): the
 * cache mode (Kuasar's "never" is its "none") and the thread pool; the
 * sandboxer sets the socket and the shared directory per pod.
 */
export function virtiofsdOptions(s: HypervisorSettings): string[] {
  const v = s.virtiofsd ?? {};
  const cache = v.cache === undefined || v.cache === "never" ? "none" : v.cache;
  if (!["none", "auto", "always"].includes(cache)) {
    throw new InvalidArgumentError(
      `hypervisor.virtiofsd.cache: "${v.cache}" is not never, none, auto or always`,
    );
  }
  const args = ["-o", `cache=${cache}`];
  if (v.thread_pool_size !== undefined) args.push(`--thread-pool-size=${v.thread_pool_size}`);
  return args;
}

/** Where `deno task guest-image` puts the guest image. */
export const DEFAULT_GUEST_DIR = "/var/lib/kuasar/guest";

/**
 * The guest kernel's command line beyond the VMM's own: the guest's OCI runtime
 * (`kuasar.oci_runtime=`, read by the agent), then `kernel_params` as given.
 */
export function guestKernelParams(s: HypervisorSettings): string {
  const runtime = s.task?.oci_runtime ?? DEFAULT_GUEST_OCI_RUNTIME;
  return [`${OCI_RUNTIME_PARAM}=${runtime}`, s.kernel_params ?? ""].filter(Boolean).join(" ");
}

/** Shapes of VM with a template when `template_shapes` is not set. */
export const DEFAULT_TEMPLATE_SHAPES = 4;

/**
 * Why this config cannot have VM templates, or undefined when it can: templates are QEMU's,
 * with bundles on disks (virtiofs needs guest memory shared with virtiofsd, which a clone's
 * copy-on-write mapping is not) and the agent on virtio-serial (use_vsock = false).
 */
export function templateRefusal(s: HypervisorSettings): string | undefined {
  if (!s.template) {
    if (s.template_pool) return "template_pool needs template = true";
    return s.template_shapes ? "template_shapes needs template = true" : undefined;
  }
  if (vmmOf(s) !== "qemu") return `templates are QEMU's, not ${vmmOf(s)}'s`;
  if (!bundlesOnDisks(s)) return 'templates need share_fs = "None" (bundles on disks)';
  if (s.use_vsock !== false) return "templates need use_vsock = false (the agent on virtio-serial)";
  return undefined;
}
