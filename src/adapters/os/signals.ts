/**
 * Signal numbers as the Task API carries them, and Deno's names for them.
 *
 * @module
 */
import { InvalidArgumentError } from "../../domain/errors.ts";

const SIGNALS: Record<number, Deno.Signal> = {
  1: "SIGHUP",
  2: "SIGINT",
  3: "SIGQUIT",
  6: "SIGABRT",
  9: "SIGKILL",
  10: "SIGUSR1",
  12: "SIGUSR2",
  14: "SIGALRM",
  15: "SIGTERM",
  17: "SIGCHLD",
  18: "SIGCONT",
  19: "SIGSTOP",
  20: "SIGTSTP",
  28: "SIGWINCH",
};

/** Signals whose default action is to do nothing (a process without handlers ignores them). */
const IGNORED_BY_DEFAULT = new Set([17, 18, 23, 28]); // SIGCHLD SIGCONT SIGURG SIGWINCH

/** Deno's name for signal `n`; INVALID_ARGUMENT for one it cannot send. */
export function signalName(n: number): Deno.Signal {
  const s = SIGNALS[n];
  if (!s) throw new InvalidArgumentError(`Unsupported signal ${n}`);
  return s;
}

/** The number of a signal Deno names, 9 for an unknown one. */
export function signalNumber(name: string): number {
  for (const [n, s] of Object.entries(SIGNALS)) if (s === name) return Number(n);
  return 9;
}

/** Whether a process that handles no signals ignores `n`. */
export function ignoredByDefault(n: number): boolean {
  return IGNORED_BY_DEFAULT.has(n);
}
