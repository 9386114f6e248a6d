/**
 * A stand-in `cloud-hypervisor` executable for daemon-level tests: it takes the real binary's
 * `--api-socket path=<sock>` and `--event-monitor path=<file>`, serves the contract fake
 * (cloud_hypervisor_api.ts) there, and exits when asked to (`vmm.shutdown`, SIGTERM). There is no
 * guest: a hybrid vsock CONNECT is refused, as by a guest whose agent never came up. Each call it
 * received, with the contract's findings, is in `<sock>.calls.json` after each call.
 *
 * @module
 */
import { ChApiFake } from "./cloud_hypervisor_api.ts";

function option(name: string): string | undefined {
  const i = Deno.args.indexOf(`--${name}`);
  const v = i >= 0 ? Deno.args[i + 1] : undefined;
  return v?.startsWith("path=") ? v.slice(5) : undefined;
}

const socket = option("api-socket");
if (!socket) {
  console.error("usage: cloud_hypervisor_bin --api-socket path=<sock> [--event-monitor path=<f>]");
  Deno.exit(2);
}
const events = option("event-monitor");
if (events) await Deno.writeTextFile(events, "");
const record = (f: ChApiFake) =>
  Deno.writeTextFileSync(
    `${socket}.calls.json`,
    JSON.stringify({ calls: f.calls, violations: f.violations }),
  );
const fake = new ChApiFake(socket, { onCall: record });
Deno.addSignalListener("SIGTERM", () => Deno.exit(143));
await fake.exited;
Deno.exit(0);
