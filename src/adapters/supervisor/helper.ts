/**
 * The native helper (native/*.c): starts its `hold`, `monitor` and
 * `detach` processes. helper_install.ts puts the binary in place.
 *
 * @module
 */
import { UnavailableError } from "../../domain/errors.ts";
import { ProcessStartError, type SupervisedProcess } from "../../ports/supervisor.ts";
import { spawned } from "../os/children.ts";

/**
 * Starts `helper <args>` and waits for its "ready <pid>" line. The helper
 * detaches (own session) and outlives the daemon; while it is our child its
 * exit is reported through `exited`.
 */
export async function startHelper(
  helper: string,
  args: string[],
  timeoutMs = 60_000,
): Promise<SupervisedProcess> {
  let child: Deno.ChildProcess;
  try {
    child = spawned(
      new Deno.Command(helper, { args, stdin: "null", stdout: "piped", stderr: "piped" }).spawn(),
    );
  } catch (e) {
    throw new UnavailableError(`Cannot start helper "${helper}": ${(e as Error).message}`, {
      cause: e,
    });
  }
  child.unref();
  const exited = child.status.then(() => {}, () => {});
  const stderr = new Response(child.stderr).text().catch(() => "");
  const reader = child.stdout.getReader();
  let line = "";
  const td = new TextDecoder();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
  }, timeoutMs);
  try {
    while (!line.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) break;
      line += td.decode(value, { stream: true });
    }
  } finally {
    clearTimeout(timer);
    reader.cancel().catch(() => {});
  }
  const [word, num] = line.trim().split(" ");
  const n = Number(num);
  if (word === "ready" && Number.isInteger(n) && n > 0) {
    return { helperPid: child.pid, pid: n, exited };
  }
  await exited;
  const err = (await stderr).trim();
  if (word === "failed") {
    throw new ProcessStartError(`runtime exited with status ${n}${err ? `: ${err}` : ""}`, n);
  }
  throw new ProcessStartError(`helper ${args[0]} did not start${err ? `: ${err}` : ""}`);
}
