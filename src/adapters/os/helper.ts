/**
 * The native helper (native/kuasar-helper.c): installs the embedded binary
 * and starts its `hold` and `monitor` processes.
 *
 * The binary ships inside kuasar (src/gen/helper/) so a node needs nothing
 * else; it is written once per content hash to a directory that allows
 * execution (/run is often mounted noexec, so not under --dir by default).
 *
 * @module
 */
import { dirname, join } from "node:path";
import { InternalError, UnavailableError } from "../../domain/errors.ts";
import { log } from "../../log.ts";
import { spawned } from "./children.ts";

/** Where the helper comes from. */
export interface HelperLocation {
  /** An explicit binary (flag or KUASAR_HELPER); skips the embedded copy. */
  readonly path?: string;
  /** Directory the embedded binary is written to. */
  readonly installDir: string;
}

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

/** Installs (if needed) and returns the path of the helper binary. */
export async function installHelper(loc: HelperLocation): Promise<string> {
  const candidates = [
    loc.path,
    Deno.env.get("KUASAR_HELPER"),
    join(dirname(Deno.execPath()), "kuasar-helper"),
  ];
  for (const c of candidates) {
    if (c && await isExecutable(c)) return c;
  }
  if (loc.path) {
    throw new UnavailableError(`Helper binary "${loc.path}" is missing or not executable`);
  }
  if (Deno.build.arch !== "x86_64") {
    throw new UnavailableError(
      `No embedded helper for ${Deno.build.arch}: build native/kuasar-helper.c and pass --helper`,
    );
  }
  // A literal specifier, so bundles and compiled binaries carry the module.
  const mod = await import("../../gen/helper/kuasar_helper_x86_64.ts");
  const target = join(loc.installDir, `kuasar-helper-${mod.HELPER_SHA256.slice(0, 16)}`);
  if (await isExecutable(target)) return target;
  await Deno.mkdir(loc.installDir, { recursive: true, mode: 0o755 });
  const bytes = Uint8Array.from(atob(mod.HELPER_BASE64), (c) => c.charCodeAt(0));
  const tmp = `${target}.${crypto.randomUUID()}`;
  await Deno.writeFile(tmp, bytes, { mode: 0o755 });
  await Deno.rename(tmp, target);
  log.info("installed helper binary", { path: target });
  return target;
}

/**
 * Links the helper as `containerd-shim-kuasar-<kind>-v1` in `dir`: containerd
 * requires a binary named after the runtime_type even when it attaches to a
 * sandboxer directly (put `dir` on containerd's PATH, or give runtime_type
 * as this absolute path).
 */
export async function installShimStub(helper: string, dir: string, kind: string): Promise<string> {
  const link = join(dir, `containerd-shim-kuasar-${kind}-v1`);
  await Deno.mkdir(dir, { recursive: true, mode: 0o755 });
  try {
    if (await Deno.readLink(link) === helper) return link;
  } catch { /* absent or not a link */ }
  const tmp = `${link}.${crypto.randomUUID()}`;
  await Deno.symlink(helper, tmp);
  await Deno.rename(tmp, link);
  return link;
}

async function isExecutable(path: string): Promise<boolean> {
  try {
    const st = await Deno.stat(path);
    return st.isFile && ((st.mode ?? 0) & 0o111) !== 0;
  } catch {
    return false;
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
