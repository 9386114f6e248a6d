/**
 * Node checks (`kuasar doctor`): what a kind needs of the node it runs on,
 * each found ok or not, with what to do about it.
 *
 * @module
 */

/**
 * ok: present and usable; warn: works, with a limit worth knowing; fail: the
 * kind (or the engine's path to it) cannot work until it is fixed; skip: not
 * checked, and why.
 */
export type CheckStatus = "ok" | "warn" | "fail" | "skip";

/** One finding. */
export interface NodeCheck {
  /** Stable identifier, e.g. `kvm`, `containerd.handler`. */
  readonly id: string;
  /** The kind it is about; absent for what every kind shares. */
  readonly kind?: string;
  readonly status: CheckStatus;
  /** What was found, in a sentence. */
  readonly detail: string;
  /** What to do about a warn or fail. */
  readonly fix?: string;
}

/** The counts and the exit code of a set of checks: non-zero when a required check failed. */
export function doctorVerdict(
  checks: readonly NodeCheck[],
): { ok: number; warn: number; fail: number; skip: number; exitCode: number } {
  const n = { ok: 0, warn: 0, fail: 0, skip: 0 };
  for (const c of checks) n[c.status]++;
  return { ...n, exitCode: n.fail ? 1 : 0 };
}
