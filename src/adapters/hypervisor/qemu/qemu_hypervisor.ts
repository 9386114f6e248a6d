/**
 * QEMU as the vmm sandboxer's Hypervisor: q35 with the VM on the command line
 * (`qemu_command.ts`), QMP for control (`qmp.ts`), the agent over vsock where
 * the host has vhost-vsock and over a virtio-serial chardev always.
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
import { hotplugPort, qemuArgv } from "./qemu_command.ts";
import { QmpClient } from "./qmp.ts";

/** How QEMU runs here. */
export interface QemuOptions {
  readonly binary: string;
  readonly accel: "kvm" | "tcg";
}

export class QemuHypervisor implements Hypervisor {
  readonly name = "qemu";
  readonly capabilities: HypervisorCapabilities = {
    virtiofs: true,
    diskHotplug: true,
    nicHotplug: true,
  };
  readonly #o: QemuOptions;

  constructor(opts: QemuOptions) {
    this.#o = opts;
  }

  get accel(): "kvm" | "tcg" {
    return this.#o.accel;
  }

  argv(vm: VmDescription): string[] {
    return qemuArgv({
      name: vm.name,
      binary: this.#o.binary,
      kernel: vm.kernel,
      initrd: vm.initrd,
      kernelParams: vm.kernelParams,
      memoryMiB: vm.memoryMiB,
      vcpus: vm.vcpus,
      accel: this.#o.accel,
      qmpSocket: vm.controlSocket,
      consoleLog: vm.consoleLog,
      agentSocket: vm.agentSocket,
      debugSocket: vm.debugSocket,
      vsockCid: vm.vsockCid,
      nics: vm.nics,
      virtiofs: vm.shares,
      hotplugPorts: vm.diskSlots + vm.nicSlots,
    });
  }

  /** QEMU boots from its command line: the VM runs once QMP answers. */
  async boot(vm: VmDescription, deadline: number): Promise<void> {
    const qmp = await QmpClient.connect(
      vm.controlSocket,
      Math.max(1000, deadline - performance.now()),
    );
    qmp.close();
  }

  /** QMP `quit`: QEMU's own orderly exit. */
  async requestStop(vm: VmDescription): Promise<void> {
    const qmp = await QmpClient.connect(vm.controlSocket, 2000).catch(() => undefined);
    await qmp?.execute("quit").catch(() => {});
    qmp?.close();
  }

  /** blockdev-add + device_add of a virtio-blk-pci with the serial, into the slot's root port. */
  async attachDisk(vm: VmDescription, disk: DiskAttachment): Promise<void> {
    const qmp = await QmpClient.connect(vm.controlSocket, 10_000);
    try {
      const device = (await Deno.stat(disk.path)).isBlockDevice;
      await qmp.addDisk(disk.id, disk.path, hotplugPort(disk.slot), {
        readOnly: disk.readOnly,
        serial: disk.serial,
        driver: device ? "host_device" : "file",
      });
    } finally {
      qmp.close();
    }
  }

  /** device_del, then DEVICE_DELETED once the guest has released it, then blockdev-del. */
  async detachDisk(vm: VmDescription, id: string): Promise<void> {
    const qmp = await QmpClient.connect(vm.controlSocket, 10_000);
    try {
      await qmp.removeDisk(id);
    } finally {
      qmp.close();
    }
  }

  /** netdev_add of the tap, then device_add of a virtio-net-pci into the slot's root port. */
  async attachNic(vm: VmDescription, nic: NicAttachment): Promise<void> {
    const qmp = await QmpClient.connect(vm.controlSocket, 10_000);
    const netdev = `hnet${nic.slot}`;
    try {
      await qmp.execute("netdev_add", {
        type: "tap",
        id: netdev,
        ifname: nic.tap,
        script: "no",
        downscript: "no",
        ...(nic.queues > 1 ? { queues: nic.queues } : {}),
      });
      try {
        await qmp.execute("device_add", {
          driver: "virtio-net-pci",
          id: `hnic${nic.slot}`,
          netdev,
          mac: nic.mac,
          bus: hotplugPort(vm.diskSlots + nic.slot),
          // QEMU's default vectors: a hot-plugged NIC given a vector per queue pair (as at boot)
          // locked both vCPUs of a TCG guest in the kernel; shared vectors still give 2 queues.
          ...(nic.queues > 1 ? { mq: true } : {}),
        });
      } catch (e) {
        await qmp.execute("netdev_del", { id: netdev }).catch(() => {});
        throw e;
      }
    } finally {
      qmp.close();
    }
  }

  agentAddresses(vm: VmDescription, agentPort: number): AgentAddress[] {
    const serial: AgentAddress = { transport: "unix", path: vm.agentSocket };
    return vm.vsockCid !== undefined
      ? [{ transport: "vsock", cid: vm.vsockCid, port: agentPort }, serial]
      : [serial];
  }
}
