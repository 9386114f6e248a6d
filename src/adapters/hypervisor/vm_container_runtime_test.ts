import assert from "node:assert/strict";
import { FailedPreconditionError } from "../../domain/errors.ts";
import type { SandboxRecord } from "../../domain/sandbox.ts";
import { checkFitsVm } from "./vm_container_runtime.ts";

const vm = (backend: Record<string, unknown>) => ({ backend }) as unknown as SandboxRecord;

Deno.test("Update beyond the VM: refused with the sizes; within it, or on an unsized VM, allowed", () => {
  const sized = vm({ vcpus: 2, memoryMiB: 1024 });
  checkFitsVm(sized, {
    memory: { limit: 512 * 1048576 },
    cpu: { quota: 200_000, period: 100_000 },
  });
  assert.throws(
    () => checkFitsVm(sized, { memory: { limit: 2048 * 1048576 } }),
    (e) =>
      e instanceof FailedPreconditionError &&
      /2048 MiB does not fit the pod's VM \(1024 MiB/.test(e.message),
  );
  assert.throws(
    () => checkFitsVm(sized, { cpu: { quota: 300_000, period: 100_000 } }),
    /3\.00 CPUs does not fit the pod's VM \(2 vCPUs\)/,
  );
  checkFitsVm(vm({}), { memory: { limit: 1 << 40 } }); // recorded before VMs were sized
  checkFitsVm(sized, { cpu: { quota: -1, period: 100_000 } }); // unlimited
});
