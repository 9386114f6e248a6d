import assert from "node:assert/strict";
import { selfCommand, V8_FLAGS } from "./self_command.ts";

Deno.test("the daemon's V8 flags are the same from source, in deno.json's task and in a re-exec", async () => {
  const config = JSON.parse(
    await Deno.readTextFile(new URL("../../../deno.json", import.meta.url)),
  );
  assert.ok(
    (config.tasks.kuasar as string).includes(`--v8-flags=${V8_FLAGS} `),
    `deno.json's kuasar task runs with --v8-flags=${V8_FLAGS}`,
  );
  const argv = selfCommand();
  if (argv.length > 1) assert.ok(argv.includes(`--v8-flags=${V8_FLAGS}`));
});
