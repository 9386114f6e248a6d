import assert from "node:assert/strict";
import { InvalidArgumentError } from "./errors.ts";
import { rootfsMountTarget, validateBundlePath } from "./bundle_paths.ts";

Deno.test("bundle paths: clean absolute bundles pass, others are INVALID_ARGUMENT", () => {
  const b = "/run/containerd/io.containerd.runtime.v2.task/k8s.io/3f2a";
  assert.equal(validateBundlePath(b), b);
  assert.equal(validateBundlePath(`${b}/`), b);
  for (const bad of ["", "rel/b", "/run/../etc", "/run/./b", "/run//b", "/", "/run/b\0x"]) {
    assert.throws(() => validateBundlePath(bad), InvalidArgumentError, bad);
  }
});

Deno.test("bundle paths: rootfs mounts go to <bundle>/rootfs, and root.path must name it", () => {
  const b = "/run/k/bundles/c1";
  for (const ok of [undefined, "rootfs", "rootfs/", "./rootfs", "/run/k/bundles/c1/rootfs"]) {
    assert.equal(rootfsMountTarget(b, ok), "/run/k/bundles/c1/rootfs", String(ok));
  }
  for (
    const bad of ["../../../../tmp/x", "/tmp/x", "/", "..", "rootfs/..", "other", "rootfs/sub"]
  ) {
    assert.throws(() => rootfsMountTarget(b, bad), InvalidArgumentError, bad);
  }
});
