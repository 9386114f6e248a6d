/**
 * How this program starts another copy of itself (the Wasm host): a compiled
 * binary is its own executable; from source or a bundle it is Deno running
 * the same main module with the same config.
 *
 * @module
 */
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/**
 * V8 flags of every long-lived process of this program (daemon, Wasm host):
 * `--expose-gc` lets the daemon give memory back after bursts; a 2 MiB
 * semi-space keeps the young generation small (V8 grows it to 3 × 16 MiB
 * under a stream of short-lived buffers, which is what streamed IO makes:
 * a 1 GiB flood peaked ~30 MiB lower, and ran faster, with this).
 */
export const V8_FLAGS = "--expose-gc,--max-semi-space-size=2";

/** argv that runs this program's CLI; append the subcommand and its flags. */
export function selfCommand(): string[] {
  const exe = Deno.execPath();
  if (basename(exe) !== "deno") return [exe];
  const main = Deno.mainModule.startsWith("file:")
    ? fileURLToPath(Deno.mainModule)
    : Deno.mainModule;
  const argv = [exe, "run", "-A", `--v8-flags=${V8_FLAGS}`];
  // From source the imports come from the project's deno.json, found next to src/ or dist/.
  const config = join(dirname(dirname(main)), "deno.json");
  try {
    Deno.statSync(config);
    argv.push("--config", config);
  } catch { /* a bundle needs none */ }
  argv.push(main);
  return argv;
}
