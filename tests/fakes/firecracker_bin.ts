/**
 * A stand-in `firecracker` executable for daemon-level tests: it takes the real binary's
 * `--api-sock <sock>` and `--id <id>`, serves the contract fake (firecracker_api.ts) there, and
 * exits when the guest would end it (SendCtrlAltDel) or on SIGTERM. There is no guest: a hybrid
 * vsock CONNECT finds no agent. Each call it received, with the contract's findings, is in
 * `<sock>.calls.json` after each call.
 *
 * @module
 */
import { FcApiFake } from "./firecracker_api.ts";

function option(name: string): string | undefined {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Deno.args[i + 1] : undefined;
}

const socket = option("api-sock");
if (!socket) {
  console.error("usage: firecracker_bin --api-sock <sock> [--id <id>]");
  Deno.exit(2);
}
const record = (f: FcApiFake) =>
  Deno.writeTextFileSync(
    `${socket}.calls.json`,
    JSON.stringify({ calls: f.calls, violations: f.violations }),
  );
const fake = new FcApiFake(socket, {}, option("id"), record);
Deno.addSignalListener("SIGTERM", () => Deno.exit(143));
await fake.exited;
Deno.exit(0);
