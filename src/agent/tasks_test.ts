import assert from "node:assert/strict";
import { ociRuntimeOf } from "./tasks.ts";

Deno.test("guest tasks: the OCI runtime comes from the kernel command line, crun when unnamed", () => {
  assert.equal(ociRuntimeOf("console=ttyS0 quiet"), "crun");
  assert.equal(ociRuntimeOf(""), "crun");
  assert.equal(ociRuntimeOf("console=ttyS0 kuasar.oci_runtime=runc quiet\n"), "runc");
  // The last one wins, as kernel_params come after the host's own.
  assert.equal(ociRuntimeOf("kuasar.oci_runtime=runc kuasar.oci_runtime=crun"), "crun");
  // Not a prefix match, and an unknown runtime is refused rather than replaced.
  assert.equal(ociRuntimeOf("xkuasar.oci_runtime=runc"), "crun");
  assert.throws(() => ociRuntimeOf("kuasar.oci_runtime=youki"), /youki: not a runtime/);
  assert.throws(() => ociRuntimeOf("kuasar.oci_runtime=toString"), /not a runtime/);
});
