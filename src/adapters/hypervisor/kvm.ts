/**
 * Whether a VMM can run guests on KVM here: /dev/kvm existing is not enough
 * (nested setups expose it without vmx/svm, and KVM guests then hang), so KVM
 * counts only when the device opens and the CPU offers virtualization. QEMU
 * falls back to TCG without it; Cloud Hypervisor, StratoVirt and Firecracker
 * cannot run at all.
 *
 * @module
 */
import { cpuHasVirtualization } from "../doctor/probes.ts";

/** Whether KVM can really be used here (device usable and CPU virtualization present). */
export function kvmUsable(cpuinfo?: string): { usable: boolean; why: string } {
  try {
    const f = Deno.openSync("/dev/kvm", { read: true, write: true });
    f.close();
  } catch (e) {
    return { usable: false, why: `/dev/kvm cannot be opened: ${(e as Error).message}` };
  }
  const info = cpuinfo ?? Deno.readTextFileSync("/proc/cpuinfo");
  if (!cpuHasVirtualization(info)) {
    return { usable: false, why: "the CPU shows no vmx/svm flag (KVM guests would hang)" };
  }
  return { usable: true, why: "/dev/kvm opens and the CPU has vmx/svm" };
}
