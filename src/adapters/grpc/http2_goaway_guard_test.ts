import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

const SCENARIO = fileURLToPath(new URL("../../../tests/fixtures/h2_goaway.ts", import.meta.url));
/** The Deno this project pins, whose node:http2 has the bug the guard works around. */
const BUGGY_DENO = "2.9.6";

/** Runs the scenario with freed memory poisoned, so a use-after-free crashes at once. */
async function run(mode: string, guard: boolean): Promise<Deno.CommandOutput> {
  return await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SCENARIO, mode, guard ? "guard" : "bare"],
    env: { MALLOC_PERTURB_: "165" },
    stdout: "piped",
    stderr: "piped",
  }).output();
}

for (const mode of ["client-close", "server-close"]) {
  Deno.test(`http2 guard: a GOAWAY on an idle session (${mode}) does not crash the process`, async () => {
    for (let i = 0; i < 3; i++) {
      const out = await run(mode, true);
      assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
      assert.match(new TextDecoder().decode(out.stdout), /survived/);
    }
    // Without the guard the pinned Deno crashes here (the scenario is not vacuous);
    // once a Deno with the fix is pinned, this fails: then drop the guard.
    if (Deno.version.deno === BUGGY_DENO) {
      const bare = await run(mode, false);
      assert.notEqual(bare.code, 0, `Deno ${BUGGY_DENO} survived without the guard`);
    }
  });
}
