/**
 * A QMP client (QEMU Machine Protocol) on a unix socket: the greeting,
 * capabilities negotiation, commands one at a time, events, and device
 * hot-plug (blockdev-add + device_add; device_del completes with QEMU's
 * DEVICE_DELETED event, once the guest has let the device go).
 *
 * @module
 */
import { DeadlineExceededError, InternalError, UnavailableError } from "../../domain/errors.ts";

/** A QMP event. */
export interface QmpEvent {
  readonly event: string;
  readonly data?: Record<string, unknown>;
  readonly timestamp?: { seconds: number; microseconds: number };
}

/** A QMP command and its arguments. */
export interface QmpCommand {
  readonly execute: string;
  readonly arguments: Record<string, unknown>;
}

/** How a VMM says a device or block node it is asked to remove does not exist. */
export interface AlreadyGone {
  readonly device: RegExp;
  readonly node: RegExp;
}

/** QEMU's words. */
export const QEMU_GONE: AlreadyGone = { device: /DeviceNotFound/, node: /Failed to find node/ };

/** One QMP connection. */
export class QmpClient {
  #conn: Deno.Conn;
  #buf = "";
  #queue: Record<string, unknown>[] = [];
  #wake: (() => void) | undefined;
  #closed = false;
  #commands: Promise<unknown> = Promise.resolve();
  /** Called for every event QEMU sends. */
  onEvent: ((e: QmpEvent) => void) | undefined;
  #waiters = new Set<(e: QmpEvent) => void>();
  /** QEMU's version from the greeting. */
  version = "";

  private constructor(conn: Deno.Conn) {
    this.#conn = conn;
    this.#readLoop();
  }

  /**
   * Connects, retrying while the VMM has not created the socket yet, and negotiates
   * capabilities, all by `timeoutMs`. A VMM serves one QMP client at a time (the next is greeted
   * only once the first leaves), so this process takes turns per socket: a connection is had
   * once the previous one is closed.
   */
  static async connect(path: string, timeoutMs = 10_000): Promise<QmpClient> {
    const deadline = Date.now() + timeoutMs;
    const release = await QmpClient.#turn(path, deadline);
    for (;;) {
      let c: QmpClient | undefined;
      try {
        c = new QmpClient(await Deno.connect({ transport: "unix", path }));
        const greeting = await beforeDeadline(c.#next(), deadline);
        const qemu = (greeting.QMP as { version?: { qemu?: Record<string, number> } })?.version
          ?.qemu;
        if (qemu) c.version = `${qemu.major}.${qemu.minor}.${qemu.micro}`;
        await beforeDeadline(c.execute("qmp_capabilities"), deadline);
        c.#release = release;
        return c;
      } catch (e) {
        c?.close();
        if (Date.now() > deadline) {
          release();
          throw new UnavailableError(`Cannot reach QMP at "${path}": ${(e as Error).message}`);
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }

  /** The ends of the queues of this process's clients, by socket. */
  static #tails = new Map<string, Promise<void>>();
  #release: () => void = () => {};

  /** Waits for this process's turn at `path`; resolves with what ends the turn. */
  static async #turn(path: string, deadline: number): Promise<() => void> {
    const prev = QmpClient.#tails.get(path) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const tail = prev.then(() => mine);
    QmpClient.#tails.set(path, tail);
    tail.then(() => {
      if (QmpClient.#tails.get(path) === tail) QmpClient.#tails.delete(path);
    });
    try {
      await beforeDeadline(prev, deadline);
    } catch {
      release();
      throw new UnavailableError(`QMP at "${path}" stays busy with another call`);
    }
    return release;
  }

  /** Runs a command; resolves with its "return" value, throws with its "error". */
  execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    const run = this.#commands.then(async () => {
      const line = JSON.stringify(
        args ? { execute: command, arguments: args } : { execute: command },
      );
      await this.#conn.write(new TextEncoder().encode(line + "\n"));
      for (;;) {
        const msg = await this.#next();
        if ("return" in msg) return msg.return;
        if ("error" in msg) {
          const err = msg.error as { class?: string; desc?: string };
          throw new InternalError(`QMP ${command} failed: ${err.class}: ${err.desc}`);
        }
      }
    });
    this.#commands = run.catch(() => {});
    return run;
  }

  /** The VM's run state ("running", "paused", "shutdown"…). */
  async status(): Promise<string> {
    const r = await this.execute("query-status") as { status?: string };
    return r.status ?? "unknown";
  }

  /** The next event `pred` accepts, within `timeoutMs`. */
  waitEvent(pred: (e: QmpEvent) => boolean, timeoutMs: number): Promise<QmpEvent> {
    return new Promise((resolve, reject) => {
      const w = (e: QmpEvent) => {
        if (!pred(e)) return;
        clearTimeout(timer);
        this.#waiters.delete(w);
        resolve(e);
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(w);
        reject(new DeadlineExceededError(`No matching QMP event within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#waiters.add(w);
    });
  }

  /**
   * Hot-plugs a device on a new backend (a block node, a netdev): `backend` is added, then the
   * device; a device the VMM refuses takes its backend away again (`undo`).
   */
  async plug(
    backend: { readonly add: QmpCommand; readonly undo: QmpCommand },
    device: Record<string, unknown>,
  ): Promise<void> {
    await this.execute(backend.add.execute, backend.add.arguments);
    try {
      await this.execute("device_add", device);
    } catch (e) {
      await this.execute(backend.undo.execute, backend.undo.arguments).catch(() => {});
      throw e;
    }
  }

  /**
   * Unplugs device `id` and waits until the guest has released it, then deletes its disk. A
   * device already gone (a previous daemon's unplug completed while it was down) still has its
   * disk, which holds the host's device open: it goes too; a disk already gone is done.
   */
  async removeDisk(
    id: string,
    gone: AlreadyGone = QEMU_GONE,
    timeoutMs = 30_000,
  ): Promise<void> {
    const deleted = this.waitEvent(
      (e) => e.event === "DEVICE_DELETED" && e.data?.device === id,
      timeoutMs,
    );
    try {
      await this.execute("device_del", { id });
      await deleted;
    } catch (e) {
      deleted.catch(() => {});
      if (!gone.device.test(String(e))) throw e;
    }
    await this.execute("blockdev-del", { "node-name": id }).catch((e) => {
      if (!gone.node.test(String(e))) throw e;
    });
  }

  close(): void {
    this.#release();
    this.#release = () => {};
    this.#closed = true;
    try {
      this.#conn.close();
    } catch { /* closed */ }
    this.#wake?.();
  }

  async #next(): Promise<Record<string, unknown>> {
    for (;;) {
      const m = this.#queue.shift();
      if (m) return m;
      if (this.#closed) throw new UnavailableError("QMP connection closed");
      await new Promise<void>((r) => (this.#wake = r));
    }
  }

  async #readLoop(): Promise<void> {
    const buf = new Uint8Array(16384);
    const td = new TextDecoder();
    try {
      for (;;) {
        const n = await this.#conn.read(buf);
        if (n === null) break;
        this.#buf += td.decode(buf.subarray(0, n), { stream: true });
        let nl: number;
        while ((nl = this.#buf.indexOf("\n")) >= 0) {
          const line = this.#buf.slice(0, nl).trim();
          this.#buf = this.#buf.slice(nl + 1);
          if (!line) continue;
          const msg = JSON.parse(line) as Record<string, unknown>;
          if ("event" in msg) {
            const e = msg as unknown as QmpEvent;
            this.onEvent?.(e);
            for (const w of [...this.#waiters]) w(e);
          } else this.#queue.push(msg);
          this.#wake?.();
        }
      }
    } catch { /* closed */ }
    this.#closed = true;
    this.#wake?.();
  }
}

/** `p`, or a DeadlineExceededError at `deadline` (a `Date.now()` value). */
function beforeDeadline<T>(p: Promise<T>, deadline: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new DeadlineExceededError("no answer in time")),
      Math.max(0, deadline - Date.now()),
    );
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** Runs `f` on a new QMP connection to `socket`, closed after. */
export async function withQmp<T>(
  socket: string,
  f: (qmp: QmpClient) => Promise<T>,
  timeoutMs = 10_000,
): Promise<T> {
  const qmp = await QmpClient.connect(socket, timeoutMs);
  try {
    return await f(qmp);
  } finally {
    qmp.close();
  }
}

/** For a VMM that boots from its command line: the VM runs once QMP answers (by `deadline`). */
export async function qmpAnswers(socket: string, deadline: number): Promise<void> {
  (await QmpClient.connect(socket, Math.max(1000, deadline - performance.now()))).close();
}

/** `quit`: the VMM's own orderly exit; nothing when it is already gone. */
export async function qmpQuit(socket: string): Promise<void> {
  const qmp = await QmpClient.connect(socket, 2000).catch(() => undefined);
  await qmp?.execute("quit").catch(() => {});
  qmp?.close();
}
