/**
 * Stdio of processes in a VM. containerd hands the host daemon FIFO (or
 * file) paths the guest cannot open; the guest's runtime gets streaming
 * URLs instead, and the host copies between each path and a stream of the
 * agent's Streaming service, playing containerd's side of that protocol
 * (StreamInit, then Data one way and WindowUpdate the other). A stream that
 * is opened again (a restarted daemon) takes over from the old one and
 * receives what was not yet sent.
 *
 * @module
 */
import { InvalidArgumentError } from "../../domain/errors.ts";
import type { Io } from "../../domain/task.ts";
import { Any } from "../../gen/containerd/google/protobuf/any.ts";
import { StreamInit } from "../../gen/containerd/services/streaming/v1/streaming.ts";
import { Data, WindowUpdate } from "../../gen/containerd/types/transfer/streaming.ts";
import { log } from "../../log.ts";
import type { ClientStream, TtrpcClient } from "../ttrpc/client.ts";
import { writeAll } from "../ttrpc/server.ts";

const SERVICE = "containerd.services.streaming.v1.Streaming";
const CHUNK = 32 * 1024;
/** How long an exit waits for the process's output to be copied out. */
const OUTPUT_DRAIN_MS = 5_000;

/** The streaming URL the guest gets for one stdio stream. */
function streamUrl(id: string): string {
  return `ttrpc+agent://kuasar?streaming_id=${encodeURIComponent(id)}`;
}

function hostPath(stdio: string): string {
  if (stdio.startsWith("file://")) return new URL(stdio).pathname;
  if (stdio.includes("://")) {
    throw new InvalidArgumentError(
      `Unsupported stdio "${stdio}" for a VM pod: expected a FIFO or file path, or file://`,
    );
  }
  return stdio;
}

/** The guest's view of `io`: a stream per stdio the process has, named after `base`. */
export function guestIo(io: Io, base: string): Io {
  for (const p of [io.stdin, io.stdout, io.stderr]) if (p) hostPath(p);
  return {
    stdin: io.stdin ? streamUrl(`${base}-stdin`) : "",
    stdout: io.stdout ? streamUrl(`${base}-stdout`) : "",
    // A terminal has one output: the pty.
    stderr: io.stderr && !io.terminal ? streamUrl(`${base}-stderr`) : "",
    terminal: io.terminal,
  };
}

const any = (typeUrl: string, value: Uint8Array) => Any.encode({ typeUrl, value }).finish();

async function openStream(client: TtrpcClient, id: string): Promise<ClientStream> {
  const s = await client.stream(SERVICE, "Stream", { streamingClient: true });
  await s.send(
    any("containerd.services.streaming.v1.StreamInit", StreamInit.encode({ id }).finish()),
  );
  return s;
}

/** Copies a guest output stream into a host path; resolves when the stream ends. */
async function pumpOut(client: TtrpcClient, id: string, path: string): Promise<void> {
  const s = await openStream(client, id);
  const it = s.received[Symbol.asyncIterator]();
  await it.next(); // the acknowledgement of StreamInit
  const f = await Deno.open(path, { write: true, append: true });
  try {
    for (let m = await it.next(); !m.done; m = await it.next()) {
      const a = Any.decode(m.value);
      if (!a.typeUrl.endsWith("Data")) continue;
      const data = Data.decode(a.value).data;
      await writeAll(f, data);
      await s.send(
        any(
          "containerd.types.transfer.WindowUpdate",
          WindowUpdate.encode({ update: data.length }).finish(),
        ),
      );
    }
  } finally {
    f.close();
  }
}

/** Copies a host path into a guest stdin stream until the path's end of input. */
async function pumpIn(
  client: TtrpcClient,
  id: string,
  path: string,
  opened: (f: Deno.FsFile) => void,
): Promise<void> {
  const s = await openStream(client, id);
  let credit = 0;
  let wake: (() => void) | undefined;
  let ended = false;
  (async () => {
    for await (const m of s.received) {
      const a = Any.decode(m);
      if (a.typeUrl.endsWith("WindowUpdate")) credit += WindowUpdate.decode(a.value).update;
      wake?.();
    }
  })().catch(() => {}).finally(() => {
    ended = true;
    wake?.();
  });
  const f = await Deno.open(path, { read: true });
  opened(f);
  const buf = new Uint8Array(CHUNK);
  try {
    for (;;) {
      const n = await f.read(buf).catch(() => null);
      if (n === null) break;
      let off = 0;
      while (off < n) {
        while (credit <= 0 && !ended) await new Promise<void>((r) => (wake = r));
        if (ended) return;
        const len = Math.min(credit, n - off);
        await s.send(
          any(
            "containerd.types.transfer.Data",
            Data.encode({ data: buf.slice(off, off + len) }).finish(),
          ),
        );
        credit -= len;
        off += len;
      }
    }
    await s.closeSend();
  } finally {
    try {
      f.close();
    } catch { /* closed */ }
  }
}

/** The copies of one process's stdio. */
export class GuestStdio {
  readonly #output: Promise<unknown>;
  #stdinPath: string | undefined;
  #stdinFile: Deno.FsFile | undefined;
  #stdin: Promise<void> | undefined;

  /** Starts copying between the host paths of `io` and the guest streams named after `base`. */
  constructor(client: TtrpcClient, io: Io, base: string) {
    const l = log.with({ component: "vm-stdio", stream: base });
    const out = (p: string, kind: string) =>
      pumpOut(client, `${base}-${kind}`, hostPath(p)).catch((e) =>
        l.debug("output copy ended", { kind, error: e })
      );
    this.#output = Promise.all([
      io.stdout ? out(io.stdout, "stdout") : undefined,
      io.stderr && !io.terminal ? out(io.stderr, "stderr") : undefined,
    ]);
    if (io.stdin) {
      this.#stdinPath = hostPath(io.stdin);
      this.#stdin = pumpIn(client, `${base}-stdin`, this.#stdinPath, (f) => (this.#stdinFile = f))
        .catch((e) => l.debug("input copy ended", { error: e }));
    }
  }

  /** Resolves once the output is copied out (the process ended), or after a bound. */
  async drained(): Promise<void> {
    let t: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([this.#output, new Promise((r) => (t = setTimeout(r, OUTPUT_DRAIN_MS)))]);
    clearTimeout(t);
  }

  /** Stops the input copy (also when it still waits for a writer to open the FIFO). */
  async close(): Promise<void> {
    if (!this.#stdin) return;
    if (this.#stdinFile) {
      try {
        this.#stdinFile.close();
      } catch { /* closed */ }
    } else if (this.#stdinPath) {
      // Opening the write side releases a reader still blocked in open().
      const w = await Deno.open(this.#stdinPath, { write: true }).catch(() => undefined);
      w?.close();
    }
    await this.#stdin;
  }
}
