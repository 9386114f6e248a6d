/**
 * How big a pod's VM is: the configured size, grown to what the pod asks for
 * (Kuasar sizes its VMs from the pod's CPU quota/period and memory limit).
 * A pod asking for 4 CPUs and 2 GiB must not get a 1-vCPU 512 MiB VM and be
 * OOM-killed; the guest's own kernel and agent need memory beyond the
 * containers' limit, hence the overhead.
 *
 * @module
 */
import type { PodResources } from "./pod_config.ts";
import { FailedPreconditionError } from "./errors.ts";

/** Guest memory beyond the pod's limit: the kernel, the agent (Deno) and page cache. */
export const GUEST_OVERHEAD_MIB = 256;
/** QEMU's q35 limit that the config schema also holds to. */
export const MAX_VCPUS = 256;

/** A VM's size. */
export interface VmSize {
  readonly vcpus: number;
  readonly memoryMiB: number;
}

/** The configured `base`, grown to the pod's CPU quota and memory limit. */
export function vmSize(base: VmSize, resources: PodResources | undefined): VmSize {
  let { vcpus, memoryMiB } = base;
  if (resources && resources.cpuQuota > 0 && resources.cpuPeriod > 0) {
    vcpus = Math.max(
      vcpus,
      Math.min(MAX_VCPUS, Math.ceil(resources.cpuQuota / resources.cpuPeriod)),
    );
  }
  if (resources && resources.memoryLimitInBytes > 0) {
    const limit = Math.ceil(resources.memoryLimitInBytes / (1024 * 1024));
    memoryMiB = Math.max(memoryMiB, limit + GUEST_OVERHEAD_MIB);
  }
  return { vcpus, memoryMiB };
}

/**
 * The size a VM of size `vm` must grow to for a container updated to `resources` (OCI
 * LinuxResources): its memory limit plus the guest's overhead, its CPU quota in whole vCPUs;
 * undefined when it fits already (or the VM's size was never recorded).
 */
export function grownVmSize(vm: Partial<VmSize>, resources: unknown): VmSize | undefined {
  if (typeof vm.vcpus !== "number" || typeof vm.memoryMiB !== "number") return undefined;
  const r = resources as {
    memory?: { limit?: unknown };
    cpu?: { quota?: unknown; period?: unknown };
  };
  const limit = Number(r?.memory?.limit ?? 0);
  const quota = Number(r?.cpu?.quota ?? 0), period = Number(r?.cpu?.period ?? 0);
  const memoryMiB = limit > 0
    ? Math.max(vm.memoryMiB, Math.ceil(limit / 1048576) + GUEST_OVERHEAD_MIB)
    : vm.memoryMiB;
  const vcpus = quota > 0 && period > 0
    ? Math.max(vm.vcpus, Math.min(MAX_VCPUS, Math.ceil(quota / period)))
    : vm.vcpus;
  return memoryMiB > vm.memoryMiB || vcpus > vm.vcpus ? { vcpus, memoryMiB } : undefined;
}

/**
 * Why a VM of size `vm` cannot grow to `want` when it can grow to `max` at most (its VMM's
 * hot-plug room, or its size when there is none): undefined when it can.
 */
export function vmGrowthRefusal(
  vm: VmSize,
  want: VmSize,
  max: VmSize,
): FailedPreconditionError | undefined {
  if (want.memoryMiB > max.memoryMiB) {
    return new FailedPreconditionError(
      `A memory limit of ${want.memoryMiB - GUEST_OVERHEAD_MIB} MiB does not fit the pod's VM ` +
        `(${vm.memoryMiB} MiB, ${GUEST_OVERHEAD_MIB} of them the guest's), which can grow to ` +
        `${max.memoryMiB} MiB at most; give the pod the limit at creation, which sizes its VM`,
    );
  }
  if (want.vcpus > max.vcpus) {
    return new FailedPreconditionError(
      `A CPU quota of ${want.vcpus} CPUs does not fit the pod's VM (${vm.vcpus} vCPUs), which ` +
        `can grow to ${max.vcpus} vCPUs at most; give the pod the quota at creation`,
    );
  }
  return undefined;
}
