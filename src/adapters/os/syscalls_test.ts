import assert from "node:assert/strict";
import { mountFlags } from "./syscalls.ts";

Deno.test("mountFlags splits mount(8) options into MS_* flags and filesystem data", () => {
  assert.deepEqual(mountFlags(["ro", "nosuid", "lowerdir=/a", "upperdir=/b"]), {
    flags: 0x1 | 0x2,
    data: "lowerdir=/a,upperdir=/b",
  });
  assert.deepEqual(mountFlags(["rbind", "ro"]), { flags: 0x1000 | 0x4000 | 0x1, data: "" });
  // A later option clears an earlier one, as in mount(8).
  assert.deepEqual(mountFlags(["ro", "rw", "defaults"]), { flags: 0, data: "" });
});
