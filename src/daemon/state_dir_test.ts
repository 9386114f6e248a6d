import assert from "node:assert/strict";
import { join } from "node:path";
import { InvalidArgumentError } from "../domain/errors.ts";
import { prepareStateDir } from "./state_dir.ts";

Deno.test("--dir: created 0700 when missing; refused when others could write into it", async () => {
  const base = await Deno.makeTempDir();
  const old = Deno.umask(0);
  try {
    const fresh = join(base, "fresh", "dir");
    await prepareStateDir(fresh);
    assert.equal((await Deno.stat(fresh)).mode! & 0o7777, 0o700);
    await prepareStateDir(fresh); // its own: used as is

    for (const mode of [0o777, 0o770, 0o702, 0o1777]) {
      const d = join(base, `m${mode.toString(8)}`);
      await Deno.mkdir(d);
      await Deno.chmod(d, mode);
      await assert.rejects(prepareStateDir(d), InvalidArgumentError, mode.toString(8));
      assert.equal((await Deno.stat(d)).mode! & 0o7777, mode, "left as it was");
    }

    const link = join(base, "link");
    await Deno.symlink(fresh, link);
    await assert.rejects(prepareStateDir(link), /symbolic link/);

    const file = join(base, "file");
    await Deno.writeTextFile(file, "");
    await assert.rejects(prepareStateDir(file), /not a directory/);

    // Readable by others only: nothing can have been written; tightened.
    const readable = join(base, "readable");
    await Deno.mkdir(readable);
    await Deno.chmod(readable, 0o755);
    await prepareStateDir(readable);
    assert.equal((await Deno.stat(readable)).mode! & 0o7777, 0o700);
  } finally {
    Deno.umask(old);
    await Deno.remove(base, { recursive: true });
  }
});

// Giving a directory to another user takes root (as that user, it would be its own).
Deno.test({
  name: "--dir: refused when owned by another user",
  ignore: Deno.uid() !== 0,
}, async () => {
  const base = await Deno.makeTempDir();
  try {
    const foreign = join(base, "foreign");
    await Deno.mkdir(foreign, { mode: 0o700 });
    await Deno.chown(foreign, 65534, 65534);
    await assert.rejects(prepareStateDir(foreign), /owned by uid 65534/);
  } finally {
    await Deno.remove(base, { recursive: true });
  }
});
