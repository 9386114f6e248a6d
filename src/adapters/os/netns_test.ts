import assert from "node:assert/strict";
import { InvalidArgumentError } from "../../domain/errors.ts";
import { checkNetnsPath, netnsProblem } from "./netns.ts";

Deno.test("netnsProblem accepts network namespace files only", async () => {
  // /proc/<pid>/ns/net is what CNI's bind mounts are of.
  assert.equal(await netnsProblem("/proc/self/ns/net"), undefined);
  assert.equal(await netnsProblem(`/proc/${Deno.pid}/ns/net`), undefined);
  const dir = await Deno.makeTempDir();
  try {
    const fifo = `${dir}/fifo`;
    await new Deno.Command("mkfifo", { args: [fifo] }).output();
    for (
      const [path, why] of [
        ["/etc/passwd", /not a namespace file/],
        ["/tmp", /not a network namespace file/],
        ["/dev/null", /not a network namespace file/],
        [fifo, /not a network namespace file/],
        [`${dir}/missing`, /does not exist/],
        ["/proc/self/ns/uts", /another type/],
        ["/proc/self/ns/mnt", /another type/],
        ["relative/netns", /absolute path/],
      ] as const
    ) {
      assert.match((await netnsProblem(path)) ?? "accepted", why, path);
      await assert.rejects(checkNetnsPath(path), InvalidArgumentError, path);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
