/**
 * Starting a container process (init or exec) under the monitor helper, the
 * same way for every runtime CLI (runc, runsc): stdio from the Task API's Io,
 * an exit record named after the process token, the runtime's pid file.
 *
 * @module
 */
import type { Io } from "../../domain/task.ts";
import type { ExitWatcher } from "./exit_watcher.ts";
import { type HelperProcess, startHelper } from "./helper.ts";
import type { ProcessIo } from "./process_io.ts";

/** What launching a monitored process needs. */
export interface MonitorDeps {
  readonly helper: string;
  readonly exits: ExitWatcher;
  /** Needed when a process has Task API stdio. */
  readonly io?: ProcessIo;
}

/** One process to launch. */
export interface MonitoredProcess {
  /** Exit-record token (process_tokens.ts). */
  readonly token: string;
  /** The Task API's stdio; unset: /dev/null. */
  readonly io?: Io;
  /** Where the runtime writes the process pid; unset: the command is the process. */
  readonly pidFile?: string;
  /** The monitor's own log. */
  readonly monitorLog: string;
  /** The runtime command; given the console socket when the process has a terminal. */
  readonly argv: (consoleSocket?: string) => string[];
  /**
   * A command whose output carries the exit (`{"exitStatus":N}`), for
   * processes that are not host processes (gVisor's); `{pid}` is replaced.
   */
  readonly waitArgv?: readonly string[];
  /** cgroup.procs files the process starts in (the monitor joins them before it forks). */
  readonly cgroupProcs?: readonly string[];
}

/** Launches `p` under a monitor; throws HelperFailedError when the runtime fails. */
export async function startMonitored(
  deps: MonitorDeps,
  p: MonitoredProcess,
): Promise<HelperProcess> {
  await deps.exits.remove(p.token);
  let stdio: { args: string[]; consoleSocket?: string } = { args: [] };
  if (p.io) {
    if (!deps.io) throw new Error("startMonitored: stdio without a ProcessIo");
    stdio = await deps.io.monitorArgs(p.token, p.io);
  }
  const args = ["monitor", "--exit-file", deps.exits.path(p.token)];
  if (p.pidFile) args.push("--pid-file", p.pidFile);
  args.push(...stdio.args, "--log", p.monitorLog);
  if (p.waitArgv) args.push("--wait", String(p.waitArgv.length), ...p.waitArgv);
  for (const f of p.cgroupProcs ?? []) args.push("--cgroup", f);
  args.push("--", ...p.argv(stdio.consoleSocket));
  const h = await startHelper(deps.helper, args);
  h.exited.then(() => deps.exits.check(p.token));
  return h;
}
