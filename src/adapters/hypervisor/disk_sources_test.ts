import assert from "node:assert/strict";
import { join } from "node:path";
import { planDisks } from "./disk_sources.ts";
import { FailedPreconditionError } from "../../domain/errors.ts";
import { blockToolsMissing, ext4Image, loopDevice } from "../../../tests/support/block.ts";

Deno.test({
  name: "planDisks: a block device the host has mounted is refused, not mounted by the guest too",
  ignore: Deno.uid() !== 0 || blockToolsMissing() !== undefined,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "k-disks-" });
    const image = await ext4Image(join(dir, "fs.img"), 16);
    const loop = await loopDevice(image);
    const mnt = join(dir, "mnt");
    await Deno.mkdir(mnt);
    try {
      const bind = (source: string) => ({
        mounts: [{ destination: "/data", type: "bind", source, options: ["rbind", "rw"] }],
      });
      // Unused on the host (a CSI block volume): a disk of the VM.
      const free = await planDisks(bind(loop.path), []);
      assert.equal(free.mounts.get(0)?.source, loop.path);
      const m = await new Deno.Command("mount", { args: [loop.path, mnt] }).output();
      assert.ok(m.success);
      await assert.rejects(() => planDisks(bind(loop.path), []), FailedPreconditionError);
      await assert.rejects(
        () =>
          planDisks({
            linux: {
              devices: [{ path: "/dev/xvdb", type: "b", major: loop.major, minor: loop.minor }],
            },
          }, []),
        FailedPreconditionError,
      );
      await assert.rejects(
        () => planDisks({ mounts: [{ destination: "/x", type: "ext4", source: loop.path }] }, []),
        FailedPreconditionError,
      );
    } finally {
      await new Deno.Command("umount", { args: [mnt] }).output();
      await loop.detach();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
