/**
 * A `Supervisor` for unit tests of the adapters: records every command and
 * process it is asked for, answers commands from a script, hands out pids,
 * and keeps exit records in memory, delivered when the test says a process
 * ended. Nothing is started on the host.
 *
 * @module
 */
import {
  type CommandResult,
  type ExitHandlers,
  type ExitRecord,
  type ExitRecords,
  type HoldOptions,
  type MonitoredProcess,
  ProcessStartError,
  type RunOptions,
  type StdioSource,
  type SupervisedProcess,
  type Supervisor,
} from "../../src/ports/supervisor.ts";
import { now } from "../../src/domain/time.ts";

/** One command run to completion. */
export interface RunCall {
  readonly argv: readonly string[];
  readonly opts: RunOptions;
}

/** One process started under a monitor: its argv as the runtime would get it. */
export interface MonitoredCall extends Omit<MonitoredProcess, "argv"> {
  readonly argv: readonly string[];
  /** The monitor flags of its stdio, when it had Task API stdio. */
  readonly stdioArgs?: readonly string[];
}

/** Exit records in memory. */
export class MemoryExitRecords implements ExitRecords {
  readonly records = new Map<string, ExitRecord>();
  readonly watches = new Map<string, { helperPid: number; handlers: ExitHandlers }>();
  /** Tokens whose writer runs (`alive`). */
  readonly running = new Set<string>();

  path(token: string): string {
    return `/exits/${token}`;
  }

  expect(token: string, helperPid: number, handlers: ExitHandlers): void {
    this.watches.set(token, { helperPid, handlers });
    const rec = this.records.get(token);
    if (rec) this.#deliver(token, rec);
  }

  cancel(token: string): void {
    this.watches.delete(token);
  }

  read(token: string): Promise<ExitRecord | undefined> {
    return Promise.resolve(this.records.get(token));
  }

  alive(token: string, _helperPid: number): Promise<boolean> {
    return Promise.resolve(this.running.has(token));
  }

  remove(token: string): Promise<void> {
    this.records.delete(token);
    this.watches.delete(token);
    return Promise.resolve();
  }

  /** The process of `token` ended with `status`: its record appears, its watch fires. */
  async exit(token: string, status: number, pid = 0): Promise<void> {
    this.running.delete(token);
    const rec = { pid, status, at: now() };
    this.records.set(token, rec);
    await this.#deliver(token, rec);
  }

  /** Its supervisor vanished without a record. */
  lose(token: string): void {
    this.running.delete(token);
    const w = this.watches.get(token);
    this.watches.delete(token);
    w?.handlers.lost?.();
  }

  async #deliver(token: string, rec: ExitRecord): Promise<void> {
    const w = this.watches.get(token);
    if (!w) return;
    this.watches.delete(token);
    await w.handlers.exited(rec);
  }
}

/** Records what adapters ask of their supervisor. */
export class RecordingSupervisor implements Supervisor {
  readonly binary: string;
  readonly exits = new MemoryExitRecords();
  readonly runs: RunCall[] = [];
  readonly monitored: MonitoredCall[] = [];
  readonly holds: { token: string; opts: HoldOptions }[] = [];
  readonly detached: { argv: readonly string[]; logFile: string }[] = [];
  readonly orphanKills: string[] = [];
  /** Every process handed out, in order (pids to compare what adapters report with). */
  readonly started: SupervisedProcess[] = [];
  /** Answers a command; default: exit 0, no output. */
  answer: (argv: readonly string[], opts: RunOptions) => CommandResult | Promise<CommandResult> =
    () => ({ code: 0, stdout: "", stderr: "" });
  /** Runs when a monitored process starts (write its pid file…); throw to fail the start. */
  onMonitored: (p: MonitoredCall) => void | Promise<void> = () => {};
  /** The status a failing monitored runtime reports (with `failNextMonitored`). */
  failNextMonitored: number | undefined;
  /** Above the kernel's largest pid_max: a signal to one reaches no real process. */
  #nextPid = 4_200_000;
  /** The pids of the next process started, when a test needs real ones. */
  nextProcess: { pid: number; helperPid: number } | undefined;

  constructor(binary = "/fake/kuasar-helper") {
    this.binary = binary;
  }

  async run(argv: readonly string[], opts: RunOptions = {}): Promise<CommandResult> {
    this.runs.push({ argv: [...argv], opts });
    return await this.answer(argv, opts);
  }

  async startMonitored(p: MonitoredProcess, stdio?: StdioSource): Promise<SupervisedProcess> {
    // As the helper's: a record left by an earlier process of the token is gone first.
    await this.exits.remove(p.token);
    const s = p.io && stdio ? await stdio.monitorArgs(p.token, p.io) : undefined;
    const call: MonitoredCall = { ...p, argv: p.argv(s?.consoleSocket), stdioArgs: s?.args };
    this.monitored.push(call);
    await this.onMonitored(call);
    if (this.failNextMonitored !== undefined) {
      const status = this.failNextMonitored;
      this.failNextMonitored = undefined;
      throw new ProcessStartError(`runtime exited with status ${status}`, status);
    }
    this.exits.running.add(p.token);
    return this.#process();
  }

  hold(token: string, opts: HoldOptions): Promise<SupervisedProcess> {
    this.holds.push({ token, opts });
    this.exits.running.add(token);
    return Promise.resolve(this.#process());
  }

  detach(argv: readonly string[], logFile: string): Promise<SupervisedProcess> {
    this.detached.push({ argv: [...argv], logFile });
    return Promise.resolve(this.#process());
  }

  killOrphans(token: string): Promise<number> {
    this.orphanKills.push(token);
    return Promise.resolve(0);
  }

  #process(): SupervisedProcess {
    const given = this.nextProcess;
    this.nextProcess = undefined;
    const helperPid = given?.helperPid ?? this.#nextPid++;
    const pid = given?.pid ?? this.#nextPid++;
    const p = { helperPid, pid };
    this.started.push(p);
    return p;
  }
}
