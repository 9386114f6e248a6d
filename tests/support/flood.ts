/**
 * A flood of container output read through a streamed stdio by a reader that
 * stalls, then reads to the end: how much the daemon's memory grew meanwhile,
 * whether every byte arrived, and how much had been read when the exit was
 * reported (containerd stops reading at the exit, so it must be everything).
 *
 * @module
 */
import { K8S_NS, type taskClient } from "./daemon.ts";
import { drainOutput, type TestStream } from "./streams.ts";

/** Resident memory of process `pid` in bytes (0 once it is gone). */
export async function rssBytes(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`).catch(() => "");
  const kib = /^VmRSS:\s+(\d+) kB/m.exec(status)?.[1];
  return kib ? Number(kib) * 1024 : 0;
}

/** What a flood left behind. */
export interface FloodResult {
  /** Bytes read from the stream. */
  readonly bytes: number;
  /** Bytes that were not what the flood writes (`expected`). */
  readonly unexpected: number;
  /** Bytes read when Task.Wait answered. */
  readonly readAtExit: number;
  readonly exitStatus: number;
  /** The most any watched process's resident memory rose above its level before the flood. */
  readonly peakGrowth: number;
}

/** Options of `readFlood`. */
export interface FloodOptions {
  /** Processes whose memory is watched (the daemon, the Wasm host). */
  readonly pids: readonly number[];
  /** How long the reader stalls after its first MiB. */
  readonly stallMs: number;
  /** Which bytes the flood writes (zeros by default, as /dev/zero). */
  readonly expected?: (byte: number) => boolean;
}

/**
 * Reads the flood of the started process `id` (container, or exec `execId`)
 * from `out`, stalling first, while its memory is sampled.
 */
export async function readFlood(
  t: Awaited<ReturnType<typeof taskClient>>,
  out: TestStream,
  id: string,
  execId: string,
  o: FloodOptions,
  start: () => Promise<unknown>,
): Promise<FloodResult> {
  const before = await Promise.all(o.pids.map(rssBytes));
  const peaks = [...before];
  let bytes = 0, unexpected = 0, readAtExit = -1;
  const expected = o.expected ?? ((b: number) => b === 0);
  const exited = t.task.wait({ id, execId }, K8S_NS).then((r) => {
    readAtExit = bytes;
    return r.exitStatus;
  });
  await start();
  let resume!: () => void;
  const stalled = new Promise<void>((r) => (resume = r));
  let stalling = true;
  const reading = drainOutput(out, async (d) => {
    bytes += d.length;
    for (const b of d) if (!expected(b)) unexpected++;
    if (stalling && bytes >= 1 << 20) await stalled;
  });
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const now = await Promise.all(o.pids.map(rssBytes));
      now.forEach((b, i) => (peaks[i] = Math.max(peaks[i], b)));
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  await new Promise((r) => setTimeout(r, o.stallMs));
  stalling = false;
  resume();
  await reading;
  const exitStatus = await exited;
  sampling = false;
  await sampler;
  const peakGrowth = Math.max(...peaks.map((p, i) => p - before[i]));
  return { bytes, unexpected, readAtExit, exitStatus, peakGrowth };
}

/** Lines of `LINE_BYTES` (1000 'x' and a newline) that make just over 1 GiB. */
export const GIB_LINES = Math.ceil(2 ** 30 / 1001);
const LINE = "x".repeat(1000);

/** What a container's CRI log holds: lines whose text was the flood's, and any other. */
export async function countFloodLog(path: string): Promise<{ good: number; bad: number }> {
  const f = await Deno.open(path, { read: true });
  let good = 0, bad = 0, rest = "";
  const dec = new TextDecoder();
  for await (const chunk of f.readable) {
    const text = rest + dec.decode(chunk, { stream: true });
    const lines = text.split("\n");
    rest = lines.pop()!;
    for (const l of lines) {
      // <time> stdout F <text>: a full line as it was written.
      const parts = l.split(" ");
      if (parts.length === 4 && parts[1] === "stdout" && parts[2] === "F" && parts[3] === LINE) {
        good++;
      } else bad++;
    }
  }
  if (rest) bad++;
  return { good, bad };
}

/**
 * Samples the resident memory of `pids` every 200 ms until `until` settles;
 * returns the peak (bytes).
 */
export async function peakRss(pids: () => number[], until: Promise<unknown>): Promise<number> {
  let done = false;
  until.finally(() => (done = true)).catch(() => {});
  let peak = 0;
  while (!done) {
    const all = await Promise.all(pids().map(rssBytes));
    peak = Math.max(peak, all.reduce((a, b) => a + b, 0));
    await new Promise((r) => setTimeout(r, 200));
  }
  return peak;
}

/** Pids of the processes whose command line holds every one of `needles`. */
export function pidsWith(...needles: string[]): number[] {
  const out: number[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const cmd = Deno.readTextFileSync(`/proc/${e.name}/cmdline`);
      if (needles.every((n) => cmd.includes(n))) out.push(Number(e.name));
    } catch { /* gone */ }
  }
  return out;
}
