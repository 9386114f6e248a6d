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
 * Starts `helper <args>` and waits for its "ready <pid>" line. `hold` and `monitor` leave their
 * parent first (their first line is "pid <n>": the helper that goes on) and outlive the daemon;
 * the daemon keeps no child process for them, and learns their end from their exit records.
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
  child.status.catch(() => {});
  let helperPid = child.pid;
  // stderr ends when the helper closes it (once ready) or exits.
  const stderr = new Response(child.stderr).text().catch(() => "");
  const reader = child.stdout.getReader();
  const td = new TextDecoder();
  let text = "";
  let last = "";
  const timer = setTimeout(() => {
    // The helper leads its own process group (setsid): the runtime it waits for goes too.
    // (helperPid > 1: kill(-1) would signal every process.)
    for (const target of helperPid > 1 ? [-helperPid, helperPid] : []) {
      try {
        Deno.kill(target, "SIGKILL");
        break;
      } catch { /* not (yet) a group, or gone */ }
    }
  }, timeoutMs);
  try {
    for (;;) {
      const nl = text.indexOf("\n");
      if (nl >= 0) {
        last = text.slice(0, nl).trim();
        text = text.slice(nl + 1);
        const [word, num] = last.split(" ");
        if (word === "pid") {
          if (Number.isInteger(Number(num)) && Number(num) > 1) helperPid = Number(num);
          continue;
        }
        break;
      }
      const { value, done } = await reader.read();
      if (done) {
        last = text.trim();
        break;
      }
      text += td.decode(value, { stream: true });
    }
  } finally {
    clearTimeout(timer);
    reader.cancel().catch(() => {});
    // Waited for until now (so the wait keeps the event loop alive): a helper that stayed the
    // daemon's child (under PID 1) must not keep a daemon that stops from exiting.
    child.unref();
  }
  const [word, num] = last.split(" ");
  const n = Number(num);
  if (word === "ready" && Number.isInteger(n) && n > 0) return { helperPid, pid: n };
  const err = (await stderr).trim();
  if (word === "failed") {
    throw new ProcessStartError(`runtime exited with status ${n}${err ? `: ${err}` : ""}`, n);
  }
  throw new ProcessStartError(`helper ${args[0]} did not start${err ? `: ${err}` : ""}`);
}
