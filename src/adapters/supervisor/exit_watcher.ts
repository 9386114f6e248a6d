/**
 * Learns about process exits from the exit records the helper writes.
 *
 * Every monitored process (pod holder, container init, exec) has a token;
 * its helper renames `<dir>/<token>` into place when the process ends. One
 * inotify watch on the directory covers all of them, including processes
 * started by an earlier daemon that was killed: that is what keeps exit codes
 * exact across restarts. A slow poll catches helpers that died without
 * writing a record (SIGKILL), which are reported as lost.
 *
 * @module
 */
import { join } from "node:path";
import type { ExitHandlers, ExitRecord, ExitRecords } from "../../ports/supervisor.ts";
import { log } from "../../lib/log.ts";

interface Watch {
  readonly helperPid: number;
  readonly handlers: ExitHandlers;
  /** What the writer's command line contains while it runs. */
  readonly needle: string;
}

const POLL_MS = 2000;

/** Watches one directory of exit records. */
export class ExitWatcher implements ExitRecords {
  readonly dir: string;
  #watches = new Map<string, Watch>();
  #fs: Deno.FsWatcher | undefined;
  #timer: ReturnType<typeof setInterval> | undefined;
  #log = log.with({ component: "exits" });

  constructor(dir: string) {
    this.dir = dir;
  }

  /** Creates the directory and starts watching. */
  async start(): Promise<void> {
    await Deno.mkdir(this.dir, { recursive: true, mode: 0o700 });
    this.#fs = Deno.watchFs(this.dir, { recursive: false });
    (async () => {
      for await (const ev of this.#fs!) {
        // Records are renamed into place: their .tmp files and removals say nothing.
        if (ev.kind === "remove") continue;
        for (const p of ev.paths) {
          if (p.endsWith(".tmp")) continue;
          const token = p.slice(p.lastIndexOf("/") + 1);
          if (this.#watches.has(token)) this.#check(token);
        }
      }
    })().catch((e) => this.#log.warn("exit watcher stopped", { error: e }));
    this.#timer = setInterval(() => this.#poll(), POLL_MS);
    Deno.unrefTimer(this.#timer);
  }

  stop(): void {
    this.#fs?.close();
    clearInterval(this.#timer);
  }

  /** The record path for a token (passed to the helper as --exit-file). */
  path(token: string): string {
    return join(this.dir, token);
  }

  /** Whether the helper watching `token` still runs. */
  alive(token: string, helperPid: number): Promise<boolean> {
    return helperAlive(helperPid, this.needle(token));
  }

  /** What the helper's command line contains: its exit-file argument, NUL-terminated. */
  needle(token: string): string {
    return this.path(token) + "\0";
  }

  /**
   * Registers interest in `token`; delivers at once if the record is already
   * there. The record's writer is `helperPid`, recognised by `needle` in its
   * command line (by default its --exit-file argument; a process writing
   * records for many tokens, like the Wasm host, passes its own).
   */
  expect(
    token: string,
    helperPid: number,
    handlers: ExitHandlers,
    needle = this.needle(token),
  ): void {
    this.#watches.set(token, { helperPid, handlers, needle });
    this.#check(token);
  }

  /** Stops watching `token` without callbacks. */
  cancel(token: string): void {
    this.#watches.delete(token);
  }

  /** Reads a record, or undefined if there is none (yet). */
  async read(token: string): Promise<ExitRecord | undefined> {
    let text: string;
    try {
      text = await Deno.readTextFile(this.path(token));
    } catch {
      return undefined;
    }
    try {
      const j = JSON.parse(text);
      return { pid: j.pid, status: j.status, at: { seconds: j.exited_sec, nanos: j.exited_nsec } };
    } catch {
      return undefined;
    }
  }

  /** Deletes a record once the process it describes was deleted. */
  async remove(token: string): Promise<void> {
    this.#watches.delete(token);
    await Deno.remove(this.path(token)).catch(() => {});
    await Deno.remove(this.path(token) + ".tmp").catch(() => {});
  }

  #check(token: string): void {
    this.read(token).then((rec) => {
      if (!rec) return;
      const w = this.#watches.get(token);
      if (!w) return;
      this.#watches.delete(token);
      w.handlers.exited(rec);
    });
  }

  async #poll(): Promise<void> {
    for (const [token, w] of [...this.#watches]) {
      if (await helperAlive(w.helperPid, w.needle)) continue;
      const rec = await this.read(token);
      if (!this.#watches.has(token)) continue;
      this.#watches.delete(token);
      if (rec) w.handlers.exited(rec);
      else {
        this.#log.warn("helper vanished without an exit record", { token, helperPid: w.helperPid });
        w.handlers.lost?.();
      }
    }
  }
}

/**
 * Whether the helper with that pid still runs: its command line must contain
 * `needle` (its exit-file path and the NUL after it), which rules out a
 * recycled pid. A zombie has an empty command line and counts as gone.
 */
export async function helperAlive(pid: number, needle: string): Promise<boolean> {
  if (!pid) return false;
  try {
    const cmd = await Deno.readTextFile(`/proc/${pid}/cmdline`);
    return cmd.includes(needle);
  } catch {
    return false;
  }
}
