/**
 * The messages between the Wasm host and its workers, and the limits both sides keep.
 *
 * @module
 */
import type { WasmtimeRun } from "../engines/wasmtime_ffi.ts";

/** Host -> worker: run a module. */
export interface RunMessage {
  readonly t: "run";
  readonly module: WebAssembly.Module;
  readonly func: string;
  readonly args: string[];
  readonly env: string[];
  readonly preopens: { guest: string; host: string }[];
  readonly stdin: SharedArrayBuffer | null;
  /** One Int32: output bytes posted and not yet written by the host (see `OUTPUT_LIMIT`). */
  readonly output: SharedArrayBuffer;
}

/**
 * Output a module may have posted to the host and not yet written before its
 * `fd_write` blocks: a module printing without end must not fill the host's
 * memory when its reader is slow.
 */
export const OUTPUT_LIMIT = 1 << 20;

/** Host -> carrier: start Wasmtime run `id` with libwasmtime at `lib`. */
export interface WasmtimeRunMessage {
  readonly t: "wasmtime-run";
  readonly id: number;
  readonly lib: string;
  readonly run: WasmtimeRun;
}

/** Host -> carrier: interrupt run `id` (now, or as soon as its engine exists). */
export interface WasmtimeKillMessage {
  readonly t: "wasmtime-kill";
  readonly id: number;
}

/** Carrier -> host: run `id` ended. */
export interface WasmtimeExitMessage {
  readonly t: "wasmtime-exit";
  readonly id: number;
  readonly status: number;
  readonly message?: string;
}

/** Worker -> host. */
export type WorkerMessage =
  | { readonly t: "out"; readonly id?: number; readonly fd: 1 | 2; readonly data: Uint8Array }
  | {
    readonly t: "exit";
    readonly id?: number;
    readonly status: number;
    readonly message?: string;
  };

/** Exit status of a trapped module (as Wasmtime's CLI reports it: 128 + SIGABRT). */
export const TRAP_STATUS = 134;

/** Host -> carrier: run a module (one with yield points) among others. */
export interface SharedRunMessage extends Omit<RunMessage, "t"> {
  readonly t: "shared-run";
  readonly id: number;
  /** The carrier's count of turns its modules gave up (one Int32, see shared_carriers.ts). */
  readonly turns: SharedArrayBuffer;
}

/** Host -> carrier: end shared run `id`. */
export interface SharedKillMessage {
  readonly t: "shared-kill";
  readonly id: number;
}

/** Any message to a worker. */
export type HostMessage =
  | RunMessage
  | SharedRunMessage
  | SharedKillMessage
  | WasmtimeRunMessage
  | WasmtimeKillMessage;
