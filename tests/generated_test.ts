/**
 * Generated code must match its sources: the protobuf TypeScript (src/gen/*)
 * and the embedded native helper (src/gen/helper). Both generators run in
 * --check mode and fail on any difference. A machine without a generator's
 * tools (grpcio-tools and ts-proto; musl-gcc) skips that check, with the
 * reason printed: the generator itself says what it lacks (`--missing`).
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { skipUnless } from "./support/env.ts";

const root = fileURLToPath(new URL("..", import.meta.url));

async function script(path: string, flag: string): Promise<{ success: boolean; text: string }> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", path, flag],
    cwd: root,
  }).output();
  const td = new TextDecoder();
  return { success: r.success, text: td.decode(r.stdout) + td.decode(r.stderr) };
}

/** Why the generator cannot run here, or undefined when its tools are present. */
async function missing(path: string): Promise<string | undefined> {
  const r = await script(path, "--missing");
  assert.ok(r.success, r.text); // the probe itself must work
  return r.text.trim() || undefined;
}

function checkTest(name: string, path: string, reason: string | undefined): void {
  Deno.test({ name, ...skipUnless(reason, name) }, async () => {
    const r = await script(path, "--check");
    assert.ok(r.success, r.text);
    assert.match(r.text, /up to date/);
  });
}

checkTest(
  "generated protobuf code is up to date with proto/",
  "scripts/gen_proto.ts",
  await missing("scripts/gen_proto.ts"),
);

checkTest(
  "the embedded helper binary is up to date with native/*.c",
  "scripts/gen_helper.ts",
  await missing("scripts/gen_helper.ts"),
);
