/**
 * Imports only go down: cli → daemon → adapters → app → ports → domain → lib
 * (docs/architecture.md). The daemon and the guest agent are two programs on
 * the same level and never import each other; generated code (src/gen/) is
 * wire formats, for adapters and the programs above them. Unit tests
 * (`*_test.ts`) are not checked: they may reach for fakes.
 */
import assert from "node:assert/strict";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const SRC = join(ROOT, "src");

/** Rank of each layer: a file may import its own layer and the ones below. */
const RANKS: Record<string, number> = {
  cli: 6,
  daemon: 5,
  agent: 5,
  adapters: 4,
  app: 3,
  ports: 2,
  domain: 1,
  lib: 0,
};

/** The layer of a path under src/ ("main.ts" counts as cli). */
export function layerOf(path: string): string {
  const top = path.split("/")[0];
  if (top === "main.ts") return "cli";
  if (top === "gen" || top in RANKS) return top;
  throw new Error(`src/${path} is in no layer: put it in one (tests/architecture_test.ts)`);
}

/** Why an import from `from` to `to` (paths under src/) breaks the layering, or undefined. */
export function backEdge(from: string, to: string): string | undefined {
  const a = layerOf(from), b = layerOf(to);
  if (b === "gen") {
    return a === "gen" || RANKS[a] >= RANKS.adapters ? undefined : `${a} imports generated code`;
  }
  if (a === "gen") return "generated code imports the tree";
  if (a !== b && RANKS[a] === RANKS[b]) return `${a} and ${b} are separate programs`;
  return RANKS[b] > RANKS[a] ? `${a} imports ${b}, a layer above it` : undefined;
}

/** Relative module specifiers of a source file (static, re-exports and dynamic). */
export function importsOf(text: string): string[] {
  const out: string[] = [];
  const re = /(?:\bfrom\s*|\bimport\s*\(\s*|^\s*import\s*)"(\.{1,2}\/[^"]+)"/gm;
  for (const m of text.matchAll(re)) out.push(m[1]);
  return out;
}

async function* sources(dir: string): AsyncGenerator<string> {
  for await (const e of Deno.readDir(dir)) {
    const p = join(dir, e.name);
    if (e.isDirectory) yield* sources(p);
    else if (p.endsWith(".ts") && !p.endsWith("_test.ts")) yield p;
  }
}

Deno.test("architecture: the checker finds a back-edge and accepts the allowed directions", () => {
  assert.match(backEdge("adapters/runc/mod.ts", "daemon/kinds.ts") ?? "", /layer above/);
  assert.match(backEdge("ports/supervisor.ts", "adapters/os/command.ts") ?? "", /layer above/);
  assert.match(backEdge("app/task_service.ts", "gen/ttrpc/request.ts") ?? "", /generated/);
  assert.match(backEdge("adapters/x.ts", "agent/channel.ts") ?? "", /layer above/);
  assert.match(backEdge("daemon/daemon.ts", "agent/main.ts") ?? "", /separate programs/);
  assert.equal(backEdge("cli/cli.ts", "daemon/daemon.ts"), undefined);
  assert.equal(backEdge("agent/tasks.ts", "adapters/oci/runtime_cli.ts"), undefined);
  assert.equal(backEdge("adapters/grpc/x.ts", "gen/cri/api.ts"), undefined);
  assert.equal(backEdge("domain/oci.ts", "lib/log.ts"), undefined);
  assert.deepEqual(importsOf('import { a } from "../x.ts";\nexport * from "./y.ts";\n'), [
    "../x.ts",
    "./y.ts",
  ]);
  assert.deepEqual(importsOf('const m = await import("../z.ts");\nimport "./side.ts";'), [
    "../z.ts",
    "./side.ts",
  ]);
});

Deno.test("architecture: imports only go down", async () => {
  const bad: string[] = [];
  let edges = 0;
  for await (const file of sources(SRC)) {
    const from = relative(SRC, file);
    for (const spec of importsOf(await Deno.readTextFile(file))) {
      const target = resolve(dirname(file), spec);
      if (!target.startsWith(SRC + "/")) continue;
      edges++;
      const to = relative(SRC, target);
      const why = backEdge(from, to);
      if (why) bad.push(`src/${from} → src/${to}: ${why}`);
    }
  }
  assert.ok(edges > 300, `only ${edges} imports found: the scan is broken`);
  assert.deepEqual(bad, [], `imports against the layering:\n${bad.join("\n")}`);
});
