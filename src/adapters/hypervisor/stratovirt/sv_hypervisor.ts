/**
 * StratoVirt (openEuler's VMM) as the vmm sandboxer's Hypervisor: the VM on
 * its command line (`sv_command.ts`), QMP for control (the client shared with
 * QEMU: the protocol is the same, its commands StratoVirt's own subset), the
 * agent on vhost-vsock (StratoVirt's serial ports carry no names the guest
 * could find the agent's by), disks and NICs hot-plugged into PCIe root ports.
 * No CPU or memory hot-plug (as Kuasar on StratoVirt).
 *
 * @module
 */
import type {
  AgentAddress,
  DiskAttachment,
  Hypervisor,
  HypervisorCapabilities,
  NicAttachment,
  VmDescription,
} from "../../../ports/hypervisor.ts";
import { FailedPreconditionError } from "../../../domain/errors.ts";
import { type AlreadyGone, qmpAnswers, qmpQuit, withQmp } from "../qmp.ts";
import { svArgv, svHotplugPort, type SvOptions } from "./sv_command.ts";

/**
 * StratoVirt's words for a device or drive that is not there: an unknown id falls through its
 * PCI lookup to the USB one ("Can not find parent device from pci bus"), a drive is "Drive <id>
 * not found" (machine/src/lib.rs, standard_common, block drive.rs).
 */
const STRATOVIRT_GONE: AlreadyGone = {
  device: /Can not find parent device|DeviceNotFound/,
  node: /Drive .* not found/,
};

export class StratoVirt implements Hypervisor {
  readonly name = "stratovirt";
  readonly capabilities: HypervisorCapabilities = {
    virtiofs: true,
    diskHotplug: true,
    nicHotplug: true,
    resize: false,
    serialPorts: false,
  };
  readonly #o: SvOptions;

  constructor(opts: SvOptions) {
    this.#o = opts;
  }

  argv(vm: VmDescription): string[] {
    if (vm.vsockCid === undefined) {
      throw new FailedPreconditionError(
        "StratoVirt reaches the guest agent over vhost-vsock, which this host lacks " +
          "(modprobe vhost_vsock; [hypervisor] use_vsock must not be false)",
      );
    }
    return svArgv(this.#o, vm);
  }

  /** StratoVirt boots from its command line: the VM runs once QMP answers. */
  async boot(vm: VmDescription, deadline: number): Promise<void> {
    await qmpAnswers(vm.controlSocket, deadline);
  }

  /** QMP `quit`: StratoVirt's orderly exit. */
  async requestStop(vm: VmDescription): Promise<void> {
    await qmpQuit(vm.controlSocket);
  }

  agentAddresses(vm: VmDescription, agentPort: number): AgentAddress[] {
    return [{ transport: "vsock", cid: vm.vsockCid!, port: agentPort }];
  }

  /** blockdev-add (raw over a file) + device_add of a virtio-blk-pci into a root port. */
  async attachDisk(vm: VmDescription, disk: DiskAttachment): Promise<string> {
    // Direct IO for a device; not for an image file, whose file system (tmpfs) may refuse it.
    const device = (await Deno.stat(disk.path)).isBlockDevice;
    await withQmp(vm.controlSocket, (qmp) =>
      qmp.plug({
        add: {
          execute: "blockdev-add",
          arguments: {
            "node-name": disk.id,
            driver: "raw",
            "read-only": disk.readOnly,
            cache: { direct: device },
            file: { driver: "file", filename: disk.path },
          },
        },
        undo: { execute: "blockdev-del", arguments: { "node-name": disk.id } },
      }, {
        id: disk.id,
        driver: "virtio-blk-pci",
        drive: disk.id,
        bus: svHotplugPort(disk.slot),
        addr: "0x0",
        serial: disk.serial,
      }));
    return disk.serial;
  }

  /** device_del, DEVICE_DELETED once the guest let it go, then blockdev-del. */
  async detachDisk(vm: VmDescription, { id }: Pick<DiskAttachment, "id">): Promise<void> {
    await withQmp(vm.controlSocket, (qmp) => qmp.removeDisk(id, STRATOVIRT_GONE));
  }

  resize(): Promise<{ vcpus: number; memoryMiB: number }> {
    return Promise.reject(
      new FailedPreconditionError(
        "StratoVirt pods do not grow: give the pod its limits at creation",
      ),
    );
  }

  /** netdev_add of the tap, then device_add of a virtio-net-pci into the slot's root port. */
  async attachNic(vm: VmDescription, nic: NicAttachment): Promise<void> {
    const netdev = `hnet${nic.slot}`;
    await withQmp(vm.controlSocket, (qmp) =>
      qmp.plug({
        add: {
          execute: "netdev_add",
          arguments: {
            id: netdev,
            ifname: nic.tap,
            // Queue pairs (StratoVirt doubles them itself), at most 16.
            ...(nic.queues > 1 ? { queues: Math.min(16, nic.queues) } : {}),
          },
        },
        undo: { execute: "netdev_del", arguments: { id: netdev } },
      }, {
        id: `hnic${nic.slot}`,
        driver: "virtio-net-pci",
        netdev,
        mac: nic.mac,
        bus: svHotplugPort(vm.diskSlots + nic.slot),
        addr: "0x0",
        // A string in StratoVirt's QMP schema (QEMU's takes a boolean).
        ...(nic.queues > 1 ? { mq: "on" } : {}),
      }));
  }
}
