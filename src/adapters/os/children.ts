/**
 * Who spawned which child. In a VM the guest agent is PID 1 and reaps the
 * orphans it inherits; a child Deno itself started must be left to Deno's
 * own wait (reaping it first makes that wait fail with ECHILD). Every spawn
 * site reports its child here, and PID 1 installs the tracker.
 *
 * @module
 */

/** Told of a spawned child; returns what to call once Deno has waited for it. */
export type ChildTracker = (pid: number) => () => void;

let tracker: ChildTracker | undefined;

/** Installs the tracker (the guest agent as PID 1). */
export function trackChildren(t: ChildTracker): void {
  tracker = t;
}

/** Reports a child just spawned; call synchronously after `spawn()`. */
export function spawned(child: Deno.ChildProcess): Deno.ChildProcess {
  if (tracker) {
    const release = tracker(child.pid);
    child.status.then(release, release);
  }
  return child;
}
