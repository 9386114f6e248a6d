/**
 * Engines used through their command line, one process per task: WasmEdge
 * (`wasmedge`), and Wasmtime's CLI when only that is installed. The argv
 * builders are pure and contract-tested against each tool's documented
 * flags; the process's stdio goes through the task's stdio like a module's
 * in the embedded engine.
 *
 * @module
 */
import { FailedPreconditionError } from "../../../domain/errors.ts";
import { signalName, signalNumber } from "../../os/signals.ts";
import { WASM_PAGE } from "../wasi/module.ts";
import type { HostEngine, PreparedTask, RunningTask, TaskEnd } from "./engine.ts";
import type { TaskSpec } from "./protocol.ts";
import type { TaskIo } from "./task_io.ts";

/**
 * `wasmedge` argv (0.13/0.14): preopens as `--dir guest:host`, env as
 * `--env K=V`, the limit in pages, a non-`_start` export through
 * `--reactor <module> <func>`; the module's own arguments follow the module.
 */
export function wasmedgeArgv(spec: TaskSpec): string[] {
  const a: string[] = [];
  for (const p of spec.preopens) a.push("--dir", `${p.guest}:${p.host}`);
  for (const e of spec.env) a.push("--env", e);
  if (spec.memoryLimit) {
    a.push("--memory-page-limit", String(Math.max(1, Math.floor(spec.memoryLimit / WASM_PAGE))));
  }
  if (spec.func !== "_start") a.push("--reactor", spec.module, spec.func);
  else a.push(spec.module);
  a.push(...spec.args.slice(1));
  return a;
}

/**
 * `wasmtime run` argv (v14 and later): `--dir host::guest`, `--env K=V`,
 * `-W max-memory-size=<bytes>`, `--invoke <func>` for another export, and
 * `--argv0` so the module sees its OCI args[0].
 */
export function wasmtimeRunArgv(spec: TaskSpec): string[] {
  const a = ["run"];
  for (const p of spec.preopens) a.push("--dir", `${p.host}::${p.guest}`);
  for (const e of spec.env) a.push("--env", e);
  if (spec.memoryLimit) a.push("-W", `max-memory-size=${spec.memoryLimit}`);
  if (spec.func !== "_start") a.push("--invoke", spec.func);
  if (spec.args[0]) a.push("--argv0", spec.args[0]);
  a.push(spec.module, ...spec.args.slice(1));
  return a;
}

/** An engine that runs `binary argv(spec)` per task. */
export class CliEngine implements HostEngine {
  readonly name: string;
  #binary: string;
  #argv: (spec: TaskSpec) => string[];

  constructor(name: string, binary: string, argv: (spec: TaskSpec) => string[]) {
    this.name = name;
    this.#binary = binary;
    this.#argv = argv;
  }

  async prepare(spec: TaskSpec): Promise<PreparedTask> {
    try {
      await Deno.stat(spec.module);
    } catch {
      throw new FailedPreconditionError(`The Wasm module "${spec.module}" does not exist`);
    }
    return { spec };
  }

  start(prepared: PreparedTask, io: TaskIo): RunningTask {
    const { spec } = prepared;
    let child: Deno.ChildProcess | undefined;
    let killed = 0;
    const done = (async (): Promise<TaskEnd> => {
      let input: WritableStreamDefaultWriter<Uint8Array> | undefined;
      await io.open(spec, spec.stdin ? (d) => d ? input?.write(d) : input?.close() : undefined)
        .catch(() => {});
      if (killed) return { status: 128 + killed };
      try {
        child = new Deno.Command(this.#binary, {
          args: this.#argv(spec),
          stdin: spec.stdin ? "piped" : "null",
          stdout: "piped",
          stderr: "piped",
        }).spawn();
      } catch (e) {
        return { status: 127, message: `cannot run ${this.#binary}: ${(e as Error).message}` };
      }
      if (spec.stdin) input = child.stdin.getWriter();
      const pump = async (s: ReadableStream<Uint8Array>, fd: 1 | 2) => {
        for await (const chunk of s) await io.write(fd, chunk);
      };
      const [st] = await Promise.all([
        child.status,
        pump(child.stdout, 1),
        pump(child.stderr, 2),
      ]);
      if (st.signal) return { status: 128 + (killed || signalNumber(st.signal)) };
      return { status: st.code };
    })();
    return {
      done,
      kill: (signal) => {
        killed = signal;
        try {
          child?.kill(signalName(signal));
        } catch { /* exited */ }
      },
    };
  }

  close(): void {}
}
