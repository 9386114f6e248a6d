/**
 * The one error model of the project. Every layer throws these classes; the
 * transports (gRPC, ttrpc) turn them into status codes in exactly one place
 * (`src/adapters/rpc_status.ts`). Anything that is not a `KuasarError` is an
 * internal error.
 *
 * Codes carry the numeric values of google.rpc.Code, which both gRPC and ttrpc
 * use on the wire and containerd's errdefs map back to its error classes.
 *
 * @module
 */

/** google.rpc.Code values used by this project. */
export const Code = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
} as const;

/** A google.rpc.Code value. */
export type CodeValue = typeof Code[keyof typeof Code];

/** Base class: an error with a status code. */
export class KuasarError extends Error {
  /** The google.rpc.Code this error maps to. */
  readonly code: CodeValue;

  constructor(code: CodeValue, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
    this.name = "KuasarError";
  }
}

/** The request is malformed: bad id, bad JSON, missing field. */
export class InvalidArgumentError extends KuasarError {
  constructor(message: string, options?: ErrorOptions) {
    super(Code.INVALID_ARGUMENT, message, options);
    this.name = "InvalidArgumentError";
  }
}

/** The sandbox, container or process does not exist. */
export class NotFoundError extends KuasarError {
  constructor(message: string, options?: ErrorOptions) {
    super(Code.NOT_FOUND, message, options);
    this.name = "NotFoundError";
  }
}

/** The object already exists. */
export class AlreadyExistsError extends KuasarError {
  constructor(message: string, options?: ErrorOptions) {
    super(Code.ALREADY_EXISTS, message, options);
    this.name = "AlreadyExistsError";
  }
}

/** The object is in a state that does not allow the operation. */
export class FailedPreconditionError extends KuasarError {
  constructor(message: string, options?: ErrorOptions) {
    super(Code.FAILED_PRECONDITION, message, options);
    this.name = "FailedPreconditionError";
  }
}

/** A lifecycle transition that the state machine does not allow. */
export class InvalidTransitionError extends FailedPreconditionError {
  readonly from: string;
  readonly to: string;
  constructor(subject: string, from: string, to: string) {
    super(`Cannot move ${subject} from "${from}" to "${to}"`);
    this.from = from;
    this.to = to;
    this.name = "InvalidTransitionError";
  }
}

/** The operation is not supported by this sandbox kind. */
export class UnimplementedError extends KuasarError {
  constructor(message: string, options?: ErrorOptions) {
    super(Code.UNIMPLEMENTED, message, options);
    this.name = "UnimplementedError";
  }
}

/** A size or count limit was exceeded. */
export class ResourceExhaustedError extends KuasarError {
  constructor(message: string, options?: ErrorOptions) {
    super(Code.RESOURCE_EXHAUSTED, message, options);
    this.name = "ResourceExhaustedError";
  }
}

/** A dependency (runtime binary, agent, socket) cannot be reached right now. */
export class UnavailableError extends KuasarError {
  constructor(message: string, options?: ErrorOptions) {
    super(Code.UNAVAILABLE, message, options);
    this.name = "UnavailableError";
  }
}

/** A deadline passed before the operation finished. */
export class DeadlineExceededError extends KuasarError {
  constructor(message: string, options?: ErrorOptions) {
    super(Code.DEADLINE_EXCEEDED, message, options);
    this.name = "DeadlineExceededError";
  }
}

/** Something failed that the caller cannot fix: a runtime error, an I/O error. */
export class InternalError extends KuasarError {
  constructor(message: string, options?: ErrorOptions) {
    super(Code.INTERNAL, message, options);
    this.name = "InternalError";
  }
}

/** The status code of any thrown value: its own for a `KuasarError`, INTERNAL otherwise. */
export function codeOf(err: unknown): CodeValue {
  return err instanceof KuasarError ? err.code : Code.INTERNAL;
}

/** A one-line message for any thrown value. */
export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
