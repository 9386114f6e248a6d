/**
 * A ContainerRuntime for kinds whose containers the daemon does not run
 * (Quark serves its own Task API): every call is answered UNIMPLEMENTED with
 * `reason`, it declares no capability, and removal and recovery have nothing
 * to do.
 *
 * @module
 */
import { UnimplementedError } from "../../domain/errors.ts";
import type { ContainerRuntime } from "../../ports/container_runtime.ts";

export function unsupportedRuntime(reason: string): ContainerRuntime {
  const refuse = () => Promise.reject(new UnimplementedError(reason));
  return {
    capabilities: {},
    lacking: { exec: reason, pause: reason, update: reason, stats: reason },
    create: refuse,
    start: refuse,
    kill: refuse,
    delete: () => Promise.resolve(),
    pids: refuse,
    resizePty: refuse,
    closeStdin: refuse,
    recover: () => Promise.resolve(undefined),
    setExitListener: () => {},
  };
}
