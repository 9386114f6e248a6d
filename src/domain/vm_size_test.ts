import assert from "node:assert/strict";
import { GUEST_OVERHEAD_MIB, MAX_VCPUS, vmSize } from "./vm_size.ts";
import type { PodResources } from "./pod_config.ts";

const base = { vcpus: 1, memoryMiB: 512 };
const res = (over: Partial<PodResources>): PodResources => ({
  cpuPeriod: 0,
  cpuQuota: 0,
  cpuShares: 0,
  memoryLimitInBytes: 0,
  cpusetCpus: "",
  cpusetMems: "",
  ...over,
});

Deno.test("vm size: no limits keep the configured size", () => {
  assert.deepEqual(vmSize(base, undefined), base);
  assert.deepEqual(vmSize(base, res({ cpuShares: 1024 })), base);
});

Deno.test("vm size: a CPU quota rounds up to whole vCPUs, never below the base", () => {
  assert.equal(vmSize(base, res({ cpuQuota: 400_000, cpuPeriod: 100_000 })).vcpus, 4);
  assert.equal(vmSize(base, res({ cpuQuota: 150_000, cpuPeriod: 100_000 })).vcpus, 2);
  assert.equal(
    vmSize({ vcpus: 4, memoryMiB: 512 }, res({ cpuQuota: 50_000, cpuPeriod: 100_000 })).vcpus,
    4,
  );
  assert.equal(vmSize(base, res({ cpuQuota: 1e9, cpuPeriod: 1000 })).vcpus, MAX_VCPUS);
  assert.equal(vmSize(base, res({ cpuQuota: -1, cpuPeriod: 100_000 })).vcpus, 1, "unlimited");
});

Deno.test("vm size: a memory limit plus the guest's overhead, never below the base", () => {
  const twoGiB = 2 * 1024 * 1024 * 1024;
  assert.equal(
    vmSize(base, res({ memoryLimitInBytes: twoGiB })).memoryMiB,
    2048 + GUEST_OVERHEAD_MIB,
  );
  assert.equal(vmSize(base, res({ memoryLimitInBytes: 64 * 1024 * 1024 })).memoryMiB, 512);
  assert.equal(
    vmSize(base, res({ memoryLimitInBytes: 300 * 1024 * 1024 + 1 })).memoryMiB,
    301 + GUEST_OVERHEAD_MIB,
  );
});
