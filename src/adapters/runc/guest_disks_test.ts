import assert from "node:assert/strict";
import { disksOf } from "./guest_disks.ts";
import { DISKS_ANNOTATION } from "../../ports/agent_protocol.ts";

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
