/**
 * The sandboxer's side of the Wasm host: starts it when none answers (it is
 * detached, so it outlives this daemon), and calls it over its control
 * socket with requests multiplexed by id on one connection.
 *
 * @module
 */
import { UnavailableError } from "../../domain/errors.ts";
import { log } from "../../lib/log.ts";
import { fromStatus } from "../rpc_status.ts";
import { helperAlive } from "../supervisor/exit_watcher.ts";
import { selfCommand } from "../os/self_command.ts";
import { sleep } from "../../lib/sync.ts";
import type { Request, TaskInfo, TaskSpec, WireError } from "./host/protocol.ts";
import type { StateLayout } from "../os/state_layout.ts";
import type { Supervisor } from "../../ports/supervisor.ts";

/** How the host is started. */
export interface WasmHostConfig {
  /** Where the daemon's entries are (the host's control socket and log among them). */
  readonly layout: StateLayout;
  readonly supervisor: Supervisor;
  readonly warm: number;
  readonly wasmtimeLib?: string;
  readonly wasmtimeCli?: string;
  readonly wasmedge?: string;
  readonly logLevel: string;
  /** argv that runs `kuasar` (default: this program). */
  readonly command?: string[];
}

type Pending = { resolve: (v: Record<string, unknown>) => void; reject: (e: Error) => void };

const START_TIMEOUT_MS = 30_000;

/** Client of the Wasm host. */
export class WasmHostClient {
  readonly control: string;
  #cfg: WasmHostConfig;
  #conn: Deno.Conn | undefined;
  #connecting: Promise<Deno.Conn> | undefined;
  #pending = new Map<number, Pending>();
  #nextId = 1;
  #pid = 0;
  #writes: Promise<void> = Promise.resolve();
  #log = log.with({ component: "wasm-host-client" });

  constructor(cfg: WasmHostConfig) {
    this.#cfg = cfg;
    this.control = cfg.layout.path("wasmHostSocket");
  }

  /**
   * What the host's command line contains: its control socket argument. The
   * exit watcher uses it to tell the host from a process that reused its pid.
   */
  get needle(): string {
    return `\0${this.control}\0`;
  }

  /** The host's pid, starting it if needed. */
  async ensure(): Promise<number> {
    await this.#connection();
    return this.#pid;
  }

  /** Whether a host answers right now (no start). */
  async alive(): Promise<boolean> {
    try {
      await Deno.stat(this.control);
      await this.#connection(false);
      return true;
    } catch {
      return false;
    }
  }

  async create(task: TaskSpec): Promise<void> {
    await this.#call({ op: "create", task });
  }

  async start(token: string): Promise<void> {
    await this.#call({ op: "start", token });
  }

  async kill(token: string, signal: number): Promise<void> {
    await this.#call({ op: "kill", token, signal });
  }

  async closeStdin(token: string): Promise<void> {
    await this.#call({ op: "close-stdin", token });
  }

  async delete(token: string): Promise<void> {
    await this.#call({ op: "delete", token });
  }

  async list(): Promise<TaskInfo[]> {
    return (await this.#call({ op: "list" })).tasks as TaskInfo[];
  }

  /** Ends the host if it runs and has no running task; resolves once it is gone. */
  async quit(): Promise<void> {
    if (!await this.alive()) return;
    const pid = this.#pid;
    try {
      await this.#call({ op: "quit" }, false);
    } catch (e) {
      this.#log.debug("wasm host kept", { reason: (e as Error).message });
      return;
    }
    this.close();
    for (let i = 0; i < 250 && await helperAlive(pid, this.needle); i++) await sleep(20);
  }

  close(): void {
    try {
      this.#conn?.close();
    } catch { /* closed */ }
    this.#conn = undefined;
  }

  // deno-lint-ignore no-explicit-any
  async #call(req: Record<string, unknown>, start = true): Promise<Record<string, any>> {
    const conn = await this.#connection(start);
    const id = this.#nextId++;
    const line = new TextEncoder().encode(JSON.stringify({ ...req, id } as Request) + "\n");
    const reply = new Promise<Record<string, unknown>>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
    });
    // Writes go out one after another: a partial write must not interleave with another call's.
    const write = this.#writes.then(async () => {
      for (let off = 0; off < line.length;) off += await conn.write(line.subarray(off));
    });
    this.#writes = write.catch(() => {});
    try {
      await write;
    } catch (e) {
      this.#pending.delete(id);
      this.#drop(conn);
      throw new UnavailableError(`The Wasm host went away: ${(e as Error).message}`);
    }
    const r = await reply;
    if (!r.ok) {
      const err = r.error as WireError;
      throw fromStatus(err.code, err.message);
    }
    return r;
  }

  #connection(start = true): Promise<Deno.Conn> {
    if (this.#conn) return Promise.resolve(this.#conn);
    this.#connecting ??= this.#connect(start).finally(() => (this.#connecting = undefined));
    return this.#connecting;
  }

  async #connect(start: boolean): Promise<Deno.Conn> {
    let conn = await this.#dial();
    if (!conn) {
      if (!start) throw new UnavailableError("The Wasm host is not running");
      await this.#start();
      const deadline = Date.now() + START_TIMEOUT_MS;
      while (!(conn = await this.#dial())) {
        if (Date.now() > deadline) {
          throw new UnavailableError(
            `The Wasm host did not come up on "${this.control}" (see ${
              this.#cfg.layout.path("wasmHostLog")
            })`,
          );
        }
        await sleep(20);
      }
    }
    this.#conn = conn;
    this.#read(conn);
    const pong = await this.#call({ op: "ping" }, false);
    this.#pid = Number(pong.pid);
    return conn;
  }

  async #dial(): Promise<Deno.Conn | undefined> {
    try {
      return await Deno.connect({ transport: "unix", path: this.control });
    } catch {
      return undefined;
    }
  }

  async #start(): Promise<void> {
    const c = this.#cfg;
    const argv = [
      ...(c.command ?? selfCommand()),
      "wasm-host",
      "--control",
      this.control,
      "--warm",
      String(c.warm),
      "--log-level",
      c.logLevel,
    ];
    if (c.wasmtimeLib) argv.push("--wasmtime-lib", c.wasmtimeLib);
    if (c.wasmtimeCli) argv.push("--wasmtime", c.wasmtimeCli);
    if (c.wasmedge) argv.push("--wasmedge", c.wasmedge);
    await Deno.remove(this.control).catch(() => {});
    const h = await c.supervisor.detach(argv, c.layout.path("wasmHostLog"));
    this.#log.info("wasm host started", { pid: h.pid });
  }

  async #read(conn: Deno.Conn): Promise<void> {
    const td = new TextDecoder();
    const buf = new Uint8Array(64 * 1024);
    let pending = "";
    try {
      for (;;) {
        const n = await conn.read(buf);
        if (n === null) break;
        pending += td.decode(buf.subarray(0, n), { stream: true });
        let nl: number;
        while ((nl = pending.indexOf("\n")) >= 0) {
          const msg = JSON.parse(pending.slice(0, nl));
          pending = pending.slice(nl + 1);
          const p = this.#pending.get(msg.id);
          this.#pending.delete(msg.id);
          p?.resolve(msg);
        }
      }
    } catch { /* connection broken */ }
    this.#drop(conn);
  }

  #drop(conn: Deno.Conn): void {
    if (this.#conn === conn) this.#conn = undefined;
    try {
      conn.close();
    } catch { /* closed */ }
    for (const p of this.#pending.values()) {
      p.reject(new UnavailableError("The Wasm host closed its control connection"));
    }
    this.#pending.clear();
  }
}
