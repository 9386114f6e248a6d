/**
 * The Wasm host: one long-lived process per Wasm sandboxer that runs every
 * pod's modules (`kuasar wasm-host`, started detached by the sandboxer). It
 * is separate from the sandboxer so that modules keep running, and their
 * exits keep being recorded, while the sandboxer restarts; it writes the
 * same exit records as the native monitor, so the sandboxer's exit watcher
 * serves both.
 *
 * @module
 */
import {
  AlreadyExistsError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
} from "../../../domain/errors.ts";
import { log } from "../../../lib/log.ts";
import { toStatus } from "../../rpc_status.ts";
import { ignoredByDefault } from "../../os/signals.ts";
import { CliEngine, wasmedgeArgv, wasmtimeRunArgv } from "./cli_engine.ts";
import { EmbeddedEngine } from "./embedded_engine.ts";
import type { HostEngine, PreparedTask, RunningTask, TaskEnd } from "./engine.ts";
import { type EngineName, request, type TaskInfo, type TaskSpec } from "./protocol.ts";
import { TaskIo } from "./task_io.ts";
import { WasmtimeEngine } from "./wasmtime_engine.ts";

/** Settings of a host process. */
export interface WasmHostOptions {
  /** Control socket. */
  readonly control: string;
  /** Workers of the embedded engine kept warm. */
  readonly warm: number;
  /** libwasmtime.so for the Wasmtime engine (C API). */
  readonly wasmtimeLib?: string;
  /** `wasmtime` CLI, used when the library is not there. */
  readonly wasmtimeCli?: string;
  /** `wasmedge` CLI. */
  readonly wasmedge?: string;
  /** Engine factories (tests add fakes here); by name. */
  readonly extraEngines?: ReadonlyMap<string, () => HostEngine>;
}

interface HostTask {
  readonly spec: TaskSpec;
  readonly prepared: PreparedTask;
  readonly io: TaskIo;
  state: TaskInfo["state"];
  running?: RunningTask;
  finished?: Promise<void>;
}

const te = new TextEncoder();

/** Writes an exit record the way the native helper does (tmp file, then rename). */
export async function writeExitRecord(path: string, pid: number, status: number): Promise<void> {
  const ms = performance.timeOrigin + performance.now();
  const sec = Math.floor(ms / 1000);
  const nsec = Math.floor((ms - sec * 1000) * 1e6);
  const tmp = `${path}.tmp`;
  await Deno.writeTextFile(
    tmp,
    JSON.stringify({ pid, status, exited_sec: sec, exited_nsec: nsec }) + "\n",
    { mode: 0o600 },
  );
  await Deno.rename(tmp, path);
}

/** The host's task table and engines. */
export class WasmHost {
  #opts: WasmHostOptions;
  #tasks = new Map<string, HostTask>();
  #engines = new Map<string, HostEngine>();
  #log = log.with({ component: "wasm-host" });

  constructor(opts: WasmHostOptions) {
    this.#opts = opts;
    this.#engines.set(
      "embedded",
      new EmbeddedEngine({ warm: opts.warm, maxIdle: 16, idleMs: 60_000 }),
    );
  }

  /** Handles one decoded request; returns the response fields. */
  async handle(raw: unknown): Promise<Record<string, unknown>> {
    const parsed = request.safeParse(raw);
    if (!parsed.success) {
      throw new InvalidArgumentError(`Malformed wasm-host request: ${parsed.error.message}`);
    }
    const req = parsed.data;
    switch (req.op) {
      case "ping":
        return { pid: Deno.pid };
      case "create":
        await this.create(req.task);
        return {};
      case "start":
        this.start(req.token);
        return {};
      case "kill":
        await this.kill(req.token, req.signal);
        return {};
      case "close-stdin":
        await this.#task(req.token).io.closeStdin();
        return {};
      case "delete":
        await this.delete(req.token);
        return {};
      case "list":
        return {
          tasks: [...this.#tasks.entries()].map(([token, t]) => ({ token, state: t.state })),
        };
      case "quit":
        if ([...this.#tasks.values()].some((t) => t.state === "running")) {
          throw new FailedPreconditionError("Wasm tasks are still running");
        }
        return { quit: true };
    }
  }

  async create(spec: TaskSpec): Promise<void> {
    const old = this.#tasks.get(spec.token);
    if (old) {
      if (old.state !== "exited") throw new AlreadyExistsError(`Task "${spec.token}" exists`);
      await this.delete(spec.token);
    }
    const engine = this.#engine(spec.engine);
    const io = await TaskIo.prepare(spec);
    try {
      const prepared = await engine.prepare(spec);
      this.#tasks.set(spec.token, { spec, prepared, io, state: "created" });
    } catch (e) {
      io.close();
      throw e;
    }
  }

  start(token: string): void {
    const t = this.#task(token);
    if (t.state !== "created") {
      throw new FailedPreconditionError(`Task "${token}" is ${t.state}, not created`);
    }
    t.state = "running";
    const running = t.running = this.#engine(t.spec.engine).start(t.prepared, t.io);
    t.finished = running.done.then((end) => this.#finish(t, end));
  }

  async kill(token: string, signal: number): Promise<void> {
    const t = this.#task(token);
    if (t.state === "exited") throw new NotFoundError(`Task "${token}" already exited`);
    if (ignoredByDefault(signal)) return;
    if (t.state === "created") {
      t.state = "exited";
      await this.#record(t, { status: 128 + signal });
      return;
    }
    t.running!.kill(signal);
  }

  /** Forgets a task, stopping it first if it still runs. Unknown tokens are fine. */
  async delete(token: string): Promise<void> {
    const t = this.#tasks.get(token);
    if (!t) return;
    if (t.state === "running") {
      t.running!.kill(9);
      await t.finished;
    }
    t.io.close();
    this.#tasks.delete(token);
  }

  /** Stops everything (host shutdown). */
  async close(): Promise<void> {
    for (const token of [...this.#tasks.keys()]) await this.delete(token);
    for (const e of this.#engines.values()) e.close();
  }

  get running(): number {
    return [...this.#tasks.values()].filter((t) => t.state === "running").length;
  }

  async #finish(t: HostTask, end: TaskEnd): Promise<void> {
    if (end.message) {
      this.#log.warn("wasm task ended abnormally", {
        token: t.spec.token,
        status: end.status,
        reason: end.message,
      });
      await t.io.write(2, te.encode(`kuasar-wasm: ${end.message}\n`));
    }
    await t.io.finish();
    t.state = "exited";
    await this.#record(t, end);
  }

  async #record(t: HostTask, end: TaskEnd): Promise<void> {
    try {
      await writeExitRecord(t.spec.exitFile, Deno.pid, end.status);
    } catch (e) {
      this.#log.error("cannot write exit record", { token: t.spec.token, error: e });
    }
  }

  #task(token: string): HostTask {
    const t = this.#tasks.get(token);
    if (!t) throw new NotFoundError(`Task "${token}" is unknown to the Wasm host`);
    return t;
  }

  #engine(name: EngineName | string): HostEngine {
    const have = this.#engines.get(name);
    if (have) return have;
    let e: HostEngine | undefined;
    const extra = this.#opts.extraEngines?.get(name);
    if (extra) e = extra();
    else if (name === "wasmtime" && this.#opts.wasmtimeLib) {
      e = new WasmtimeEngine(this.#opts.wasmtimeLib);
    } else if (name === "wasmedge" && this.#opts.wasmedge) {
      e = new CliEngine("wasmedge", this.#opts.wasmedge, wasmedgeArgv);
    } else if (name === "wasmtime" && this.#opts.wasmtimeCli) {
      e = new CliEngine("wasmtime", this.#opts.wasmtimeCli, wasmtimeRunArgv);
    }
    if (!e) {
      throw new FailedPreconditionError(
        `The ${name} engine is not installed on this node (see [wasm] in the sandboxer's config)`,
      );
    }
    this.#engines.set(name, e);
    return e;
  }
}

/** Serves the control socket until a `quit`; the process then exits. */
export async function serveWasmHost(opts: WasmHostOptions): Promise<void> {
  const host = new WasmHost(opts);
  await Deno.remove(opts.control).catch(() => {});
  const listener = Deno.listen({ transport: "unix", path: opts.control });
  await Deno.chmod(opts.control, 0o600);
  log.info("wasm host serving", { control: opts.control, pid: Deno.pid });
  let quitting = false;
  for await (const conn of listener) {
    serveConnection(host, conn, () => {
      quitting = true;
      listener.close();
    });
    if (quitting) break;
  }
  await host.close();
  await Deno.remove(opts.control).catch(() => {});
}

async function serveConnection(host: WasmHost, conn: Deno.Conn, quit: () => void): Promise<void> {
  const td = new TextDecoder();
  let pending = "";
  let writes = Promise.resolve();
  const reply = (obj: Record<string, unknown>) => {
    const line = te.encode(JSON.stringify(obj) + "\n");
    writes = writes.then(async () => {
      for (let off = 0; off < line.length;) off += await conn.write(line.subarray(off));
    }).catch(() => {});
  };
  const buf = new Uint8Array(64 * 1024);
  try {
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      pending += td.decode(buf.subarray(0, n), { stream: true });
      if (pending.length > 4 << 20) throw new Error("request line too long");
      let nl: number;
      while ((nl = pending.indexOf("\n")) >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        let id = 0;
        (async () => {
          try {
            const msg = JSON.parse(line);
            id = typeof msg?.id === "number" ? msg.id : 0;
            const out = await host.handle(msg);
            reply({ id, ok: true, ...out });
            if (out.quit) {
              await writes;
              quit();
            }
          } catch (e) {
            reply({ id, ok: false, error: toStatus(e) });
          }
        })();
      }
    }
  } catch { /* peer gone */ }
  await writes;
  try {
    conn.close();
  } catch { /* closed */ }
}
