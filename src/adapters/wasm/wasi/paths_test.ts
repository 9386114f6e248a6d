import assert from "node:assert/strict";
import { join } from "node:path";
import fc from "fast-check";
import { PathError, resolveIn } from "./paths.ts";

/** A tree with links that try to leave it: absolute, relative and looping. */
async function tree(): Promise<string> {
  const root = await Deno.makeTempDir({ prefix: "kuasar-paths-" });
  await Deno.mkdir(join(root, "a/b"), { recursive: true });
  await Deno.writeTextFile(join(root, "a/b/f"), "x");
  await Deno.symlink("/etc", join(root, "abs"));
  await Deno.symlink("../../..", join(root, "a/up"));
  await Deno.symlink("b/f", join(root, "a/rel"));
  await Deno.symlink("loop", join(root, "loop"));
  return root;
}

Deno.test("resolveIn: links are resolved inside the root, as in a chroot", async () => {
  const root = await tree();
  try {
    assert.equal(resolveIn(root, [], "/abs", true), join(root, "etc"));
    assert.equal(resolveIn(root, [], "a/rel", true), join(root, "a/b/f"));
    assert.equal(resolveIn(root, ["a"], "b/../b/f", true), join(root, "a/b/f"));
    assert.equal(resolveIn(root, [], "abs", false), join(root, "abs"));
    assert.throws(() => resolveIn(root, [], "a/up/x", true), PathError);
    assert.throws(() => resolveIn(root, [], "../x", true), PathError);
    assert.throws(() => resolveIn(root, [], "loop", true), PathError);
    assert.throws(() => resolveIn(root, [], "a/b/f/g", true), PathError);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("resolveIn never names a host path outside the root (property)", async () => {
  const root = await tree();
  try {
    const part = fc.constantFrom("..", ".", "a", "b", "f", "abs", "up", "rel", "loop", "x", "");
    fc.assert(
      fc.property(
        fc.array(part, { maxLength: 12 }),
        fc.boolean(),
        fc.boolean(),
        (ps, abs, follow) => {
          const p = (abs ? "/" : "") + ps.join("/");
          try {
            const host = resolveIn(root, [], p, follow);
            assert.ok(host === root || host.startsWith(root + "/"), `${p} -> ${host}`);
          } catch (e) {
            assert.ok(e instanceof PathError, String(e));
          }
        },
      ),
      { numRuns: 2000 },
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
