// Single-file bundles of the entry points in dist/, runnable with
// `deno run -A dist/kuasar.js …` on a node that has only Deno. The build time
// and git revision are stamped into the version output.
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const entries: [string, string][] = [["src/main.ts", "dist/kuasar.js"]];
try {
  await Deno.stat(join(root, "src/agent/main.ts"));
  entries.push(["src/agent/main.ts", "dist/kuasar-agent.js"]);
} catch { /* no guest agent in this tree */ }

async function gitDescribe(): Promise<string> {
  try {
    const r = await new Deno.Command("git", {
      args: ["describe", "--always", "--dirty"],
      cwd: root,
    }).output();
    return r.success ? new TextDecoder().decode(r.stdout).trim() : "";
  } catch {
    return "";
  }
}

const rev = await gitDescribe();
const stamp = `${new Date().toISOString()}${rev ? ` (git ${rev})` : ""}`;
await Deno.mkdir(join(root, "dist"), { recursive: true });
for (const [src, out] of entries) {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["bundle", "--platform", "deno", "-o", join(root, out), join(root, src)],
    cwd: root,
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (!r.success) Deno.exit(1);
  const text = await Deno.readTextFile(join(root, out));
  const placeholder = '"unknown (run from source)"';
  if (!text.includes(placeholder)) throw new Error(`${out}: build time placeholder not found`);
  await Deno.writeTextFile(join(root, out), text.replace(placeholder, JSON.stringify(stamp)));
  console.log(`bundled ${src} -> ${out}`);
}
