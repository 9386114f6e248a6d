/**
 * The StratoVirt command line of a pod's VM (pure), per its config
 * guidebook (docs/config_guidebook.md of StratoVirt) and Kuasar's use of it:
 * the standard machine (q35 with `mem-share=on`, which vhost-user-fs needs),
 * UEFI firmware on pflash where the config names one, every PCI device at an
 * explicit slot of `pcie.0` (StratoVirt assigns none itself), and PCIe root
 * ports left free for hot-plugged disks and NICs.
 *
 * @module
 */
import type { VmDescription } from "../../../ports/hypervisor.ts";
import { FailedPreconditionError } from "../../../domain/errors.ts";

/** How StratoVirt runs here: Kuasar's `[hypervisor]` keys for it. */
export interface SvOptions {
  readonly binary: string;
  /** `machine_type`, e.g. "q35,mem-share=on". */
  readonly machine: string;
  /** `firmware`: UEFI code on pflash unit 0 (x86 standard VMs boot through it); "": none. */
  readonly firmware: string;
  /** `enable_mem_prealloc`. */
  readonly memPrealloc: boolean;
  /** `debug`: StratoVirt's log (to the pod's monitor log) at debug level. */
  readonly debug: boolean;
}

/** The last slot of `pcie.0` a device can take. */
const MAX_SLOT = 0x1e;

/** The id of hot-plug root port `i` (the `bus` a hot-plugged device names). */
export function svHotplugPort(i: number): string {
  return `pcie.${i + 1}`;
}

/** argv of `stratovirt` for `vm` (which must have a vsock CID: the agent is reached there). */
export function svArgv(o: SvOptions, vm: VmDescription): string[] {
  let slot = 0;
  const addr = () => `0x${(++slot).toString(16)}`;
  const a = [
    o.binary,
    "-name",
    vm.name,
    "-machine",
    o.machine,
    "-smp",
    vm.maxVcpus && vm.maxVcpus > vm.vcpus
      ? `cpus=${vm.vcpus},maxcpus=${vm.maxVcpus}`
      : `cpus=${vm.vcpus}`,
    "-m",
    `${vm.memoryMiB}M`,
    "-kernel",
    vm.kernel,
    "-initrd",
    vm.initrd,
    "-append",
    ["console=ttyS0", "panic=-1", "quiet", "pcie_ports=native", vm.kernelParams]
      .filter(Boolean).join(" "),
    "-qmp",
    `unix:${vm.controlSocket},server,nowait`,
    "-serial",
    `file,path=${vm.consoleLog}`,
    // Hot-unplug without the 5 s attention-button wait (Kuasar sets it likewise).
    "-global",
    "pcie-root-port.fast-unplug=1",
    // Kuasar runs it so: its seccomp filter refuses what vhost-user and taps need here.
    "-disable-seccomp",
  ];
  if (o.firmware) a.push("-drive", `file=${o.firmware},if=pflash,unit=0,readonly=true`);
  if (o.memPrealloc) a.push("-mem-prealloc");
  a.push(
    "-object",
    "rng-random,id=rng0,filename=/dev/urandom",
    "-device",
    `virtio-rng-pci,id=rng,rng=rng0,bus=pcie.0,addr=${addr()}`,
  );
  if (vm.vsockCid !== undefined) {
    a.push(
      "-device",
      `vhost-vsock-pci,id=vsock0,guest-cid=${vm.vsockCid},bus=pcie.0,addr=${addr()}`,
    );
  }
  vm.shares.forEach((fs, i) => {
    a.push(
      "-chardev",
      `socket,id=fs${i},path=${fs.socket}`,
      "-device",
      `vhost-user-fs-pci,id=fsdev${i},chardev=fs${i},tag=${fs.tag},bus=pcie.0,addr=${addr()}`,
    );
  });
  vm.nics.forEach((nic, i) => {
    const q = nic.queues ?? 1;
    a.push(
      "-netdev",
      // Queue pairs (StratoVirt doubles them into queues itself), at most 16.
      `tap,id=net${i},ifname=${nic.tap}${q > 1 ? `,queues=${Math.min(16, q)}` : ""}`,
      "-device",
      `virtio-net-pci,id=nic${i},netdev=net${i},mac=${nic.mac},bus=pcie.0,addr=${addr()}${
        q > 1 ? ",mq=on" : ""
      }`,
    );
  });
  for (let i = 0; i < vm.diskSlots + vm.nicSlots; i++) {
    const port = addr();
    a.push("-device", `pcie-root-port,id=${svHotplugPort(i)},port=${port},bus=pcie.0,addr=${port}`);
  }
  // Slot 0 is the host bridge, 0x1f the LPC bridge, nothing beyond: 30 devices at most.
  if (slot > MAX_SLOT) {
    throw new FailedPreconditionError(
      `The VM needs ${slot} PCI slots on StratoVirt's root bus, which has ${MAX_SLOT}: ` +
        "lower [hypervisor] hotplug_disk_slots",
    );
  }
  if (o.debug) a.push("-D");
  return a;
}
