// Single-file bundles of the entry points in dist/, runnable with
// `deno run -A dist/kuasar.js …` on a node that has only Deno. The build time
// (the commit's, so the same tree bundles to the same bytes: `kuasar install`
// then rewrites nothing) and git revision are stamped into the version output.
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
// The Wasm host's worker script is its own bundle: workers load a module by URL, and the
// host finds it next to the main bundle (src/adapters/wasm/host/worker_pool.ts).
// Usage: bundle.ts [out-dir] (default dist/).
const outDir = Deno.args[0] ?? "dist";
const entries: [string, string][] = [
  ["src/main.ts", join(outDir, "kuasar.js")],
  ["src/adapters/wasm/host/worker.ts", join(outDir, "kuasar-wasm-worker.js")],
];
try {
  await Deno.stat(join(root, "src/agent/main.ts"));
  entries.push(["src/agent/main.ts", join(outDir, "kuasar-agent.js")]);
} catch { /* no guest agent in this tree */ }

async function git(...args: string[]): Promise<string> {
  try {
    const r = await new Deno.Command("git", { args, cwd: root, stderr: "null" }).output();
    return r.success ? new TextDecoder().decode(r.stdout).trim() : "";
  } catch {
    return "";
  }
}

const rev = await git("describe", "--always", "--dirty");
const committed = await git("log", "-1", "--format=%ct");
const time = committed ? new Date(Number(committed) * 1000) : new Date();
const stamp = `${time.toISOString()}${rev ? ` (git ${rev})` : ""}`;
await Deno.mkdir(resolve(root, outDir), { recursive: true });
for (const [src, out] of entries) {
  const r = await new Deno.Command(Deno.execPath(), {
    // Minified (names kept: errors and logs name their classes): the daemon holds its whole
    // source in its heap for its life, and comments and indentation were half of it (an idle
    // runC daemon's private memory 2.8 MiB less, measured).
    args: [
      "bundle",
      "--platform",
      "deno",
      "--minify",
      "--keep-names",
      "-o",
      resolve(root, out),
      join(root, src),
    ],
    cwd: root,
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (!r.success) Deno.exit(1);
  // One character beyond Latin-1 (a "≤" in a kept doc comment) makes V8 hold the whole
  // source as a two-byte string: twice its size in the daemon's heap for its life (3.4 MB
  // more, measured). As \u escapes the bundle is one-byte and means the same: every such
  // character is in a comment, a string or a regular expression (not in String.raw).
  const raw = withRequire(await Deno.readTextFile(resolve(root, out)));
  if (/\\[\u0100-\uffff]|String\.raw`[^`]*[\u0100-\uffff]/.test(raw)) {
    // Where an escape would not mean the character: say so rather than change the program.
    throw new Error(`${out}: String.raw or an escaped character beyond Latin-1; escape by hand`);
  }
  const text = raw.replace(
    /[\u0100-\uffff]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
  const placeholder = '"unknown (run from source)"';
  if (!text.includes(placeholder) && src === "src/main.ts") {
    throw new Error(`${out}: build time placeholder not found`);
  }
  await Deno.writeTextFile(resolve(root, out), text.replace(placeholder, JSON.stringify(stamp)));
  console.log(`bundled ${src} -> ${out}`);
}

/**
 * Gives a minified bundle the CommonJS `require` its npm packages call (grpc-js requires
 * node: modules): Deno 2.9 wires it only into unminified bundles, and the minified one
 * then throws "Dynamic require of "node:events" is not supported" at start.
 */
function withRequire(code: string): string {
  if (code.includes("__deno_internal_createRequire") || !code.includes("Dynamic require of")) {
    return code;
  }
  return 'import { createRequire as __kuasarCreateRequire } from "node:module";\n' +
    `var require = __kuasarCreateRequire(import.meta.url);\n${code}`;
}
