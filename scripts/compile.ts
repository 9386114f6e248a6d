// Self-contained executables with `deno compile`: dist/kuasar (and
// dist/kuasar-agent once the guest agent exists), built from the bundles.
//
// `deno compile` needs the `denort` base binary of the exact Deno version.
// Deno downloads it from dl.deno.land, which is unreachable on machines
// without internet; point DENORT_BIN at a denort binary (a release asset
// "denort-x86_64-unknown-linux-gnu.zip" of Deno 2.9.6) to build offline. The
// full `deno` binary is NOT a valid denort: the result would just start a REPL.
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { V8_FLAGS } from "../src/adapters/os/self_command.ts";

const root = fileURLToPath(new URL("..", import.meta.url));
const denort = Deno.env.get("DENORT_BIN");

const bundle = await new Deno.Command(Deno.execPath(), {
  args: ["run", "-A", join(root, "scripts/bundle.ts")],
  stdout: "inherit",
  stderr: "inherit",
}).output();
if (!bundle.success) Deno.exit(1);

const targets: [string, string, string[]][] = [
  // The Wasm host's worker bundle goes inside: it is loaded next to kuasar.js at run time.
  ["dist/kuasar.js", "dist/kuasar", [
    "--unstable-vsock",
    `--v8-flags=${V8_FLAGS}`,
    "--include",
    join(root, "dist/kuasar-wasm-worker.js"),
  ]],
];
try {
  await Deno.stat(join(root, "dist/kuasar-agent.js"));
  targets.push(["dist/kuasar-agent.js", "dist/kuasar-agent", ["--unstable-vsock"]]);
} catch { /* no agent */ }

let failed = false;
for (const [src, out, flags] of targets) {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["compile", "-A", ...flags, "-o", join(root, out), join(root, src)],
    env: denort ? { DENORT_BIN: denort } : {},
    stdout: "inherit",
    stderr: "piped",
  }).output();
  if (r.success) {
    console.log(`compiled ${out}`);
    continue;
  }
  failed = true;
  const err = new TextDecoder().decode(r.stderr);
  console.error(err.trim());
  if (!denort) {
    console.error(
      `\ndeno compile could not fetch its denort base binary (no internet access?).\n` +
        `Set DENORT_BIN=/path/to/denort (Deno ${Deno.version.deno}) to compile offline, or run the\n` +
        `single-file bundle instead: deno run -A --unstable-vsock ${src}`,
    );
  }
}
Deno.exit(failed ? 1 : 0);
