/**
 * The command line shared by OCI runtimes with runc's verbs and flags (runc
 * on the host and in a VM's guest, runsc): argv builders and the verbs the
 * sandboxers call, with the runtime's failures mapped to error classes.
 * Commands run through the injected Supervisor.
 *
 * @module
 */
import { FailedPreconditionError, InternalError, NotFoundError } from "../../domain/errors.ts";
import { basename } from "node:path";
import { traced } from "../../lib/trace.ts";
import type { Supervisor } from "../../ports/supervisor.ts";

/** How the runtime is invoked. */
export interface OciRuntimeOptions {
  /** Runtime binary (name or path). */
  readonly binary: string;
  /** runc --root: where runc keeps container state. */
  readonly root: string;
  /** Use the systemd cgroup driver (--systemd-cgroup). */
  readonly systemdCgroup: boolean;
  /** More global flags, before the verb (runsc's --platform, --network…). */
  readonly globalFlags?: readonly string[];
  /**
   * Run every command through the supervisor's launcher, so processes the
   * runtime leaves behind (runsc's sandbox) inherit none of the daemon's descriptors.
   */
  readonly detached?: boolean;
  /** More flags of `create` (`--no-pivot` where the root is an initramfs, as in a VM). */
  readonly createFlags?: readonly string[];
}

/** `runc state` output. */
export interface RuncState {
  readonly status: "creating" | "created" | "running" | "paused" | "stopped";
  readonly pid: number;
}

/** An OCI runtime front end bound to one state root. */
export class OciRuntimeCli {
  readonly opts: OciRuntimeOptions;
  readonly #supervisor: Pick<Supervisor, "run">;

  constructor(opts: OciRuntimeOptions, supervisor: Pick<Supervisor, "run">) {
    this.opts = opts;
    this.#supervisor = supervisor;
  }

  /** Global flags; with `logFile`, errors go there as JSON lines. */
  global(logFile?: string): string[] {
    const a = [this.opts.binary, "--root", this.opts.root];
    if (logFile) a.push("--log", logFile, "--log-format", "json");
    if (this.opts.systemdCgroup) a.push("--systemd-cgroup");
    a.push(...this.opts.globalFlags ?? []);
    return a;
  }

  /** argv of `runc create` (run under the monitor helper). */
  createArgv(
    id: string,
    bundle: string,
    pidFile: string,
    logFile: string,
    consoleSocket?: string,
  ): string[] {
    const a = [...this.global(logFile), "create", "--bundle", bundle, "--pid-file", pidFile];
    if (consoleSocket) a.push("--console-socket", consoleSocket);
    a.push(...this.opts.createFlags ?? [], id);
    return a;
  }

  /** argv of `runc exec --detach` (run under the monitor helper). */
  execArgv(
    id: string,
    processFile: string,
    pidFile: string,
    logFile: string,
    consoleSocket?: string,
    extraFlags: readonly string[] = [],
  ): string[] {
    const a = [
      ...this.global(logFile),
      "exec",
      "--detach",
      "--process",
      processFile,
      "--pid-file",
      pidFile,
    ];
    if (consoleSocket) a.push("--console-socket", consoleSocket);
    a.push(...extraFlags, id);
    return a;
  }

  async start(id: string): Promise<void> {
    await this.run(["start", id], `start container "${id}"`);
  }

  /**
   * Signals the container. A container whose init already exited (its exit
   * not yet recorded) is NOT_FOUND, as containerd's runc shim answers, so
   * containerd's StopPodSandbox treats it as stopped instead of failing.
   */
  async kill(id: string, signal: number, all: boolean): Promise<void> {
    await this.run(
      ["kill", ...(all ? ["--all"] : []), id, String(signal)],
      `signal container "${id}"`,
      undefined,
      killError,
    );
  }

  /** Deletes the container; a container runc no longer knows is fine. */
  async delete(id: string, force: boolean): Promise<void> {
    try {
      await this.run(["delete", ...(force ? ["--force"] : []), id], `delete container "${id}"`);
    } catch (e) {
      if (!(e instanceof NotFoundError)) throw e;
    }
  }

  async pause(id: string): Promise<void> {
    await this.run(["pause", id], `pause container "${id}"`);
  }

  async resume(id: string): Promise<void> {
    await this.run(["resume", id], `resume container "${id}"`);
  }

  /** Applies OCI LinuxResources. */
  async update(id: string, resources: unknown): Promise<void> {
    await this.run(
      ["update", "--resources", "-", id],
      `update container "${id}"`,
      new TextEncoder().encode(JSON.stringify(resources)),
    );
  }

  /** Pids of every process in the container. */
  async ps(id: string): Promise<number[]> {
    const out = await this.run(["ps", "--format", "json", id], `list processes of "${id}"`);
    const pids = JSON.parse(out || "[]");
    return Array.isArray(pids) ? pids.filter((p) => Number.isInteger(p)) : [];
  }

  /** State of a container, or undefined if runc does not know it. */
  async state(id: string): Promise<RuncState | undefined> {
    try {
      const s = JSON.parse(await this.run(["state", id], `query container "${id}"`));
      return { status: s.status, pid: s.pid };
    } catch (e) {
      if (e instanceof NotFoundError) return undefined;
      throw e;
    }
  }

  /** Runs a verb with the global flags; failures are mapped by `classify`. */
  async run(
    args: string[],
    what: string,
    stdin?: Uint8Array,
    classify: (what: string, message: string) => Error = runtimeError,
  ): Promise<string> {
    const r = await this.#supervisor.run([...this.global(), ...args], {
      stdin,
      timeoutMs: 60_000,
      detached: this.opts.detached,
    });
    if (r.code === 0) return r.stdout;
    throw classify(what, (r.stderr || r.stdout).trim());
  }

  /**
   * `create` run directly (not under a monitor), its output discarded: with
   * runsc the sandbox keeps the command's stdio. Errors come from the log file.
   */
  async createDetached(
    id: string,
    bundle: string,
    pidFile: string,
    logFile: string,
    extraFlags: readonly string[] = [],
  ): Promise<void> {
    await Deno.remove(logFile).catch(() => {});
    const argv = [...this.global(logFile), ...extraFlags, "create", "--bundle", bundle];
    const r = await traced(
      `${basename(this.opts.binary)} create`,
      { "kuasar.container": id },
      () =>
        this.#supervisor.run([...argv, "--pid-file", pidFile, id], {
          timeoutMs: 60_000,
          discardOutput: true,
          detached: this.opts.detached,
        }),
    );
    if (r.code !== 0) {
      throw runtimeError(`create container "${id}"`, await lastRuntimeError(logFile) ?? "");
    }
  }
}

/** The runtime's own message: the last line, without runc's logrus framing. */
function lastMessage(message: string): string {
  return message.replace(/^time="[^"]*" level=\w+ msg="(.*)"$/s, "$1").split("\n").pop() ??
    message;
}

/**
 * Classifies a failed kill: a process that already ended is NOT_FOUND, as
 * containerd's runc shim answers, so that StopPodSandbox treats it as stopped.
 */
export function killError(what: string, message: string): Error {
  const msg = lastMessage(message);
  if (/not running|process already finished|no such process/i.test(msg)) {
    return new NotFoundError(`Cannot ${what}: ${msg}`);
  }
  return runtimeError(what, message);
}

/**
 * crun's words for a container it has no state for: its `status` file or its directory under
 * the root is missing (runc and runsc say "does not exist").
 */
const CRUN_NO_STATE =
  /(error opening file `[^`]*\/status`|cannot open directory '[^']*'): No such file/;

/** Classifies a runtime's failure message (runc's and runsc's wording, and crun's). */
export function runtimeError(what: string, message: string): Error {
  const msg = lastMessage(message);
  if (/does not exist|not found/i.test(msg) || CRUN_NO_STATE.test(msg)) {
    return new NotFoundError(`Cannot ${what}: ${msg}`);
  }
  if (
    /not running|not paused|not in .?created.? state|cannot (start|pause|resume)|is (stopped|paused|running)/i
      .test(msg)
  ) {
    return new FailedPreconditionError(`Cannot ${what}: ${msg}`);
  }
  return new InternalError(`Cannot ${what}: ${msg || "the runtime failed"}`);
}

/** The last error the runtime wrote to its JSON log file, if any. */
export async function lastRuntimeError(logFile: string): Promise<string | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(logFile);
  } catch {
    return undefined;
  }
  let last: string | undefined;
  for (const record of jsonRecords(text)) {
    try {
      const j = JSON.parse(record);
      if (j.level === "error" && typeof j.msg === "string") last = j.msg;
    } catch { /* not JSON */ }
  }
  return last;
}

/**
 * The top-level JSON objects of a log, one per line (runc, crun) or written
 * back to back without a separator (runsc since 2023). Braces inside strings
 * are skipped; text between objects is dropped.
 */
export function jsonRecords(text: string): string[] {
  const out: string[] = [];
  let depth = 0, start = -1, inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === "\n") {
      // Records are single lines: one cut short (a runtime killed mid-write)
      // does not swallow the next.
      depth = 0;
      inString = false;
    } else if (inString) {
      if (c === "\\") i++;
      else if (c === '"') inString = false;
    } else if (c === '"') {
      if (depth > 0) inString = true;
    } else if (c === "{") {
      if (depth++ === 0) start = i;
    } else if (c === "}" && depth > 0) {
      if (--depth === 0) out.push(text.slice(start, i + 1));
    }
  }
  return out;
}
