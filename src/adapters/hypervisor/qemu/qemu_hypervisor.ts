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
  VmTemplating,
} from "../../../ports/hypervisor.ts";
import { hotplugPort, qemuArgv, type QemuVmSpec } from "./qemu_command.ts";
import { qemuIdentity, restoreQemuState, saveQemuState } from "./qemu_template.ts";
import { FailedPreconditionError } from "../../../domain/errors.ts";
import { qmpAnswers, QmpClient, qmpQuit, withQmp } from "../qmp.ts";

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
    resize: true,
    serialPorts: true,
  };
  readonly #o: QemuOptions;
  readonly templating: VmTemplating = {
    argv: (vm, memoryFile, role) =>
      qemuArgv({
        ...this.#spec(vm),
        memoryFile: { path: memoryFile, shared: role === "template" },
        incoming: role === "clone",
      }),
    save: saveQemuState,
    restore: restoreQemuState,
    identity: () => qemuIdentity(this.#o.binary),
  };

  constructor(opts: QemuOptions) {
    this.#o = opts;
  }

  get accel(): "kvm" | "tcg" {
    return this.#o.accel;
  }

  argv(vm: VmDescription): string[] {
    return qemuArgv(this.#spec(vm));
  }

  #spec(vm: VmDescription): QemuVmSpec {
    return {
      name: vm.name,
      binary: this.#o.binary,
      kernel: vm.kernel,
      initrd: vm.initrd,
      kernelParams: vm.kernelParams,
      memoryMiB: vm.memoryMiB,
      vcpus: vm.vcpus,
      maxVcpus: vm.maxVcpus,
      maxMemoryMiB: vm.maxMemoryMiB,
      memorySlots: vm.memorySlots,
      accel: this.#o.accel,
      qmpSocket: vm.controlSocket,
      consoleLog: vm.consoleLog,
      agentSocket: vm.agentSocket,
      debugSocket: vm.debugSocket,
      vsockCid: vm.vsockCid,
      nics: vm.nics,
      virtiofs: vm.shares,
      hotplugPorts: vm.diskSlots + vm.nicSlots,
    };
  }

  /** QEMU boots from its command line: the VM runs once QMP answers. */
  async boot(vm: VmDescription, deadline: number): Promise<void> {
    await qmpAnswers(vm.controlSocket, deadline);
  }

  /** QMP `quit`: QEMU's own orderly exit. */
  async requestStop(vm: VmDescription): Promise<void> {
    await qmpQuit(vm.controlSocket);
  }

  /** blockdev-add + device_add of a virtio-blk-pci with the serial, into the slot's root port. */
  async attachDisk(vm: VmDescription, disk: DiskAttachment): Promise<string> {
    const device = (await Deno.stat(disk.path)).isBlockDevice;
    await withQmp(vm.controlSocket, (qmp) =>
      qmp.plug({
        add: {
          execute: "blockdev-add",
          arguments: {
            "node-name": disk.id,
            driver: "raw",
            "read-only": disk.readOnly,
            file: { driver: device ? "host_device" : "file", filename: disk.path },
          },
        },
        undo: { execute: "blockdev-del", arguments: { "node-name": disk.id } },
      }, {
        driver: "virtio-blk-pci",
        id: disk.id,
        drive: disk.id,
        bus: hotplugPort(disk.slot),
        serial: disk.serial,
      }));
    return disk.serial;
  }

  /** device_del, then DEVICE_DELETED once the guest has released it, then blockdev-del. */
  async detachDisk(vm: VmDescription, { id }: Pick<DiskAttachment, "id">): Promise<void> {
    await withQmp(vm.controlSocket, (qmp) => qmp.removeDisk(id));
  }

  /**
   * CPUs: `device_add` of the hot-pluggable CPUs QEMU lists as not plugged, in order. Memory:
   * one pc-dimm (backed by a shared memfd, as vhost-user-fs needs) for what is missing,
   * in 128 MiB blocks (the guest's memory block size). What is there is read back from QEMU
   * (query-memory-size-summary), so a restarted daemon does not plug twice; beyond
   * `maxcpus`/`maxmem` QEMU refuses, and that error is the answer.
   */
  async resize(
    vm: VmDescription,
    want: { readonly vcpus: number; readonly memoryMiB: number },
  ): Promise<{ vcpus: number; memoryMiB: number }> {
    const qmp = await QmpClient.connect(vm.controlSocket, 10_000);
    try {
      type HotCpu = { type: string; props: Record<string, number>; "qom-path"?: string };
      const cpus = await qmp.execute("query-hotpluggable-cpus") as HotCpu[];
      let vcpus = cpus.filter((c) => c["qom-path"]).length;
      const order = (c: HotCpu) =>
        ((c.props["socket-id"] ?? 0) * 1024 + (c.props["core-id"] ?? 0)) * 64 +
        (c.props["thread-id"] ?? 0);
      const free = cpus.filter((c) => !c["qom-path"]).sort((a, b) => order(a) - order(b));
      while (vcpus < want.vcpus && free.length) {
        const c = free.shift()!;
        const id = `hcpu-${Object.values(c.props).join("-")}`;
        await qmp.execute("device_add", { driver: c.type, id, ...c.props });
        vcpus++;
      }
      const mem = await qmp.execute("query-memory-size-summary") as {
        "base-memory": number;
        "plugged-memory"?: number;
      };
      let memoryMiB = Math.floor((mem["base-memory"] + (mem["plugged-memory"] ?? 0)) / 1048576);
      const add = Math.ceil((want.memoryMiB - memoryMiB) / 128) * 128;
      if (add > 0) {
        const n = (await qmp.execute("query-memory-devices") as unknown[]).length;
        if (n >= (vm.memorySlots ?? 0)) {
          throw new FailedPreconditionError(
            `The VM has all its ${vm.memorySlots ?? 0} memory slots in use ([hypervisor] ` +
              `mem_slots): it stays at ${memoryMiB} MiB`,
          );
        }
        await qmp.execute("object-add", {
          "qom-type": "memory-backend-memfd",
          id: `hmem${n}`,
          size: add * 1048576,
          share: true,
        });
        try {
          await qmp.execute("device_add", {
            driver: "pc-dimm",
            id: `dimm${n}`,
            memdev: `hmem${n}`,
          });
        } catch (e) {
          await qmp.execute("object-del", { id: `hmem${n}` }).catch(() => {});
          // Each growth takes a DIMM slot (`mem_slots`; Kuasar's default is 1): the room is
          // the slots' as much as maxmem's, and the Update is refused with the sizes.
          if (/no free slots/.test(String(e))) {
            throw new FailedPreconditionError(
              `A memory limit needing ${want.memoryMiB} MiB does not fit the pod's VM ` +
                `(${memoryMiB} MiB): it has used all its ${n} memory hot-plug slots ` +
                "([hypervisor] mem_slots); give the pod the limit at creation, which sizes its VM",
            );
          }
          throw e;
        }
        memoryMiB += add;
      }
      return { vcpus, memoryMiB };
    } finally {
      qmp.close();
    }
  }

  /** netdev_add of the tap, then device_add of a virtio-net-pci into the slot's root port. */
  async attachNic(vm: VmDescription, nic: NicAttachment): Promise<void> {
    const netdev = `hnet${nic.slot}`;
    await withQmp(vm.controlSocket, (qmp) =>
      qmp.plug({
        add: {
          execute: "netdev_add",
          arguments: {
            type: "tap",
            id: netdev,
            ifname: nic.tap,
            script: "no",
            downscript: "no",
            ...(nic.queues > 1 ? { queues: nic.queues } : {}),
          },
        },
        undo: { execute: "netdev_del", arguments: { id: netdev } },
      }, {
        driver: "virtio-net-pci",
        id: `hnic${nic.slot}`,
        netdev,
        mac: nic.mac,
        bus: hotplugPort(vm.diskSlots + nic.slot),
        // QEMU's default vectors: a hot-plugged NIC given a vector per queue pair (as at boot)
        // locked both vCPUs of a TCG guest in the kernel; shared vectors still give 2 queues.
        ...(nic.queues > 1 ? { mq: true } : {}),
      }));
  }

  agentAddresses(vm: VmDescription, agentPort: number): AgentAddress[] {
    const serial: AgentAddress = { transport: "unix", path: vm.agentSocket };
    return vm.vsockCid !== undefined
      ? [{ transport: "vsock", cid: vm.vsockCid, port: agentPort }, serial]
      : [serial];
  }
}
