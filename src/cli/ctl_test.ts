import assert from "node:assert/strict";
import { join } from "node:path";
import { resolveId, splitExitTrailer, withExitTrailer } from "./ctl.ts";

Deno.test("ctl exec: the exit code comes back after the output, through a real shell", async () => {
  for (
    const [cmd, out, code] of [
      ["echo hi; echo err >&2", "hi\nerr\n", 0],
      ["printf 'no newline'; exit 3", "no newline", 3],
      ["true", "", 0],
      ["exit 255", "", 255],
    ] as const
  ) {
    const r = await new Deno.Command("sh", { args: ["-c", withExitTrailer(cmd)] }).output();
    assert.ok(r.success);
    assert.deepEqual(
      splitExitTrailer(new TextDecoder().decode(r.stdout)),
      { output: out, code },
      cmd,
    );
  }
  assert.deepEqual(
    splitExitTrailer("plain"),
    { output: "plain", code: 0 },
    "an agent's own output",
  );
});

Deno.test("ctl exec: a pod id prefix names one sandbox, or says why not", async () => {
  const dir = await Deno.makeTempDir();
  try {
    for (const id of ["3f2a00", "3f2b11", "9c0000"]) {
      await Deno.mkdir(join(dir, id));
      await Deno.writeTextFile(join(dir, id, "sandbox.json"), "{}");
    }
    assert.equal(await resolveId(dir, "9c"), "9c0000");
    assert.equal(await resolveId(dir, "3f2a00"), "3f2a00");
    await assert.rejects(resolveId(dir, "3f"), /names 2 sandboxes/);
    await assert.rejects(resolveId(dir, "ff"), /No sandbox id starts with "ff"/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
