/**
 * The control protocol between the sandboxer and its Wasm host process:
 * JSON lines over a unix socket, each request `{id, op, ...}` answered by
 * `{id, ok: true, ...}` or `{id, ok: false, error: {code, message}}` with a
 * google.rpc code, so the host's errors reach containerd unchanged.
 *
 * @module
 */
import { z } from "zod";

/** The engines the host runs modules with. */
export const ENGINES = ["embedded", "wasmtime", "wasmedge"] as const;
export type EngineName = typeof ENGINES[number];

/** Everything the host needs to run one module. */
export const taskSpec = z.strictObject({
  /** Exit-record token (also the task's name in the host). */
  token: z.string().min(1).max(300),
  /** Where the host writes the exit record. */
  exitFile: z.string().min(1),
  engine: z.enum(ENGINES),
  /** Host path of the .wasm file. */
  module: z.string().min(1),
  /** Export to call (`_start` for a command module). */
  func: z.string().min(1),
  args: z.array(z.string()),
  env: z.array(z.string()),
  /** Guest directory -> host directory; `/` is the rootfs. */
  preopens: z.array(z.strictObject({ guest: z.string().min(1), host: z.string().min(1) })),
  /** Bytes; linear memory cannot grow past it. */
  memoryLimit: z.number().int().positive().optional(),
  /** FIFO/file paths, or "@stream" (framed over ioSocket). */
  stdin: z.string().optional(),
  stdout: z.string().optional(),
  stderr: z.string().optional(),
  ioSocket: z.string().optional(),
});
export type TaskSpec = z.infer<typeof taskSpec>;

/** A request to the host. */
export const request = z.discriminatedUnion("op", [
  z.strictObject({ id: z.number(), op: z.literal("ping") }),
  /** Prepares a task: compiles its module, opens its io socket. */
  z.strictObject({ id: z.number(), op: z.literal("create"), task: taskSpec }),
  z.strictObject({ id: z.number(), op: z.literal("start"), token: z.string() }),
  z.strictObject({
    id: z.number(),
    op: z.literal("kill"),
    token: z.string(),
    signal: z.number().int().min(1).max(64),
  }),
  z.strictObject({ id: z.number(), op: z.literal("close-stdin"), token: z.string() }),
  /** Forgets a task: stops it if needed and releases its io. */
  z.strictObject({ id: z.number(), op: z.literal("delete"), token: z.string() }),
  z.strictObject({ id: z.number(), op: z.literal("list") }),
  /** Ends the host (only when the sandboxer has no Wasm pod left). */
  z.strictObject({ id: z.number(), op: z.literal("quit") }),
]);
export type Request = z.infer<typeof request>;

/** A task as `list` reports it. */
export interface TaskInfo {
  readonly token: string;
  readonly state: "created" | "running" | "exited";
}

/** A failed request's error. */
export interface WireError {
  /** google.rpc.Code. */
  readonly code: number;
  readonly message: string;
}
