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

/**
 * Relative specifiers a source file loads: static imports and re-exports,
 * dynamic imports, `import.meta.resolve`, and `new URL(…, import.meta.url)`
 * (workers), in any quotes. A dynamic specifier built at run time cannot be
 * checked: it comes back as `?` + its text, which the layering refuses.
 */
export function importsOf(text: string): string[] {
  const out: string[] = [];
  const q = `(["'\`])(\\.{1,2}\\/[^"'\`]*)\\1`;
  const forms = [
    `(?:\\bfrom|^\\s*import|^\\s*export)\\s*${q}`,
    `\\bimport\\s*\\(\\s*${q}`,
    `\\bimport\\.meta\\.resolve\\s*\\(\\s*${q}`,
    `\\bnew\\s+URL\\s*\\(\\s*${q}\\s*,\\s*import\\.meta\\.url`,
  ];
  for (const f of forms) {
    for (const m of text.matchAll(new RegExp(f, "gm"))) {
      out.push(m[2].includes("${") ? `?${m[2]}` : m[2]);
    }
  }
  return out;
}

/** Files outside src/ that the code may load. */
const OUTSIDE_ALLOWED = new Set(["deno.json"]);

async function* sources(dir: string): AsyncGenerator<string> {
  for await (const e of Deno.readDir(dir)) {
    const p = join(dir, e.name);
    if (e.isDirectory) yield* sources(p);
    else if (/\.(ts|tsx|js|mjs|jsx)$/.test(p) && !/_test\.\w+$/.test(p)) yield p;
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
    "./side.ts",
    "../z.ts",
  ]);
  assert.deepEqual(
    importsOf(
      "import { a } from '../q.ts';\n" +
        "await import(`../../daemon/kinds.ts`);\n" +
        'new Worker(new URL("../../agent/main.ts", import.meta.url));\n' +
        'import.meta.resolve("../../daemon/daemon.ts");\n' +
        "await import(`../${name}.ts`);\n" +
        'export {\n  x,\n  y,\n} from "./multi.ts";\n',
    ),
    [
      "../q.ts",
      "./multi.ts",
      "../../daemon/kinds.ts",
      "?../${name}.ts",
      "../../daemon/daemon.ts",
      "../../agent/main.ts",
    ],
  );
});

Deno.test("architecture: imports only go down", async () => {
  const bad: string[] = [];
  let edges = 0;
  for await (const file of sources(SRC)) {
    const from = relative(SRC, file);
    for (const spec of importsOf(await Deno.readTextFile(file))) {
      if (spec.startsWith("?")) {
        bad.push(`src/${from} → ${spec.slice(1)}: a specifier built at run time cannot be checked`);
        continue;
      }
      const target = resolve(dirname(file), spec);
      if (!target.startsWith(SRC + "/")) {
        const outside = relative(ROOT, target);
        if (!OUTSIDE_ALLOWED.has(outside)) bad.push(`src/${from} → ${outside}: outside src/`);
        continue;
      }
      edges++;
      const to = relative(SRC, target);
      const why = backEdge(from, to);
      if (why) bad.push(`src/${from} → src/${to}: ${why}`);
    }
  }
  assert.ok(edges > 300, `only ${edges} imports found: the scan is broken`);
  assert.deepEqual(bad, [], `imports against the layering:\n${bad.join("\n")}`);
});
