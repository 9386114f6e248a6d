/**
 * Identifier rules. Sandbox, container and exec ids become directory and file
 * names under `--dir`, so they are checked before anything touches the disk:
 * the rule is containerd's own (`identifiers.Validate`): alphanumerics joined
 * by single `.`, `_` or `-`, at most 76 characters. That excludes `/`, `..`,
 * NUL and empty ids by construction.
 *
 * @module
 */
import { InvalidArgumentError } from "./errors.ts";

const ID_PATTERN = /^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$/;

/** The longest id containerd accepts. */
export const MAX_ID_LENGTH = 76;

/** What an id names, for error messages. */
export type IdKind = "sandbox" | "container" | "exec";

/**
 * Returns `value` when it is a valid id, throws `InvalidArgumentError` otherwise.
 *
 * @example
 * ```ts
 * validateId("sandbox", "3f2a"); // "3f2a"
 * validateId("sandbox", "../../etc"); // throws InvalidArgumentError
 * ```
 */
export function validateId(kind: IdKind, value: string): string {
  if (value.length === 0) throw new InvalidArgumentError(`Invalid ${kind} id: id is empty`);
  if (value.length > MAX_ID_LENGTH) {
    throw new InvalidArgumentError(
      `Invalid ${kind} id "${value.slice(0, 20)}...": longer than ${MAX_ID_LENGTH} characters`,
    );
  }
  if (!ID_PATTERN.test(value)) {
    throw new InvalidArgumentError(
      `Invalid ${kind} id ${
        JSON.stringify(value)
      }: only letters, digits and single ".", "_" or "-" between them are allowed`,
    );
  }
  return value;
}
