/**
 * A ContainerRuntime for kinds whose containers the daemon does not run
 * (Quark serves its own Task API; VM pods before their agent runs
 * containers): every call is answered UNIMPLEMENTED with `reason`, and
 * removal and recovery have nothing to do.
 *
 * @module
 */
import { UnimplementedError } from "../../domain/errors.ts";
import type { ContainerRuntime } from "../../ports/container_runtime.ts";

export function unsupportedRuntime(reason: string): ContainerRuntime {
  const refuse = () => Promise.reject(new UnimplementedError(reason));
  return {
    create: refuse,
    start: refuse,
    startExec: refuse,
    kill: refuse,
    delete: () => Promise.resolve(),
    deleteExec: () => Promise.resolve(),
    pids: refuse,
    pause: refuse,
    resume: refuse,
    update: refuse,
    stats: refuse,
    resizePty: refuse,
    closeStdin: refuse,
    recover: () => Promise.resolve(undefined),
    setExitListener: () => {},
  };
}
