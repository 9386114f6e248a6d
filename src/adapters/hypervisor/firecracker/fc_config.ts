/**
 * What Firecracker is given for a pod (pure): its argv (the API socket and an id) and the
 * pre-boot API calls that describe the VM, in the order Firecracker takes them, before
 * `InstanceStart` (its Swagger document: tests/fixtures/firecracker/).
 *
 * @module
 */
import { join } from "node:path";
import type { VmDescription } from "../../../ports/hypervisor.ts";
import { InvalidArgumentError } from "../../../domain/errors.ts";

/** How Firecracker runs here. */
export interface FcOptions {
  readonly binary: string;
}

/** Firecracker's vsock is the VM's own unix socket: every VM can have guest CID 3. */
export const FC_GUEST_CID = 3;

/** The drive id of disk slot `slot`. */
export function fcSlotDrive(slot: number): string {
  return `kslot${slot}`;
}

/** The empty file slot `slot` points at while no disk is attached there. */
export function fcPlaceholder(vm: VmDescription, slot: number): string {
  return join(vm.stateDir, "fc-slots", `${slot}.img`);
}

/**
 * Interrupt lines Firecracker has for virtio-mmio devices on x86_64 (5 to 23): one per drive,
 * NIC and the vsock device.
 */
export const FC_DEVICE_IRQS = 19;

/** A placeholder's size: one page of zeros (a guest reading it finds no file system). */
export const FC_PLACEHOLDER_BYTES = 4096;

/**
 * The serial Firecracker gives a drive's guest device (VIRTIO_BLK_T_GET_ID): the backing
 * file's st_dev, st_rdev and st_ino in decimal, run together, cut at 20 bytes. It changes
 * when the drive is re-pointed, so the guest finds each attached file by it.
 */
export function fcImageId(st: { dev: number; rdev: number | null; ino: number | null }): string {
  return `${st.dev}${st.rdev ?? 0}${st.ino ?? 0}`.slice(0, 20);
}

/** One API call. */
export interface FcCall {
  readonly method: "PUT" | "PATCH";
  readonly path: string;
  readonly body: Record<string, unknown>;
}

/** The VMM's argv: it serves its API and waits for the VM's description and InstanceStart. */
export function fcArgv(o: FcOptions, vm: VmDescription): string[] {
  return [o.binary, "--api-sock", vm.controlSocket, "--id", vm.name];
}

/**
 * The VM as pre-boot calls: machine, kernel and initrd (its devices are virtio-mmio, which
 * Firecracker describes in ACPI tables since 1.8), the agent's vsock, the disk slots, the
 * pod's NICs. The
 * serial console is Firecracker's stdout, in the pod's monitor log; a guest reboot ends the
 * process (Firecracker does not reboot guests), so `panic=-1` ends the pod.
 */
export function fcBootCalls(vm: VmDescription): FcCall[] {
  if (vm.vcpus > 32) {
    throw new InvalidArgumentError(
      `Firecracker VMs have at most 32 vCPUs; this pod asks ${vm.vcpus}`,
    );
  }
  if (vm.diskSlots + vm.nics.length + 1 > FC_DEVICE_IRQS) {
    throw new InvalidArgumentError(
      `Firecracker VMs have ${FC_DEVICE_IRQS} devices at most: ${vm.diskSlots} disk slots ` +
        `(hotplug_disk_slots), ${vm.nics.length} NICs and the vsock are too many`,
    );
  }
  return [
    {
      method: "PUT",
      path: "/machine-config",
      body: { vcpu_count: vm.vcpus, mem_size_mib: vm.memoryMiB, smt: false },
    },
    {
      method: "PUT",
      path: "/boot-source",
      body: {
        kernel_image_path: vm.kernel,
        initrd_path: vm.initrd,
        // Given boot_args replace Firecracker's defaults: its i8042 ones are kept (no probing
        // of a keyboard controller's ports it does not have), its 8250.nr_uarts=0 is not (the
        // console is the serial port).
        boot_args: [
          "console=ttyS0",
          "reboot=k",
          "panic=-1",
          "i8042.noaux",
          "i8042.nomux",
          "i8042.dumbkbd",
          "quiet",
          vm.kernelParams,
        ].filter(Boolean).join(" "),
      },
    },
    { method: "PUT", path: "/vsock", body: { guest_cid: FC_GUEST_CID, uds_path: vm.agentSocket } },
    // Disks: Firecracker adds none to a running VM, but re-points a drive at another file
    // (PATCH). So the VM boots with its slots as drives on empty placeholders.
    ...Array.from({ length: vm.diskSlots }, (_, i): FcCall => ({
      method: "PUT",
      path: `/drives/${fcSlotDrive(i)}`,
      body: {
        drive_id: fcSlotDrive(i),
        path_on_host: fcPlaceholder(vm, i),
        is_root_device: false,
        is_read_only: false,
      },
    })),
    ...vm.nics.map((n, i): FcCall => ({
      method: "PUT",
      path: `/network-interfaces/eth${i}`,
      body: { iface_id: `eth${i}`, host_dev_name: n.tap, guest_mac: n.mac },
    })),
  ];
}
