/**
 * Proportional set size (PSS) of processes, from /proc/<pid>/smaps_rollup:
 * the memory a process costs, with shared pages divided among their users.
 *
 * @module
 */

/** PSS of one process in KiB (0 if it is gone). */
export async function pssKiB(pid: number): Promise<number> {
  try {
    const text = await Deno.readTextFile(`/proc/${pid}/smaps_rollup`);
    const m = /^Pss:\s+(\d+) kB/m.exec(text);
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/**
 * Private memory (USS) of one process in KiB: its pages no other process
 * maps. Unlike PSS it does not move when other processes map the same binary
 * (every Deno process shares the deno executable's pages).
 */
export async function privateKiB(pid: number): Promise<number> {
  try {
    const text = await Deno.readTextFile(`/proc/${pid}/smaps_rollup`);
    const field = (name: string) =>
      Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? 0);
    return field("Private_Clean") + field("Private_Dirty");
  } catch {
    return 0;
  }
}

/** Sum of PSS over pids, in KiB. */
export async function sumPss(pids: number[]): Promise<number> {
  let total = 0;
  for (const p of pids) total += await pssKiB(p);
  return total;
}

/** Pids whose command line contains `needle`. */
export async function pidsMatching(needle: string): Promise<number[]> {
  const out: number[] = [];
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const cmd = await Deno.readTextFile(`/proc/${e.name}/cmdline`);
      if (cmd.includes(needle)) out.push(Number(e.name));
    } catch { /* gone */ }
  }
  return out;
}

/** Median of a sample. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** A percentile (0..100) of a sample, nearest-rank. */
export function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

/** Median of `n` PSS samples of `pid`, `gapMs` apart (a daemon's heap breathes). */
export async function settledPss(pid: number, n = 5, gapMs = 300): Promise<number> {
  return await settled(() => pssKiB(pid), n, gapMs);
}

/** Median of `n` samples of `measure`, `gapMs` apart. */
export async function settled(
  measure: () => Promise<number>,
  n = 5,
  gapMs = 300,
): Promise<number> {
  const xs: number[] = [];
  for (let i = 0; i < n; i++) {
    xs.push(await measure());
    await new Promise((r) => setTimeout(r, gapMs));
  }
  return median(xs);
}
