import assert from "node:assert/strict";
import { join } from "node:path";
import { packBundle } from "./bundle_disk.ts";
import { bindMount, lockForReading, unmountAll } from "../os/mounts.ts";

const ignore = Deno.uid() !== 0 ||
  !["mkfs.ext4", "debugfs"].every((t) =>
    ["/usr/sbin", "/sbin", "/usr/bin"].some((d) => {
      try {
        return Deno.statSync(join(d, t)).isFile;
      } catch {
        return false;
      }
    })
  );

async function debugfs(image: string, request: string): Promise<string> {
  const out = await new Deno.Command("debugfs", { args: ["-R", request, image], stderr: "null" })
    .output();
  return new TextDecoder().decode(out.stdout);
}

/** A staging tree as makeShare leaves it: config.json, a bound host directory as m0. */
async function withStaging(fn: (dir: string, staging: string, host: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "k-pack-" });
  const staging = join(dir, "staging");
  const host = join(dir, "host");
  await Deno.mkdir(join(staging, "m0"), { recursive: true });
  await Deno.mkdir(host);
  await Deno.writeTextFile(join(staging, "config.json"), "{}");
  try {
    await fn(dir, staging, host);
  } finally {
    await unmountAll(staging);
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test({
  name: "packBundle: links stay links; sizes from what files hold (sparse, hard links once)",
  ignore,
  fn: () =>
    withStaging(async (dir, staging, host) => {
      await Deno.writeTextFile(join(dir, "secret"), "host-only\n", { mode: 0o600 });
      await Deno.symlink(join(dir, "secret"), join(host, "g"));
      // 8 GiB that hold nothing, and one 4 MiB file under 200 names.
      const sparse = await Deno.open(join(host, "sparse"), { write: true, create: true });
      await sparse.truncate(8 * 2 ** 30);
      sparse.close();
      await Deno.writeFile(join(host, "data"), new Uint8Array(4 * 2 ** 20).fill(7));
      for (let i = 0; i < 200; i++) await Deno.link(join(host, "data"), join(host, `l${i}`));
      await bindMount(host, join(staging, "m0"));
      const image = join(dir, "out", "c1.img");
      await packBundle(staging, image, 64);
      assert.match(await debugfs(image, "stat /m0/g"), /Type: symlink/);
      assert.equal(await debugfs(image, "cat /m0/data").then((t) => t.length), 4 * 2 ** 20);
      const size = (await Deno.stat(image)).size;
      assert.ok(size < 200 * 2 ** 20, `sized to the content and the room: ${size} bytes`);
      assert.equal((await Deno.stat(image)).mode! & 0o777, 0o600);
    }),
});

Deno.test({
  name: "lockForReading: a symlink on the locked mounts is not followed, and they are read-only",
  ignore,
  fn: () =>
    withStaging(async (dir, staging, host) => {
      await Deno.writeTextFile(join(dir, "secret"), "host-only\n");
      await Deno.symlink(join(dir, "secret"), join(host, "g"));
      await bindMount(host, join(staging, "m0"));
      assert.equal(await Deno.readTextFile(join(staging, "m0", "g")), "host-only\n");
      await lockForReading(staging);
      // What a swap of a listed file for a symlink would make a reader open: refused.
      await assert.rejects(Deno.readTextFile(join(staging, "m0", "g")), /loop|ELOOP/i);
      assert.equal(await Deno.readLink(join(staging, "m0", "g")), join(dir, "secret"));
      await assert.rejects(Deno.writeTextFile(join(staging, "m0", "new"), "x"), /read-only/i);
      assert.equal(await Deno.readTextFile(join(host, "g")), "host-only\n", "the host's own");
    }),
});
