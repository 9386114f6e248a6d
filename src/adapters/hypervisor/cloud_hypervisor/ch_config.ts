/**
 * What Cloud Hypervisor is given for a pod (pure): its argv (only the API
 * socket: the VM itself is described over the API) and the `vm.create` body,
 * a `VmConfig` of its OpenAPI document (tests/fixtures/cloud-hypervisor/).
 *
 * @module
 */
import type { VmDescription } from "../../../ports/hypervisor.ts";

/** How Cloud Hypervisor runs here: Kuasar's `[hypervisor]` keys for it. */
export interface ChOptions {
  readonly binary: string;
  /** `hugepages`: guest memory from huge pages. */
  readonly hugepages: boolean;
  /** `entropy_source`: the virtio-rng device's source; empty: the VMM's default (/dev/urandom). */
  readonly entropySource: string;
  /** `debug`: the VMM logs verbosely (-vv) into the pod's monitor log. */
  readonly debug: boolean;
}

/**
 * Cloud Hypervisor gives every VM the same guest CID: each VM's vsock is its own unix socket,
 * so CIDs need not differ between VMs (as Kuasar).
 */
export const CH_GUEST_CID = 3;

const MiB = 1024 * 1024;
/** Memory is hot-plugged in blocks of this size (the guest's memory block size). */
const HOTPLUG_BLOCK_MIB = 128;

/**
 * The VMM's argv: it waits on its API socket for `vm.create`, and reports its events (boot,
 * devices, a guest reboot it carried out) to the pod's event log, for operators.
 */
export function chArgv(o: ChOptions, vm: VmDescription): string[] {
  return [
    o.binary,
    "--api-socket",
    `path=${vm.controlSocket}`,
    "--event-monitor",
    `path=${vm.eventLog}`,
    ...(o.debug ? ["-vv"] : []),
  ];
}

/** The hot-plug room in MiB over the boot memory, rounded up to whole blocks; 0: none. */
export function hotplugMiB(vm: VmDescription): number {
  const room = (vm.maxMemoryMiB ?? vm.memoryMiB) - vm.memoryMiB;
  return room > 0 ? Math.ceil(room / HOTPLUG_BLOCK_MIB) * HOTPLUG_BLOCK_MIB : 0;
}

/** The `vm.create` body (a `VmConfig`). */
export function chVmConfig(o: ChOptions, vm: VmDescription): Record<string, unknown> {
  const hotplug = hotplugMiB(vm);
  return {
    cpus: { boot_vcpus: vm.vcpus, max_vcpus: Math.max(vm.vcpus, vm.maxVcpus ?? vm.vcpus) },
    memory: {
      size: vm.memoryMiB * MiB,
      // vhost-user devices (virtiofsd) map the guest's memory: it must be shared.
      shared: true,
      hugepages: o.hugepages,
      ...(hotplug ? { hotplug_method: "Acpi", hotplug_size: hotplug * MiB } : {}),
    },
    payload: {
      kernel: vm.kernel,
      initramfs: vm.initrd,
      cmdline: ["console=ttyS0", "panic=-1", "quiet", vm.kernelParams].filter(Boolean).join(" "),
    },
    // The legacy serial port is the guest's console (ttyS0, as on QEMU), into the pod's log.
    serial: { mode: "File", file: vm.consoleLog },
    console: { mode: "Off" },
    ...(o.entropySource ? { rng: { src: o.entropySource } } : {}),
    vsock: { cid: CH_GUEST_CID, socket: vm.agentSocket, id: "vsock0" },
    ...(vm.shares.length
      ? {
        fs: vm.shares.map((s, i) => ({
          tag: s.tag,
          socket: s.socket,
          num_queues: 1,
          queue_size: 1024,
          id: `fs${i}`,
        })),
      }
      : {}),
    ...(vm.nics.length
      ? {
        net: vm.nics.map((n, i) => ({
          tap: n.tap,
          mac: n.mac,
          // Cloud Hypervisor counts queues, not pairs: one RX and one TX per pair.
          num_queues: 2 * (n.queues ?? 1),
          id: `net${i}`,
        })),
      }
      : {}),
  };
}
