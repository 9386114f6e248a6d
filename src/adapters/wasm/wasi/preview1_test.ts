import assert from "node:assert/strict";
import { join } from "node:path";
import { PathError } from "./paths.ts";
import { Errno, errnoOf } from "./preview1.ts";

/** What Deno throws for an errno it has no class for: an Error with the errno's name as `code`. */
function denoError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

Deno.test("errnoOf maps Deno's errors by class, and by code where Deno has no class", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(join(dir, "f"), "");
    const thrown = async (p: Promise<unknown>) => {
      try {
        await p;
      } catch (e) {
        return e;
      }
      assert.fail("no error");
    };
    assert.equal(errnoOf(await thrown(Deno.remove(dir))), Errno.ENOTEMPTY);
    assert.equal(errnoOf(await thrown(Deno.stat(join(dir, "none")))), Errno.ENOENT);
    assert.equal(errnoOf(await thrown(Deno.mkdir(dir))), Errno.EEXIST);
    assert.equal(
      errnoOf(await thrown(Deno.readDir(join(dir, "f"))[Symbol.asyncIterator]().next())),
      Errno.ENOTDIR,
    );
    const full = await Deno.open("/dev/full", { write: true });
    try {
      assert.equal(errnoOf(await thrown(full.write(new Uint8Array(1)))), Errno.ENOSPC);
    } finally {
      full.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  assert.equal(errnoOf(new PathError(Errno.EBADF, "bad fd")), Errno.EBADF);
});

Deno.test("errnoOf does not read the message, which names paths that may say anything", () => {
  // A rename across filesystems of a directory whose name says "not empty".
  const exdev = denoError(
    "EXDEV",
    "Invalid cross-device link (os error 18): rename '/tmp/not empty/x' -> '/dev/shm/x'",
  );
  assert.equal(errnoOf(exdev), Errno.EXDEV);
  assert.equal(
    errnoOf(denoError("ENOTEMPTY", "Directory not empty (os error 39)")),
    Errno.ENOTEMPTY,
  );
  // Text alone, without Deno's code, is not enough.
  assert.equal(errnoOf(new Error("Directory not empty (os error 39)")), Errno.EIO);
  assert.equal(errnoOf(denoError("EWHATEVER", "os error 28")), Errno.EIO);
  assert.equal(errnoOf("not an error"), Errno.EIO);
});
