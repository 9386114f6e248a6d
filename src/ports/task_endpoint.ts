/**
 * Port: the per-pod Task API endpoint whose address Controller.Start returns.
 *
 * @module
 */

/** Serves the Task API of one pod at an address containerd can dial. */
export interface TaskEndpoint {
  /** Starts serving the pod's Task API; returns the address (e.g. `ttrpc+unix:///…/task.sock`). */
  open(sandboxId: string): Promise<string>;
  /** Stops serving and removes the socket. Idempotent. */
  close(sandboxId: string): Promise<void>;
  /** Stops every endpoint (daemon shutdown). */
  closeAll(): Promise<void>;
}
