import assert from "node:assert/strict";
import { fileSystemSpace } from "./disk_space.ts";

Deno.test("fileSystemSpace: the root's type, size, free space and mount point", async () => {
  const s = await fileSystemSpace("/");
  assert.equal(s.mountedOn, "/");
  assert.ok(s.totalKiB > 0 && s.freeKiB >= 0 && s.freeKiB <= s.totalKiB, JSON.stringify(s));
  assert.ok(s.type !== "?" && !s.unlimited);
  await assert.rejects(fileSystemSpace("/nonexistent/kuasar"));
});

Deno.test({
  name: "fileSystemSpace: a tmpfs with size=0 has no limit",
  ignore: Deno.uid() !== 0,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "kuasar-df-" });
    const m = await new Deno.Command("mount", {
      args: ["-t", "tmpfs", "-o", "size=0", "tmpfs", dir],
    })
      .output();
    assert.ok(m.success);
    try {
      const s = await fileSystemSpace(dir);
      assert.deepEqual([s.type, s.unlimited, s.mountedOn], ["tmpfs", true, dir]);
    } finally {
      await new Deno.Command("umount", { args: [dir] }).output();
      await Deno.remove(dir);
    }
  },
});
