/**
 * What the host and the guest agree on besides the ttrpc services
 * themselves: where the agent listens, and where the pod's share appears.
 * The host's adapters, the agent and the guest image's init all take them
 * from here.
 *
 * @module
 */

/** The agent's vsock port (Kuasar's). */
export const AGENT_VSOCK_PORT = 1024;
/** The name the host gives the agent's virtio-serial port (used where there is no vhost-vsock). */
export const AGENT_PORT_NAME = "agent.0";
/**
 * The virtio-serial port of the opt-in debug console (`[hypervisor.task] debug`,
 * Kuasar's vsock port 1025): a client opens a session by sending SHELL_HELLO
 * first, gets a shell on a new pty, and the session ends with a line
 * `\0kuasar-shell-exit=<status>` when the shell exits. The guest side is
 * native/pty_shell.c, which spells the hello again.
 */
export const DEBUG_PORT_NAME = "debug.0";
export const SHELL_HELLO = "\u0000kuasar-shell-open\n";
export const SHELL_EXIT_MARK = "\u0000kuasar-shell-exit=";

/**
 * The guest's boot identity: `Id` answers the guest kernel's boot id (UTF-8, an empty request).
 * The host keeps the one it saw first; another one later means the VMM restarted the guest by
 * itself (a reboot or a panic, on a VMM with no way to exit instead), without the pod's
 * containers.
 */
export const BOOT_SERVICE = "kuasar.guest.v1.Boot";
export const BOOT_ID = "Id";
/**
 * A VM started from a template shares the template's random state: `Reseed` (the request is
 * 16 to 512 random bytes from the host) credits them to the guest kernel's pool and reseeds
 * its generator, and the agent's own generator. The host calls it before anything reads the
 * boot id (which the kernel draws on first read) or other random output.
 */
export const BOOT_RESEED = "Reseed";

/** Where the host's per-pod share (virtiofs) is mounted in the guest. */
export const GUEST_SHARED_DIR = "/run/kuasar/shared";
/** The virtiofs tag of that share. */
export const SHARE_TAG = "kuasar";

/**
 * The agent's spans (src/lib/trace_recorder.ts): `Drain` takes the finished
 * ones, as JSON `{ spans: RecordedSpan[], dropped: number }` (an empty request).
 */
export const TRACE_SERVICE = "kuasar.trace.v1.Spans";
export const TRACE_DRAIN = "Drain";

/**
 * In a guest spec, the pid namespace of a pod whose containers share one
 * (`shareProcessNamespace`): the guest's runtime replaces it with the
 * namespace of a holder it starts for the pod (no pause container).
 */
export const POD_PID_NS = "/run/kuasar/pod-pid-ns";

/**
 * Where the guest keeps a pod's memory-backed volumes (emptyDir with
 * `medium: Memory`): one tmpfs per volume, `<dir>/<name>`, that every
 * container of the pod naming it binds. In the guest's memory, not shared
 * from the host over virtiofs.
 */
export const GUEST_EPHEMERAL_DIR = "/run/kuasar/ephemeral";

/**
 * Where the guest keeps the pod's hot-plugged disks (block volumes, block
 * rootfs): a disk with a file system is mounted at `<dir>/<serial>`; every
 * disk's device node is `<dir>/<serial>.dev` (a raw block volume binds it).
 */
export const GUEST_DISK_DIR = "/run/kuasar/disks";

/**
 * The guest spec's annotation listing the disks a container needs, as JSON
 * `GuestDisk[]`; the agent finds each by its serial before the container is
 * created.
 */
export const DISKS_ANNOTATION = "io.kuasar.disks";

/**
 * A container's bundle on a disk, for pods with no shared directory (Firecracker, or
 * `share_fs = "None"`): the host packs the bundle (config.json, rootfs/, the bind sources) into
 * a file system image, attaches it, and names it in Task.Create as the one rootfs mount
 * `{ type: BUNDLE_DISK_MOUNT, source: <serial>, options: [<fstype>] }`. The agent mounts that
 * disk at the bundle path (`GUEST_SHARED_DIR/<id>`, as with a share) before reading the spec.
 */
export const BUNDLE_DISK_MOUNT = "kuasar.bundle-disk";

/** A hot-plugged disk as the guest's runtime sees it. */
export interface GuestDisk {
  /** The virtio-blk serial the host gave the disk (`/sys/block/<vd>/serial`). */
  readonly serial: string;
  /** The file system the agent mounts at `<GUEST_DISK_DIR>/<serial>`; unset: raw, not mounted. */
  readonly fstype?: string;
  /** Mount options (only `ro` is passed on: the rest belonged to the host's bind mount). */
  readonly options?: readonly string[];
  /** `major:minor` of the host device the spec's `linux.devices` names, to renumber in the guest. */
  readonly hostDevice?: string;
}

/**
 * The kernel command-line parameter naming the guest's OCI runtime (`crun` or `runc`, both
 * in the guest image); the host sets it from `[hypervisor.task] oci_runtime`.
 */
export const OCI_RUNTIME_PARAM = "kuasar.oci_runtime";
/** The guest's OCI runtimes by name, as the guest image installs them. */
export const GUEST_OCI_RUNTIMES = { crun: "/usr/bin/crun", runc: "/usr/sbin/runc" } as const;
export type GuestOciRuntime = keyof typeof GUEST_OCI_RUNTIMES;
/**
 * The default: crun, a C runtime, starts a container in a fraction of runc's time under
 * emulation (runc is two Go runtime starts per container).
 */
export const DEFAULT_GUEST_OCI_RUNTIME: GuestOciRuntime = "crun";
