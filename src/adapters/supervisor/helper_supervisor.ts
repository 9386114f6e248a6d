/**
 * The Supervisor port on the native helper: `monitor` runs a process as its
 * parent (stdio, pty, exit record), `hold` keeps a pod's namespaces, `detach`
 * starts a long-lived process in its own session, `exec` is the launcher.
 * Every one of them outlives the daemon; their exit records are what a
 * restarted daemon follows.
 *
 * @module
 */
import type {
  CommandResult,
  HoldOptions,
  MonitoredProcess,
  RunOptions,
  StdioSource,
  SupervisedProcess,
  Supervisor,
} from "../../ports/supervisor.ts";
import { runCommand } from "../os/command.ts";
import { mountFlags } from "../os/syscalls.ts";
import type { ExitWatcher } from "./exit_watcher.ts";
import { startHelper } from "./helper.ts";
import { killByCommandLine } from "./process_tokens.ts";

/** Processes started and followed through the native helper. */
export class HelperSupervisor implements Supervisor {
  readonly binary: string;
  readonly exits: ExitWatcher;

  constructor(binary: string, exits: ExitWatcher) {
    this.binary = binary;
    this.exits = exits;
  }

  run(argv: readonly string[], opts: RunOptions = {}): Promise<CommandResult> {
    return runCommand(opts.detached ? [this.binary, "exec", "--", ...argv] : argv, opts);
  }

  async startMonitored(p: MonitoredProcess, stdio?: StdioSource): Promise<SupervisedProcess> {
    await this.exits.remove(p.token);
    let s: { args: string[]; consoleSocket?: string } = { args: [] };
    if (p.io) {
      if (!stdio) throw new Error("startMonitored: stdio without a StdioSource");
      s = await stdio.monitorArgs(p.token, p.io);
    }
    const args = ["monitor", "--exit-file", this.exits.path(p.token)];
    if (p.pidFile) args.push("--pid-file", p.pidFile);
    args.push(...s.args, "--log", p.monitorLog);
    if (p.waitArgv) args.push("--wait", String(p.waitArgv.length), ...p.waitArgv);
    for (const f of p.cgroupProcs ?? []) args.push("--cgroup", f);
    for (const m of p.rootfsMounts ?? []) {
      const { flags, data } = mountFlags(m.options);
      args.push("--rootfs-mount", m.target, m.source, m.type, String(flags), data);
    }
    if (p.rootfsMounts?.length && p.logFile) args.push("--runtime-log", p.logFile);
    args.push("--", ...p.argv(s.consoleSocket));
    return await startHelper(this.binary, args);
  }

  async hold(token: string, o: HoldOptions): Promise<SupervisedProcess> {
    const args = ["hold", "--exit-file", this.exits.path(token)];
    if (o.netnsPath) args.push("--netns", o.netnsPath);
    else if (o.hostNetwork) args.push("--host-netns");
    else args.push("--new-netns");
    if (o.hostUts) args.push("--host-uts");
    else if (o.hostname) args.push("--hostname", o.hostname);
    if (o.hostIpc) args.push("--host-ipc");
    for (const [k, v] of o.sysctls ?? []) args.push("--sysctl", `${k}=${v}`);
    if (o.shmSize) args.push("--shm-size", o.shmSize);
    return await startHelper(this.binary, args);
  }

  detach(argv: readonly string[], logFile: string): Promise<SupervisedProcess> {
    return startHelper(this.binary, ["detach", "--log", logFile, "--", ...argv]);
  }

  killOrphans(token: string): Promise<number> {
    return killByCommandLine(this.exits.needle(token));
  }
}
