/**
 * Stdio of processes run under the monitor helper: which flags the monitor
 * gets for a Task API `Io`, and the bridges that carry streamed stdio
 * (containerd's `io_type = "streaming"`) between the monitor's io socket and
 * the Streaming service. FIFO and file paths go to the process directly; the
 * daemon is then not in the data path at all.
 *
 * @module
 */
import { InvalidArgumentError } from "../../domain/errors.ts";
import type { Io } from "../../domain/task.ts";
import { OUTPUT_IDLE_MS, type StreamHub, streamingId } from "../task/streaming.ts";
import { writeAll } from "../ttrpc/server.ts";
import { MonitorIo } from "./monitor_io.ts";
import { socketPath } from "./process_tokens.ts";
import { log } from "../../lib/log.ts";
import type { MonitorStdio, StdioSource } from "../../ports/supervisor.ts";

/** Where each stdio stream of a process goes. */
export interface StdioPlan {
  /** A FIFO or file path, or "@stream"; absent when the process has none. */
  readonly stdin?: string;
  readonly stdout?: string;
  readonly stderr?: string;
  /** Socket the streamed ("@stream") ones are framed over. */
  readonly ioSocket?: string;
}

/** Stream ids of a process's streamed stdio. */
function streamIds(io: Io): { stdin?: string; stdout?: string; stderr?: string } {
  return {
    stdin: io.stdin ? streamingId(io.stdin) : undefined,
    stdout: io.stdout ? streamingId(io.stdout) : undefined,
    stderr: io.stderr ? streamingId(io.stderr) : undefined,
  };
}

/** Accepts FIFO/file paths and file:// URIs; other URLs need a transport the monitor lacks. */
function checkPath(path: string): string {
  if (path.includes("://") && !path.startsWith("file://")) {
    throw new InvalidArgumentError(
      `Unsupported stdio "${path}": expected a FIFO or file path, file://, or a streaming URL`,
    );
  }
  return path;
}

/** Stdio plumbing of monitored processes. */
export class ProcessIo implements StdioSource {
  #hub: StreamHub;
  #socketDir: string;
  #bridges = new Map<string, MonitorIo>();

  constructor(hub: StreamHub, socketDir: string) {
    this.#hub = hub;
    this.#socketDir = socketDir;
  }

  /**
   * Where a process's stdio goes: each stream a FIFO/file path or "@stream"
   * (then framed over `ioSocket`). Shared by the monitor helper and the Wasm host.
   */
  async stdioPlan(token: string, io: Io): Promise<StdioPlan> {
    const ids = streamIds(io);
    const pick = (path: string, id: string | undefined) =>
      path ? (id ? "@stream" : checkPath(path)) : undefined;
    await Deno.mkdir(this.#socketDir, { recursive: true, mode: 0o700 });
    const streamed = !!(ids.stdin || ids.stdout || ids.stderr);
    return {
      stdin: pick(io.stdin, ids.stdin),
      stdout: pick(io.stdout, ids.stdout),
      stderr: pick(io.stderr, ids.stderr),
      ioSocket: streamed ? await this.#socket(token, "io") : undefined,
    };
  }

  /** The monitor flags for `io` of the process `token`. */
  async monitorArgs(token: string, io: Io): Promise<MonitorStdio> {
    const plan = await this.stdioPlan(token, io);
    const args: string[] = [];
    if (plan.stdin) args.push("--stdin", plan.stdin);
    if (plan.stdout) args.push("--stdout", plan.stdout);
    if (plan.stderr) args.push("--stderr", plan.stderr);
    if (plan.ioSocket) args.push("--io-socket", plan.ioSocket);
    if (!io.terminal) return { args };
    const consoleSocket = await this.#socket(token, "console");
    args.push("--console-socket", consoleSocket, "--control", await this.#socket(token, "ctl"));
    return { args, consoleSocket };
  }

  /** Connects streamed stdio of a ready (or recovered) process to its streams. */
  async attach(scope: string, token: string, io: Io): Promise<void> {
    const ids = streamIds(io);
    if (!ids.stdin && !ids.stdout && !ids.stderr) return;
    this.#bridges.get(token)?.close();
    const out = [undefined, ids.stdout, ids.stderr] as const;
    // Not awaited: the monitor's per-stream window bounds what a channel gets,
    // and waiting here would stop the other stream's frames too.
    const bridge = new MonitorIo(await this.#socket(token, "io"), (tag, data) => {
      const id = out[tag];
      if (!id) {
        if (data) bridge.ack(tag, data.length); // not streamed here: nobody reads it
        return;
      }
      const ch = this.#hub.output(scope, id);
      if (data) void ch.push(data);
      else ch.end();
    });
    // Output is acknowledged once sent on to the reader: until then the
    // monitor keeps it, for a restarted daemon to get again.
    for (const tag of [1, 2] as const) {
      const id = out[tag];
      if (id) this.#hub.output(scope, id).onSent = (n) => bridge.ack(tag, n);
    }
    this.#bridges.set(token, bridge);
    if (ids.stdin) await this.#hub.input(scope, ids.stdin).setSink((d) => bridge.sendStdin(d));
  }

  /**
   * Waits until the streamed output of a process that exited was read to its
   * end (containerd stops reading once it learns of the exit), or until it
   * made no progress for `OUTPUT_IDLE_MS` (nobody reads it).
   */
  async delivered(scope: string, io: Io): Promise<void> {
    const { stdout, stderr } = streamIds(io);
    const ids = [stdout, stderr].filter((x): x is string => !!x);
    if (!ids.length) return;
    if (!await this.#hub.delivered(scope, ids, OUTPUT_IDLE_MS)) {
      log.warn("streamed output was not read; reporting the exit anyway", { sandbox: scope, ids });
    }
  }

  /**
   * Forgets a deleted process: ends its streams, removes its sockets. Its
   * bridge stays until the monitor leaves, acknowledging (and so letting go)
   * whatever output is still to come, as nobody will read it.
   */
  async release(scope: string, token: string, io: Io): Promise<void> {
    this.#bridges.get(token)?.discard();
    this.#bridges.delete(token);
    const ids = Object.values(streamIds(io)).filter((x): x is string => !!x);
    if (!ids.length && !io.terminal) return; // it never had sockets
    this.#hub.remove(scope, ids); // what the channels held is acknowledged
    for (const s of ["console", "ctl", "io"]) {
      await Deno.remove(await this.#socket(token, s)).catch(() => {});
    }
  }

  /** Sends a control line ("resize W H", "close-stdin") to the process's monitor. */
  async control(token: string, line: string): Promise<void> {
    let conn: Deno.Conn;
    try {
      conn = await Deno.connect({ transport: "unix", path: await this.#socket(token, "ctl") });
    } catch {
      return; // the process exited and its monitor is gone
    }
    try {
      await writeAll(conn, new TextEncoder().encode(line + "\n"));
      await conn.read(new Uint8Array(16));
    } finally {
      conn.close();
    }
  }

  /** Ends stdin of a streamed or pty process (CloseIO); false when stdin is neither. */
  async closeStdin(scope: string, token: string, io: Io): Promise<boolean> {
    const stdin = streamIds(io).stdin;
    // Through the stream's channel, so it follows the bytes the stream still carries.
    if (stdin) await this.#hub.input(scope, stdin).close();
    else if (io.terminal) await this.control(token, "close-stdin");
    return !!stdin || io.terminal;
  }

  #socket(token: string, suffix: string): Promise<string> {
    return socketPath(this.#socketDir, token, suffix);
  }
}
