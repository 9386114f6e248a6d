/**
 * A Wasm task's stdio inside the host, as a process would have it: output
 * to the FIFO/file containerd named, or framed over the task's io socket
 * for streamed stdio; stdin from a FIFO or the io socket. Writes keep their
 * order; `finish` ends the outputs (containerd sees EOF) once all is written.
 *
 * @module
 */
import { join } from "node:path";
import type { TaskSpec } from "./protocol.ts";
import { IoServer } from "./io_server.ts";

type Sink = (data: Uint8Array) => Promise<void>;

/** Receives stdin data; `null` ends it. */
export type StdinConsumer = (data: Uint8Array | null) => void | Promise<void>;

/** One task's stdio. */
export class TaskIo {
  #server: IoServer | undefined;
  #files: Deno.FsFile[] = [];
  #sinks: [Sink | undefined, Sink | undefined] = [undefined, undefined];
  #chain: Promise<void> = Promise.resolve();
  #stdin: StdinConsumer | undefined;
  #pending: (Uint8Array | null)[] = [];
  #stdinPath: string | undefined;
  #stdinFile: Deno.FsFile | undefined;
  #closed = false;
  #fifos: string[] = [];
  #pumps: Promise<void>[] = [];

  private constructor() {}

  /** Opens the io socket of a streamed task (before it starts, so the daemon can attach). */
  static async prepare(spec: TaskSpec): Promise<TaskIo> {
    const io = new TaskIo();
    if (spec.ioSocket) {
      io.#server = await IoServer.listen(spec.ioSocket, (d) => io.#deliverStdin(d));
    }
    io.#stdinPath = spec.stdin && spec.stdin !== "@stream" ? spec.stdin : undefined;
    return io;
  }

  /** Opens the outputs (a FIFO blocks until containerd has its reader) and starts stdin. */
  async open(spec: TaskSpec, stdin: StdinConsumer | undefined): Promise<void> {
    this.#stdin = stdin;
    for (const d of this.#pending.splice(0)) await stdin?.(d);
    await this.#openSinks(spec);
    if (this.#stdinPath && stdin) this.#pumpStdin(this.#stdinPath, stdin);
    else if (!spec.stdin) await stdin?.(null);
  }

  async #openSinks(spec: TaskSpec): Promise<void> {
    for (const [i, target] of [[0, spec.stdout], [1, spec.stderr]] as const) {
      if (!target) continue;
      if (target === "@stream") {
        const tag = (i + 1) as 1 | 2;
        this.#sinks[i] = (d) => this.#server!.write(tag, d);
        continue;
      }
      const f = await Deno.open(target.replace(/^file:\/\//, ""), {
        write: true,
        create: true,
        append: true,
      });
      this.#files.push(f);
      this.#sinks[i] = (d) => writeFully(f, d);
    }
  }

  /**
   * Stdio as paths, for an engine that opens files itself (Wasmtime's C
   * API): FIFOs and files pass through; a streamed stream gets a FIFO under
   * `runDir` that this side pumps to or from the io socket.
   */
  async openPaths(
    spec: TaskSpec,
    runDir: string,
  ): Promise<{ stdin?: string; stdout?: string; stderr?: string }> {
    const plain = (p?: string) => p && p !== "@stream" ? p.replace(/^file:\/\//, "") : undefined;
    const out: { stdin?: string; stdout?: string; stderr?: string } = {
      stdin: plain(spec.stdin),
      stdout: plain(spec.stdout),
      stderr: plain(spec.stderr),
    };
    // This side keeps its own writer on each output (so a FIFO's reader sees
    // EOF only when both ended) to add a line about how the module ended.
    await this.#openSinks(spec);
    const streamed = (["stdin", "stdout", "stderr"] as const).filter((k) => spec[k] === "@stream");
    if (!streamed.length) return out;
    await Deno.mkdir(runDir, { recursive: true, mode: 0o700 });
    for (const k of streamed) {
      const fifo = join(runDir, `${crypto.randomUUID()}.${k}`);
      await makeFifo(fifo);
      this.#fifos.push(fifo);
      out[k] = fifo;
      if (k === "stdin") {
        const opened = Deno.open(fifo, { write: true });
        this.#stdin = async (d) => {
          const f = await opened;
          if (d) await writeFully(f, d).catch(() => {});
          else f.close();
        };
        for (const d of this.#pending.splice(0)) await this.#stdin(d);
      } else {
        const tag = k === "stdout" ? 1 : 2;
        this.#pumps.push(
          (async () => {
            const f = await Deno.open(fifo, { read: true });
            for await (const chunk of f.readable) await this.#server!.write(tag, chunk);
            await this.#server!.write(tag, new Uint8Array(0));
          })().catch(() => {}),
        );
      }
    }
    return out;
  }

  /** For `openPaths`: waits for the pumped outputs to end (before `finish`), then removes the FIFOs. */
  async finishPaths(): Promise<void> {
    // Opening each FIFO's other end once unblocks a pump whose engine never opened it.
    for (const fifo of this.#fifos) {
      try {
        (await Deno.open(fifo, { read: true, write: true })).close();
      } catch { /* gone */ }
    }
    await Promise.all(this.#pumps.splice(0));
    for (const fifo of this.#fifos.splice(0)) await Deno.remove(fifo).catch(() => {});
  }

  /** Queues output on fd 1 or 2, in order with everything written before. */
  write(fd: 1 | 2, data: Uint8Array): Promise<void> {
    const sink = this.#sinks[fd - 1];
    if (!sink || !data.length) return this.#chain;
    this.#chain = this.#chain.then(() => sink(data)).catch(() => {
      this.#sinks[fd - 1] = undefined; // the reader went away, as EPIPE would tell a process
    });
    return this.#chain;
  }

  /** Ends stdin early (Task.CloseIO). */
  async closeStdin(): Promise<void> {
    try {
      this.#stdinFile?.close();
    } catch { /* closed */ }
    this.#stdinFile = undefined;
    await this.#stdin?.(null);
  }

  /** Writes what is queued, then ends both outputs. */
  async finish(): Promise<void> {
    await this.#chain;
    for (const f of this.#files.splice(0)) {
      try {
        f.close();
      } catch { /* closed */ }
    }
    for (const [i, sink] of this.#sinks.entries()) {
      if (sink && this.#server) await this.#server.write((i + 1) as 1 | 2, new Uint8Array(0));
    }
    this.#sinks = [undefined, undefined];
  }

  /** Whether the io socket's buffered output was all delivered. */
  get delivered(): boolean {
    return !this.#server || this.#server.drained;
  }

  /** Releases everything (Task.Delete). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const f of [...this.#files.splice(0), this.#stdinFile]) {
      try {
        f?.close();
      } catch { /* closed */ }
    }
    this.#server?.close();
  }

  #deliverStdin(data: Uint8Array | null): void {
    if (this.#stdin) this.#stdin(data);
    else this.#pending.push(data);
  }

  async #pumpStdin(path: string, consume: StdinConsumer): Promise<void> {
    try {
      this.#stdinFile = await Deno.open(path.replace(/^file:\/\//, ""), { read: true });
      const buf = new Uint8Array(64 * 1024);
      for (;;) {
        const n = await this.#stdinFile.read(buf);
        if (n === null) break;
        await consume(buf.slice(0, n));
      }
    } catch { /* closed by CloseIO or Delete */ }
    await consume(null);
  }
}

async function writeFully(f: Deno.FsFile, data: Uint8Array): Promise<void> {
  for (let off = 0; off < data.length;) off += await f.write(data.subarray(off));
}

/** mkfifo(1), as containerd's cio makes its FIFOs. */
async function makeFifo(path: string): Promise<void> {
  const r = await new Deno.Command("mkfifo", { args: ["-m", "0600", path], stderr: "piped" })
    .output();
  if (!r.success) throw new Error(`mkfifo ${path}: ${new TextDecoder().decode(r.stderr).trim()}`);
}
