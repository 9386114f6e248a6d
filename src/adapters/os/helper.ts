/**
 * The native helper (native/kuasar-helper.c): starts its `hold` and
 * `monitor` processes. helper_install.ts puts the binary in place.
 *
 * @module
 */
import { InternalError, UnavailableError } from "../../domain/errors.ts";
import { spawned } from "./children.ts";

/** A helper process that reported ready. */
export interface HelperProcess {
  /** Pid of the helper itself (the monitor / holder parent). */
  readonly helperPid: number;
  /** The pid it reported: the container process, or the namespace init. */
  readonly pid: number;
  /** Resolves when the helper process exits (only while it is our child). */
  readonly exited: Promise<void>;
}

/** Why a helper did not become ready. */
export class HelperFailedError extends InternalError {
  /** Exit status of the runtime it ran, if it reported one. */
  readonly status: number | undefined;
  constructor(message: string, status?: number) {
    super(message);
    this.status = status;
    this.name = "HelperFailedError";
  }
}

/**
 * Starts `helper <args>` and waits for its "ready <pid>" line. The helper
 * detaches (own session) and outlives the daemon; while it is our child its
 * exit is reported through `exited`.
 */
export async function startHelper(
  helper: string,
  args: string[],
  timeoutMs = 60_000,
): Promise<HelperProcess> {
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
    throw new HelperFailedError(`runtime exited with status ${n}${err ? `: ${err}` : ""}`, n);
  }
  throw new HelperFailedError(`helper ${args[0]} did not start${err ? `: ${err}` : ""}`);
}
