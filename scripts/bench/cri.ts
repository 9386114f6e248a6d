/**
 * The 1:N benchmark through real containerd 2.4 and crictl: containerd's
 * own model (handler `runc`: a containerd-shim-runc-v2 and a pause container
 * per pod) against the runC sandboxer (handler `kuasar-runc`), in one run on
 * one containerd. Measured: serial pod start (RunPodSandbox → container
 * running, one `crictl run` each), 50 pods started at once, and the memory
 * (PSS) of what manages the pods — shims + pause processes, or the sandboxer
 * daemon + relay + holders + monitors — at 10, 50 and 100 pods of one
 * `sleep` container each.
 *
 * The sandboxer runs from the single-file bundle, as it is deployed.
 *
 * @module
 */
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { containerConfig, type E2E, podConfig, startE2E } from "../../tests/support/e2e.ts";
import { median, percentile, pssKiB } from "./pss.ts";
import { RECLAIM_MAX_DELAY_MS } from "../../src/adapters/os/memory.ts";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));

/** Results of one handler. */
export interface HandlerResult {
  readonly handler: string;
  /** Serial start latencies in ms. */
  readonly serialMs: number[];
  /** Wall time of the parallel start in ms. */
  readonly parallelMs: number;
  /** Management PSS in KiB by pod count. */
  readonly memoryKiB: Record<number, number>;
}

/** Options of the run. */
export interface CriBenchOptions {
  readonly serialN: number;
  readonly parallelN: number;
  readonly memoryCounts: readonly number[];
}

interface Proc {
  pid: number;
  ppid: number;
  comm: string;
  cmd: string;
}

async function processes(): Promise<Proc[]> {
  const out: Proc[] = [];
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const stat = await Deno.readTextFile(`/proc/${e.name}/stat`);
      const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      const cmd = (await Deno.readTextFile(`/proc/${e.name}/cmdline`)).replaceAll("\0", " ");
      out.push({ pid: Number(e.name), ppid, comm, cmd });
    } catch { /* gone */ }
  }
  return out;
}

function descendants(all: Proc[], roots: number[]): Proc[] {
  const byParent = new Map<number, Proc[]>();
  for (const p of all) byParent.set(p.ppid, [...(byParent.get(p.ppid) ?? []), p]);
  const out: Proc[] = [];
  const stack = [...roots];
  while (stack.length) {
    for (const c of byParent.get(stack.pop()!) ?? []) {
      out.push(c);
      stack.push(c.pid);
    }
  }
  return out;
}

/**
 * PSS of the processes that manage pods, excluding the workload (`sleep`):
 * containerd's shims and their pause containers, or the sandboxer's daemon,
 * relay and helpers.
 */
async function managementKiB(e: E2E, handler: string): Promise<number> {
  const all = await processes();
  let procs: Proc[];
  if (handler === "runc") {
    const shims = all.filter((p) =>
      p.comm.startsWith("containerd-shim") && p.cmd.includes(e.ctd.address)
    );
    procs = [...shims, ...descendants(all, shims.map((s) => s.pid))];
  } else {
    procs = all.filter((p) => p.pid === e.d.pid || p.cmd.includes(e.d.dir));
  }
  let total = 0;
  for (const p of procs) {
    if (p.comm === "sleep") continue;
    total += await pssKiB(p.pid);
  }
  return total;
}

let seq = 0;

/** `crictl run`: RunPodSandbox, CreateContainer, StartContainer; resolves when the container runs. */
async function runPod(e: E2E, handler: string): Promise<void> {
  const pc = podConfig(e, { name: `bench${++seq}` });
  const podJson = await e.ctd.writeJson(`${pc.metadata.name}.json`, pc);
  const ctrJson = await e.ctd.writeJson(
    `${pc.metadata.name}-c.json`,
    containerConfig("c", ["sleep", "100000"]),
  );
  await e.ctd.crictlOk(["run", "--no-pull", "--runtime", handler, ctrJson, podJson]);
}

async function removeAll(e: E2E): Promise<void> {
  await e.ctd.crictlOk(["rmp", "--all", "--force"], { timeoutMs: 300_000 });
}

async function settle(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

async function measureHandler(e: E2E, handler: string, o: CriBenchOptions): Promise<HandlerResult> {
  // Warm-up: first-use costs (image unpack, code caches) are not what is measured.
  await runPod(e, handler);
  await removeAll(e);
  const serialMs: number[] = [];
  for (let i = 0; i < o.serialN; i++) {
    const t0 = performance.now();
    await runPod(e, handler);
    serialMs.push(performance.now() - t0);
  }
  await removeAll(e);
  const t0 = performance.now();
  await Promise.all(Array.from({ length: o.parallelN }, () => runPod(e, handler)));
  const parallelMs = performance.now() - t0;
  await removeAll(e);
  const memoryKiB: Record<number, number> = {};
  let running = 0;
  for (const n of o.memoryCounts) {
    while (running < n) {
      await runPod(e, handler);
      running++;
    }
    // Steady state: the sandboxer has reclaimed memory since the last start
    // (2 s after a burst, or by the max delay under containerd's polling); median of samples.
    await settle(RECLAIM_MAX_DELAY_MS + 1000);
    const xs: number[] = [];
    for (let i = 0; i < 3; i++) {
      xs.push(await managementKiB(e, handler));
      await settle(300);
    }
    memoryKiB[n] = median(xs);
  }
  await removeAll(e);
  return { handler, serialMs, parallelMs, memoryKiB };
}

/** Runs both handlers on one containerd. */
export async function criBench(o: CriBenchOptions): Promise<HandlerResult[]> {
  const bundle = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(ROOT, "scripts/bundle.ts")],
    stdout: "null",
  }).output();
  if (!bundle.success) throw new Error("bundling the sandboxer failed");
  const e = await startE2E("runc", { entry: join(ROOT, "dist/kuasar.js") });
  try {
    const results: HandlerResult[] = [];
    for (const handler of ["runc", e.fifo]) results.push(await measureHandler(e, handler, o));
    return results;
  } finally {
    await e.cleanup();
  }
}

/** The figures of a result, for tables. */
export function summary(r: HandlerResult) {
  return {
    p50: percentile(r.serialMs, 50),
    p90: percentile(r.serialMs, 90),
    p99: percentile(r.serialMs, 99),
    parallel: r.parallelMs,
  };
}
