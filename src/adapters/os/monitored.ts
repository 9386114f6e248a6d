/**
 * Starting a container process (init or exec) under the monitor helper, the
 * same way for every runtime CLI (runc, runsc): stdio from the Task API's Io,
 * an exit record named after the process token, the runtime's pid file.
 *
 * @module
 */
import { join } from "node:path";
import type { Io } from "../../domain/task.ts";
import type { ExitWatcher } from "./exit_watcher.ts";
import { type HelperProcess, startHelper } from "./helper.ts";
import type { ProcessIo } from "./process_io.ts";

/** What launching a monitored process needs. */
export interface MonitorDeps {
  readonly helper: string;
  readonly exits: ExitWatcher;
  readonly io: ProcessIo;
}

/** One process to launch. */
export interface MonitoredProcess {
  /** Exit-record token (process_tokens.ts). */
  readonly token: string;
  readonly io: Io;
  /** Where the runtime writes the process pid. */
  readonly pidFile: string;
  /** Directory for the monitor's own log. */
  readonly stateDir: string;
  /**
   * The runtime command; given the console socket when the process has a
   * terminal. It must not contain "--": the monitor reads a second "--" as
   * the start of the wait command.
   */
  readonly argv: (consoleSocket?: string) => string[];
  /**
   * A command whose output carries the exit (`{"exitStatus":N}`), for
   * processes that are not host processes (gVisor's); `{pid}` is replaced.
   */
  readonly waitArgv?: readonly string[];
}

/** Launches `p` under a monitor; throws HelperFailedError when the runtime fails. */
export async function startMonitored(
  deps: MonitorDeps,
  p: MonitoredProcess,
): Promise<HelperProcess> {
  await deps.exits.remove(p.token);
  const stdio = await deps.io.monitorArgs(p.token, p.io);
  const args = [
    "monitor",
    "--exit-file",
    deps.exits.path(p.token),
    "--pid-file",
    p.pidFile,
    ...stdio.args,
    "--log",
    join(p.stateDir, "monitor.log"),
    "--",
    ...p.argv(stdio.consoleSocket),
  ];
  if (p.waitArgv) args.push("--", ...p.waitArgv);
  const h = await startHelper(deps.helper, args);
  h.exited.then(() => deps.exits.check(p.token));
  return h;
}
