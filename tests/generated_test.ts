/**
 * Generated code must match its sources: the protobuf TypeScript (src/gen/*)
 * and the embedded native helper (src/gen/helper). Both generators run in
 * --check mode and fail on any difference.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));

async function check(script: string): Promise<string> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", script, "--check"],
    cwd: root,
  }).output();
  const text = new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr);
  assert.ok(r.success, text);
  return text;
}

Deno.test("generated protobuf code is up to date with proto/", async () => {
  assert.match(await check("scripts/gen_proto.ts"), /up to date/);
});

Deno.test("the embedded helper binary is up to date with native/*.c", async () => {
  assert.match(await check("scripts/gen_helper.ts"), /up to date/);
});
