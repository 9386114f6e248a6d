import assert from "node:assert/strict";
import { namespaceRootfsMounts } from "./mounts.ts";

const overlay = (lower: string) => ({
  type: "overlay",
  source: "overlay",
  target: "",
  options: [`lowerdir=${lower}`, "upperdir=/s/u", "workdir=/s/w"],
});

Deno.test("rootfs mounts made in the runtime's namespace: overlay and bind, as mount(2) takes them", () => {
  assert.deepEqual(namespaceRootfsMounts([overlay("/l")], "/b/rootfs"), [
    { ...overlay("/l"), target: "/b/rootfs" },
  ]);
  // containerd's native snapshotter: a bind by type gets its flag; by option, no type.
  assert.deepEqual(
    namespaceRootfsMounts([{ type: "bind", source: "/s", target: "", options: ["ro"] }], "/r"),
    [{ type: "", source: "/s", target: "/r", options: ["bind", "ro"] }],
  );
  assert.deepEqual(
    namespaceRootfsMounts([{ type: "none", source: "/s", target: "", options: ["rbind"] }], "/r"),
    [{ type: "", source: "/s", target: "/r", options: ["rbind"] }],
  );
});

Deno.test("rootfs mounts mount(2) cannot make alone stay on the node", () => {
  assert.equal(namespaceRootfsMounts([], "/r"), undefined);
  // A mount(8) helper (fuse-overlayfs), a block device's file system.
  const fuse = { type: "fuse3.fuse-overlayfs", source: "overlay", target: "", options: [] };
  assert.equal(namespaceRootfsMounts([fuse], "/r"), undefined);
  assert.equal(
    namespaceRootfsMounts([{ type: "ext4", source: "/dev/vdb", target: "", options: [] }], "/r"),
    undefined,
  );
  // Beyond what fits in a page of mount data (many layers): containerd's own tricks are needed.
  const layers = Array.from({ length: 160 }, (_, i) => `/var/lib/snapshots/${i}/fs`).join(":");
  assert.equal(namespaceRootfsMounts([overlay(layers)], "/r"), undefined);
  // More mounts than the helper takes.
  assert.equal(namespaceRootfsMounts(Array(9).fill(overlay("/l")), "/r"), undefined);
});
