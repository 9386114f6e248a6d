/**
 * The QEMU command line of a microVM pod, as an argv array (pure).
 *
 * @module
 */
import { AGENT_PORT_NAME, DEBUG_PORT_NAME } from "../../../ports/agent_protocol.ts";

/** What a VM is made of. */
export interface QemuVmSpec {
  readonly name: string;
  readonly binary: string;
  readonly kernel: string;
  readonly initrd: string;
  /** Extra kernel command line (after the console settings). */
  readonly kernelParams?: string;
  readonly memoryMiB: number;
  readonly vcpus: number;
  /** Room for CPU and memory hot-plug (`maxcpus`; `slots` and `maxmem`); unset: none. */
  readonly maxVcpus?: number;
  readonly maxMemoryMiB?: number;
  readonly memorySlots?: number;
  readonly accel: "kvm" | "tcg";
  /** QMP control socket (unix, QEMU listens). */
  readonly qmpSocket: string;
  /** The guest console (serial) goes to this file. */
  readonly consoleLog: string;
  /** The agent's virtio-serial port, a unix socket QEMU listens on; unset: none. */
  readonly agentSocket?: string;
  /** The debug console's virtio-serial port, a unix socket QEMU listens on; unset: none. */
  readonly debugSocket?: string;
  /** vhost-vsock context id of the guest; unset: no vsock device. */
  readonly vsockCid?: number;
  /** Network devices: a tap (in QEMU's netns) and the MAC the guest's NIC takes. */
  readonly nics?: readonly { tap: string; mac: string; queues?: number }[];
  /** Shared directories: virtiofsd sockets and their tags. */
  readonly virtiofs?: readonly { socket: string; tag: string }[];
  /** PCIe root ports left free for hot-plugged devices (`hotplugPort(i)`); q35's root bus takes none. */
  readonly hotplugPorts?: number;
  /**
   * Guest RAM in a file (a VM template's): `shared` writes go to the file (the template being
   * made), otherwise the file is mapped copy-on-write (a clone: the file stays as it is).
   */
  readonly memoryFile?: { readonly path: string; readonly shared: boolean };
  /** Waits for its state over migration (`migrate-incoming`) instead of booting. */
  readonly incoming?: boolean;
}

/** The id of hot-plug root port `i`, the `bus` a hot-plugged device names. */
export function hotplugPort(i: number): string {
  return `hp${i}`;
}

/** argv of `qemu-system-x86_64` for `vm`. */
export function qemuArgv(vm: QemuVmSpec): string[] {
  const a = [
    vm.binary,
    "-name",
    vm.name,
    "-machine",
    `q35,accel=${vm.accel}${vm.memoryFile ? ",memory-backend=mem" : ""}`,
    "-cpu",
    vm.accel === "kvm" ? "host" : "max",
    "-m",
    vm.memorySlots && vm.maxMemoryMiB && vm.maxMemoryMiB > vm.memoryMiB
      ? `${vm.memoryMiB}M,slots=${vm.memorySlots},maxmem=${vm.maxMemoryMiB}M`
      : `${vm.memoryMiB}M`,
    "-smp",
    vm.maxVcpus && vm.maxVcpus > vm.vcpus ? `${vm.vcpus},maxcpus=${vm.maxVcpus}` : String(vm.vcpus),
    "-nodefaults",
    "-nographic",
    // A guest poweroff or reboot ends QEMU: the pod is over.
    "-no-reboot",
    "-kernel",
    vm.kernel,
    "-initrd",
    vm.initrd,
    "-append",
    ["console=ttyS0", "panic=-1", "quiet", vm.kernelParams ?? ""].filter(Boolean).join(" "),
    "-serial",
    `file:${vm.consoleLog}`,
    "-qmp",
    `unix:${vm.qmpSocket},server=on,wait=off`,
  ];
  if (vm.agentSocket) {
    a.push(
      "-device",
      "virtio-serial-pci,id=vser0",
      "-chardev",
      `socket,id=agent,path=${vm.agentSocket},server=on,wait=off`,
      "-device",
      `virtserialport,bus=vser0.0,chardev=agent,name=${AGENT_PORT_NAME}`,
    );
    if (vm.debugSocket) {
      a.push(
        "-chardev",
        `socket,id=debug,path=${vm.debugSocket},server=on,wait=off`,
        "-device",
        `virtserialport,bus=vser0.0,chardev=debug,name=${DEBUG_PORT_NAME}`,
      );
    }
  }
  vm.nics?.forEach((nic, i) => {
    const q = nic.queues ?? 1;
    a.push(
      "-netdev",
      `tap,id=net${i},ifname=${nic.tap},script=no,downscript=no${q > 1 ? `,queues=${q}` : ""}`,
      "-device",
      // A vector per queue pair, one for config and one for control.
      `virtio-net-pci,netdev=net${i},mac=${nic.mac}${q > 1 ? `,mq=on,vectors=${2 * q + 2}` : ""}`,
    );
  });
  if (vm.memoryFile) {
    if (vm.virtiofs?.length) throw new Error("a VM template's memory cannot be virtiofs's");
    // The template's file is filled whole before the guest runs: a clone's fault on a hole of a
    // tmpfs file, copy-on-write or not, would allocate the page in the file (kept after the
    // clone is gone, and a SIGBUS for the clone when the tmpfs is full).
    a.push(
      "-object",
      `memory-backend-file,id=mem,size=${vm.memoryMiB}M,mem-path=${vm.memoryFile.path},${
        vm.memoryFile.shared ? "share=on,prealloc=on" : "share=off"
      }`,
    );
  }
  if (vm.incoming) a.push("-incoming", "defer");
  if (vm.vsockCid !== undefined) {
    a.push("-device", `vhost-vsock-pci,id=vsock0,guest-cid=${vm.vsockCid}`);
  }
  if (vm.virtiofs?.length) {
    // virtiofs needs the guest's memory shared with virtiofsd.
    a.push(
      "-object",
      `memory-backend-memfd,id=mem,size=${vm.memoryMiB}M,share=on`,
      "-numa",
      "node,memdev=mem",
    );
    vm.virtiofs.forEach((fs, i) => {
      a.push(
        "-chardev",
        `socket,id=fs${i},path=${fs.socket}`,
        "-device",
        `vhost-user-fs-pci,chardev=fs${i},tag=${fs.tag}`,
      );
    });
  }
  for (let i = 0; i < (vm.hotplugPorts ?? 0); i++) {
    a.push("-device", `pcie-root-port,id=${hotplugPort(i)},bus=pcie.0,chassis=${i + 1}`);
  }
  return a;
}
