/**
 * Entry point of the `kuasar` binary: the CLI decides what runs.
 *
 * @module
 */
import { main } from "./cli/cli.ts";

if (import.meta.main) {
  const code = await main(Deno.args);
  // A daemon that stopped on a signal exits here too; pending timers must not keep it.
  Deno.exit(code);
}
