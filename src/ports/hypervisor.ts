/**
 * Port: what differs between VMMs (QEMU, Cloud Hypervisor, StratoVirt,
 * Firecracker). The vmm sandboxer does the rest the same way for all: the
 * pod's network (taps), its shared directory (virtiofsd), the monitor that
 * runs the VMM's process and records its exit, the agent connection.
 *
 * A VMM runs as one process per pod, started from `argv` under the monitor
 * helper (so a restarted daemon finds it again); `boot` then does whatever
 * the VMM needs before the guest runs (QEMU boots from its command line; an
 * API-driven VMM is configured and started over its API socket here).
 *
 * @module
 */

/** Where the pod's agent listens, as the VMM exposes it to the host. */
export type AgentAddress =
  | { readonly transport: "vsock"; readonly cid: number; readonly port: number }
  | { readonly transport: "unix"; readonly path: string }
  /**
   * Hybrid vsock (Cloud Hypervisor, Firecracker): the VMM's unix socket, where the host
   * writes `CONNECT <port>\n` and the VMM answers `OK <host port>\n` before the stream.
   */
  | { readonly transport: "hvsock"; readonly path: string; readonly port: number };

/** One pod's VM, whatever runs it. */
export interface VmDescription {
  /** The pod id. */
  readonly id: string;
  /** A short name for the VMM's process and logs. */
  readonly name: string;
  readonly kernel: string;
  readonly initrd: string;
  /** Kernel command line after the console settings. */
  readonly kernelParams: string;
  readonly memoryMiB: number;
  readonly vcpus: number;
  /** What CPU and memory hot-plug may grow the VM to, in how many DIMMs; unset: no hot-plug. */
  readonly maxVcpus?: number;
  readonly maxMemoryMiB?: number;
  readonly memorySlots?: number;
  /** The guest console goes to this file. */
  readonly consoleLog: string;
  /** A file the VMM may write its own events to (lifecycle, devices); the pod's. */
  readonly eventLog: string;
  /** The VMM's control socket (QMP, REST API), created by the VMM. */
  readonly controlSocket: string;
  /** A unix socket for the agent's serial or hybrid-vsock channel, created by the VMM. */
  readonly agentSocket: string;
  /** A unix socket for the guest's debug console (a second serial port); unset: none. */
  readonly debugSocket?: string;
  /** vhost-vsock context id; unset: no vsock device. */
  readonly vsockCid?: number;
  /** Taps in the pod's netns, the MACs the guest's NICs take, and their queues (multi-queue taps). */
  readonly nics: readonly {
    readonly tap: string;
    readonly mac: string;
    readonly queues?: number;
  }[];
  /** virtiofsd sockets and the tags the guest mounts them by. */
  readonly shares: readonly { readonly socket: string; readonly tag: string }[];
  /** How many disks can be attached to the running VM at once (hot-plug slots). */
  readonly diskSlots: number;
  /** The pod's own host directory, for files the VMM needs (Firecracker's empty drives). */
  readonly stateDir: string;
  /** How many NICs can be added to the running VM (hot-plug slots after the disks'). */
  readonly nicSlots: number;
}

/** A NIC added to a running VM, on a tap in the VMM's netns. */
export interface NicAttachment {
  readonly tap: string;
  readonly mac: string;
  /** Queue pairs (a multi-queue tap); 1: single queue. */
  readonly queues: number;
  /** Which NIC hot-plug slot (0 … nicSlots-1) it takes; also names the device. */
  readonly slot: number;
}

/** A host block device or image file attached to a running VM as a virtio-blk disk. */
export interface DiskAttachment {
  /** The VMM's device id, unique in the VM. */
  readonly id: string;
  /** Host path: a block device or a regular (raw image) file. */
  readonly path: string;
  readonly readOnly: boolean;
  /** The serial the guest finds it by (at most 20 bytes). */
  readonly serial: string;
  /** Which hot-plug slot (0 … diskSlots-1) it takes. */
  readonly slot: number;
}

/** What a VMM can do, for the parts of the sandboxer that choose a path. */
export interface HypervisorCapabilities {
  /** Directories shared with the guest over virtiofs. */
  readonly virtiofs: boolean;
  /** Disks attached to a running VM (hot-plugged, or re-pointed drives made at boot). */
  readonly diskHotplug: boolean;
  /** NICs added to a running VM. */
  readonly nicHotplug: boolean;
  /** vCPUs and memory added to a running VM (up to the description's maxima). */
  readonly resize: boolean;
  /** Named virtio-serial ports (the debug console; the agent where there is no vsock). */
  readonly serialPorts: boolean;
}

/**
 * VM templates, where the VMM can: a VM booted once to where its agent waits, saved, and each
 * pod's VM started from that state instead of booting. The template's RAM lives in a file
 * that clones map copy-on-write, so their untouched pages are one copy in the host.
 */
export interface VmTemplating {
  /**
   * The VMM's argv for a VM whose RAM is the file at `memoryFile`: the template itself
   * (`"template"`: its writes reach the file) or a clone (`"clone"`: copy-on-write, waiting
   * for its state instead of booting). `vm` has no NICs nor shares: they come after restore.
   */
  argv(vm: VmDescription, memoryFile: string, role: "template" | "clone"): string[];
  /** Pauses the template VM and writes its device state to `stateFile` (its RAM is the file's). */
  save(vm: VmDescription, stateFile: string, deadline: number): Promise<void>;
  /** Loads `stateFile` into a clone started with `argv(…, "clone")` and runs it. */
  restore(vm: VmDescription, stateFile: string, deadline: number): Promise<void>;
  /** What the saved state depends on besides the VM's argv and image (the VMM's build). */
  identity(): Promise<string>;
}

/** A VMM. */
export interface Hypervisor {
  /** e.g. "qemu". */
  readonly name: string;
  readonly capabilities: HypervisorCapabilities;
  /** VM templates; unset: every VM boots. */
  readonly templating?: VmTemplating;
  /** The VMM process's argv. */
  argv(vm: VmDescription): string[];
  /** Once the process runs: until the VM is running (or the deadline, `performance.now()`). */
  boot(vm: VmDescription, deadline: number): Promise<void>;
  /** Asks the VMM to end the VM in order; the monitor sees the process exit. */
  requestStop(vm: VmDescription): Promise<void>;
  /** Where the agent can be reached, the preferred first. */
  agentAddresses(vm: VmDescription, agentPort: number): AgentAddress[];
  /**
   * Attaches a disk to the running VM (only when `capabilities.diskHotplug`); resolves with
   * the serial the guest sees (the one asked for, where the VMM takes one).
   */
  attachDisk(vm: VmDescription, disk: DiskAttachment): Promise<string>;
  /** Detaches a disk once the guest has let it go (the guest unmounts first). */
  detachDisk(vm: VmDescription, disk: Pick<DiskAttachment, "id" | "slot">): Promise<void>;
  /**
   * Grows the running VM to at least `want` (vCPUs and memory added, never removed), as far as
   * its maxima allow; resolves with its size as the VMM has it (the guest onlines them).
   */
  resize(
    vm: VmDescription,
    want: { readonly vcpus: number; readonly memoryMiB: number },
  ): Promise<{ vcpus: number; memoryMiB: number }>;
  /** Adds a NIC to the running VM (only when `capabilities.nicHotplug`). */
  attachNic(vm: VmDescription, nic: NicAttachment): Promise<void>;
}
