/**
 * Runs external programs by argv (never through a shell) and turns failures
 * into the project's error classes.
 *
 * @module
 */
import { concatBytes } from "../../lib/bytes.ts";
import { DeadlineExceededError, InternalError, UnavailableError } from "../../domain/errors.ts";
import { log } from "../../lib/log.ts";
import { spawned } from "./children.ts";
import type { CommandResult, RunOptions } from "../../ports/supervisor.ts";

const td = new TextDecoder();

/** Runs `argv` to completion (`detached` is the Supervisor's business); a missing binary is UNAVAILABLE, a timeout DEADLINE_EXCEEDED. */
export async function runCommand(
  argv: readonly string[],
  opts: RunOptions = {},
): Promise<CommandResult> {
  const [bin, ...args] = argv;
  log.trace("exec", { argv });
  let child: Deno.ChildProcess;
  try {
    child = spawned(
      new Deno.Command(bin, {
        args,
        stdin: opts.stdin ? "piped" : "null",
        stdout: opts.discardOutput ? "null" : "piped",
        stderr: opts.discardOutput ? "null" : "piped",
        env: opts.env,
        cwd: opts.cwd,
      }).spawn(),
    );
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new UnavailableError(`Cannot run "${bin}": not found in PATH`, { cause: e });
    }
    throw new InternalError(`Cannot run "${bin}": ${(e as Error).message}`, { cause: e });
  }
  if (opts.stdin) {
    const w = child.stdin.getWriter();
    await w.write(opts.stdin).catch(() => {});
    await w.close().catch(() => {});
  }
  let timedOut = false;
  const timer = opts.timeoutMs === undefined ? undefined : setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  }, opts.timeoutMs);
  // Read the pipes ourselves: a grandchild the program left behind (a script's `sleep`) keeps
  // them open after the kill, and waiting for their end would outlast the timeout (forever).
  const readers: ReadableStreamDefaultReader<Uint8Array>[] = [];
  const collect = async (s: ReadableStream<Uint8Array>): Promise<Uint8Array> => {
    const r = s.getReader();
    readers.push(r);
    const chunks: Uint8Array[] = [];
    try {
      for (;;) {
        const { done, value } = await r.read();
        if (done) break;
        chunks.push(value);
      }
    } catch { /* cancelled */ }
    return concatBytes(chunks);
  };
  const stop = opts.timeoutMs === undefined ? undefined : setTimeout(() => {
    for (const r of readers) r.cancel().catch(() => {});
  }, opts.timeoutMs + 100);
  const out = opts.discardOutput
    ? { code: (await child.status).code, stdout: new Uint8Array(), stderr: new Uint8Array() }
    : await Promise.all([child.status, collect(child.stdout), collect(child.stderr)])
      .then(([st, stdout, stderr]) => ({ code: st.code, stdout, stderr }));
  clearTimeout(timer);
  clearTimeout(stop);
  if (timedOut) {
    throw new DeadlineExceededError(
      `"${bin} ${args.join(" ")}" did not finish within ${opts.timeoutMs} ms`,
    );
  }
  return { code: out.code, stdout: td.decode(out.stdout), stderr: td.decode(out.stderr) };
}

/** Runs `argv` and throws `InternalError` with its stderr unless it exits 0. */
export async function runChecked(
  argv: readonly string[],
  opts: RunOptions = {},
): Promise<CommandResult> {
  const r = await runCommand(argv, opts);
  if (r.code !== 0) {
    const detail = (r.stderr || r.stdout).trim().split("\n").slice(-3).join("; ");
    throw new InternalError(
      `"${argv.slice(0, 3).join(" ")}" failed with exit code ${r.code}: ${detail}`,
    );
  }
  return r;
}
