/**
 * docs/engines.md's iSulad configuration, as an operator copies it: valid
 * JSON, one sandboxer per kind this binary serves, each at the kind's
 * default socket, and its runtime named as Kuasar names it.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { KINDS } from "../src/daemon/kinds.ts";

const DOC = fileURLToPath(new URL("../docs/engines.md", import.meta.url));

/** The ```json blocks of a markdown text. */
function jsonBlocks(md: string): unknown[] {
  return [...md.matchAll(/```json\n([\s\S]*?)```/g)].map((m) => JSON.parse(m[1]));
}

Deno.test("docs/engines.md: iSulad's daemon.json names every kind at its default socket", async () => {
  const blocks = jsonBlocks(await Deno.readTextFile(DOC)) as Record<string, unknown>[];
  const conf = blocks.find((b) => "cri-sandboxers" in b);
  assert.ok(conf, "a daemon.json block with cri-sandboxers");
  const sandboxers = conf["cri-sandboxers"] as Record<string, { name: string; address: string }>;
  const runtimes = conf["cri-runtimes"] as Record<string, string>;
  assert.deepEqual(Object.keys(sandboxers).sort(), KINDS.map((k) => k.name).sort());
  for (const kind of KINDS) {
    assert.deepEqual(sandboxers[kind.name], { name: kind.name, address: kind.defaultListen });
    assert.equal(runtimes[kind.name], `io.containerd.${kind.name}.v1`);
  }
  assert.ok(KINDS.some((k) => k.name === conf["default-sandboxer"]));
  assert.equal(conf["enable-cri-v1"], true);
});
