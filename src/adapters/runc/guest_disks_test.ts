import assert from "node:assert/strict";
import { bundleDiskOf, disksOf } from "./guest_disks.ts";
import { BUNDLE_DISK_MOUNT, DISKS_ANNOTATION } from "../../ports/agent_protocol.ts";

const spec = (v: string) => ({ annotations: { [DISKS_ANNOTATION]: v } });

Deno.test("disksOf: the host's list, checked before any name becomes a path", () => {
  assert.deepEqual(disksOf({}), []);
  assert.deepEqual(
    disksOf(
      spec(
        '[{"serial":"kuasar-0","fstype":"ext4","options":["ro"]},{"serial":"kuasar-1","hostDevice":"7:3"}]',
      ),
    ),
    [
      { serial: "kuasar-0", fstype: "ext4", hostDevice: undefined, options: ["ro"] },
      { serial: "kuasar-1", fstype: undefined, hostDevice: "7:3", options: [] },
    ],
  );
  for (
    const bad of [
      "not json",
      '{"serial":"x"}',
      '[{"serial":"../../etc"}]',
      '[{"serial":""}]',
      '[{"serial":"a","fstype":"ext4 -o x"}]',
      '[{"serial":"a","hostDevice":"7:3/../x"}]',
      '[{"serial":"a","options":["exec,suid"]}]',
    ]
  ) {
    assert.throws(() => disksOf(spec(bad)), /io\.kuasar\.disks/, bad);
  }
});

Deno.test("bundleDiskOf: only a lone, well-formed bundle-disk mount names a disk", () => {
  const m = (type: string, source: string, options: string[] = ["ext4"]) => ({
    type,
    source,
    target: "",
    options,
  });
  assert.equal(bundleDiskOf([]), undefined);
  assert.equal(bundleDiskOf([m("overlay", "overlay")]), undefined, "an ordinary rootfs");
  assert.deepEqual(bundleDiskOf([m(BUNDLE_DISK_MOUNT, "2049012345")]), {
    serial: "2049012345",
    fstype: "ext4",
    options: [],
  });
  for (
    const bad of [
      [m(BUNDLE_DISK_MOUNT, "../../etc")],
      [m(BUNDLE_DISK_MOUNT, "kuasar-1", [])],
      [m(BUNDLE_DISK_MOUNT, "kuasar-1", ["ext4,exec"])],
      [m(BUNDLE_DISK_MOUNT, "kuasar-1"), m("overlay", "overlay")],
    ]
  ) {
    assert.throws(() => bundleDiskOf(bad), /must be the only one/, JSON.stringify(bad));
  }
});
