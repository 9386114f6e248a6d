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
