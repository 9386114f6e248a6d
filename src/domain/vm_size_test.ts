import assert from "node:assert/strict";
import { grownVmSize, GUEST_OVERHEAD_MIB, MAX_VCPUS, vmGrowthRefusal, vmSize } from "./vm_size.ts";
import { FailedPreconditionError } from "./errors.ts";
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

Deno.test("grownVmSize: a container raised beyond its VM needs it grown; within it, nothing", () => {
  const vm = { vcpus: 2, memoryMiB: 1024 };
  const mib = 1048576;
  assert.equal(
    grownVmSize(vm, { memory: { limit: 512 * mib }, cpu: { quota: 200_000, period: 100_000 } }),
    undefined,
  );
  assert.deepEqual(grownVmSize(vm, { memory: { limit: 2048 * mib } }), {
    vcpus: 2,
    memoryMiB: 2048 + GUEST_OVERHEAD_MIB,
  });
  assert.deepEqual(grownVmSize(vm, { cpu: { quota: 250_000, period: 100_000 } }), {
    vcpus: 3,
    memoryMiB: 1024,
  });
  assert.equal(grownVmSize({}, { memory: { limit: 1 << 40 } }), undefined, "size never recorded");
  assert.equal(grownVmSize(vm, { cpu: { quota: -1, period: 100_000 } }), undefined, "unlimited");
});

Deno.test("vmGrowthRefusal: beyond the room a VM has, refused with the sizes", () => {
  const vm = { vcpus: 2, memoryMiB: 1024 };
  assert.equal(
    vmGrowthRefusal(vm, { vcpus: 4, memoryMiB: 4096 }, { vcpus: 4, memoryMiB: 8192 }),
    undefined,
  );
  const mem = vmGrowthRefusal(vm, { vcpus: 2, memoryMiB: 2304 }, vm);
  assert.ok(mem instanceof FailedPreconditionError);
  assert.match(
    mem.message,
    /2048 MiB does not fit the pod's VM \(1024 MiB.*grow to 1024 MiB at most/,
  );
  assert.match(
    vmGrowthRefusal(vm, { vcpus: 3, memoryMiB: 1024 }, { vcpus: 2, memoryMiB: 8192 })?.message ??
      "",
    /3 CPUs does not fit the pod's VM \(2 vCPUs\), which can grow to 2 vCPUs at most/,
  );
});
