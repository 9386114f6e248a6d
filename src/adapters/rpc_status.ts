/**
 * The one mapping between thrown errors and RPC statuses, used by the gRPC
 * and ttrpc servers and clients alike. Domain errors carry their code;
 * Deno's own I/O errors are classified here; everything else is INTERNAL.
 *
 * @module
 */
import {
  AlreadyExistsError,
  Code,
  type CodeValue,
  DeadlineExceededError,
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  KuasarError,
  NotFoundError,
  ResourceExhaustedError,
  UnavailableError,
  UnimplementedError,
} from "../domain/errors.ts";

/** A status as both protocols carry it. */
export interface RpcStatus {
  readonly code: CodeValue;
  readonly message: string;
}

/** The status to answer with for a thrown value. */
export function toStatus(err: unknown): RpcStatus {
  if (err instanceof KuasarError) return { code: err.code, message: err.message };
  const message = err instanceof Error ? err.message : String(err);
  if (err instanceof Deno.errors.NotFound) return { code: Code.NOT_FOUND, message };
  if (err instanceof Deno.errors.AlreadyExists) return { code: Code.ALREADY_EXISTS, message };
  if (err instanceof Deno.errors.PermissionDenied) return { code: Code.PERMISSION_DENIED, message };
  if (err instanceof Deno.errors.TimedOut) return { code: Code.DEADLINE_EXCEEDED, message };
  if (err instanceof DOMException && err.name === "AbortError") {
    return { code: Code.CANCELLED, message };
  }
  return { code: Code.INTERNAL, message };
}

/** The error class a client raises for a status it received. */
export function fromStatus(code: number, message: string): KuasarError {
  switch (code) {
    case Code.INVALID_ARGUMENT:
      return new InvalidArgumentError(message);
    case Code.NOT_FOUND:
      return new NotFoundError(message);
    case Code.ALREADY_EXISTS:
      return new AlreadyExistsError(message);
    case Code.FAILED_PRECONDITION:
      return new FailedPreconditionError(message);
    case Code.UNIMPLEMENTED:
      return new UnimplementedError(message);
    case Code.RESOURCE_EXHAUSTED:
      return new ResourceExhaustedError(message);
    case Code.UNAVAILABLE:
      return new UnavailableError(message);
    case Code.DEADLINE_EXCEEDED:
      return new DeadlineExceededError(message);
    case Code.INTERNAL:
      return new InternalError(message);
    default:
      return new KuasarError(isCode(code) ? code : Code.UNKNOWN, message);
  }
}

function isCode(n: number): n is CodeValue {
  return (Object.values(Code) as number[]).includes(n);
}
