/**
 * The 1:N benchmark through real containerd 2.4 and crictl: a sandboxer
 * against the shim containerd users run instead, in one run on one
 * containerd. For runC: containerd's own model (handler `runc`: a
 * containerd-shim-runc-v2 and a pause container per pod); for gVisor:
 * gVisor's own shim (`containerd-shim-runsc-v1`, one per pod). Measured:
 * serial pod start (RunPodSandbox → container running, one `crictl run`
 * each), pods started at once, and the memory (PSS) of what manages the pods —
 * shims and their helpers, or the sandboxer daemon + relay + holders +
 * monitors — at several pod counts of one `sleep` container each. A
 * sandbox's own kernel (gVisor's sentry and gofer) is the workload's on both
 * sides and not counted.
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
  /** Wall time of the parallel start in ms, and how many pods it started. */
  readonly parallelMs: number;
  readonly parallelN: number;
  /** How many of them were in flight at once. */
  readonly concurrency: number;
  /** Management PSS in KiB by pod count. */
  readonly memoryKiB: Record<number, number>;
}

/** The shim a sandboxer is compared with. */
export interface CriPeer {
  /** Its CRI runtime handler. */
  readonly handler: string;
  /** The containerd drop-in that defines the handler (none: containerd's built-in `runc`). */
  readonly dropIn?: string;
}

/** Options of the run. */
export interface CriBenchOptions {
  readonly serialN: number;
  readonly parallelN: number;
  readonly memoryCounts: readonly number[];
  /** The sandboxer's kind (default runc) and its TOML config. */
  readonly kind?: string;
  readonly config?: string;
  /** Default: containerd's runc shim. */
  readonly peer?: CriPeer;
  /** Each pod's container (default: busybox `sleep`); it must keep running. */
  readonly container?: { readonly image?: string; readonly command: readonly string[] };
  /** Pods in flight at once in the parallel start (default: all of them). */
  readonly concurrency?: number;
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

/** The workload and a sandbox's own kernel: not what manages pods, on either side. */
function isWorkload(p: Proc): boolean {
  return p.comm === "sleep" || /^runsc-(sandbox|gofer)\b/.test(p.cmd);
}

/**
 * PSS of the processes that manage pods: a shim's (containerd-shim-*) and
 * what it started (pause containers, `runsc wait`), or the sandboxer's daemon,
 * relay and helpers and what they started.
 */
async function managementKiB(e: E2E, shimModel: boolean): Promise<number> {
  const all = await processes();
  let procs: Proc[];
  if (shimModel) {
    const shims = all.filter((p) =>
      p.comm.startsWith("containerd-shim") && p.cmd.includes(e.ctd.address)
    );
    procs = [...shims, ...descendants(all, shims.map((s) => s.pid))];
  } else {
    procs = all.filter((p) => p.pid === e.d.pid || p.cmd.includes(e.d.dir));
  }
  let total = 0;
  for (const p of procs) {
    if (!isWorkload(p)) total += await pssKiB(p.pid);
  }
  return total;
}

let seq = 0;

type Container = CriBenchOptions["container"];

/** `crictl run`: RunPodSandbox, CreateContainer, StartContainer; resolves when the container runs. */
async function runPod(e: E2E, handler: string, c: Container): Promise<void> {
  const pc = podConfig(e, { name: `bench${++seq}` });
  const podJson = await e.ctd.writeJson(`${pc.metadata.name}.json`, pc);
  const ctrJson = await e.ctd.writeJson(
    `${pc.metadata.name}-c.json`,
    containerConfig("c", [...(c?.command ?? ["sleep", "100000"])], { image: c?.image }),
  );
  await e.ctd.crictlOk(["run", "--no-pull", "--runtime", handler, ctrJson, podJson]);
}

async function removeAll(e: E2E): Promise<void> {
  const r = await e.ctd.crictl(["rmp", "--all", "--force"], { timeoutMs: 300_000 });
  if (r.code === 0) return;
  // Seen once with 100 pods of both handlers on 2 CPUs: containerd's StopPodSandbox gave up
  // ("failed to get task … context deadline exceeded") on some; said, then tried again.
  console.error(`[bench] crictl rmp --all failed, trying again: ${r.stderr.split("\n")[0]}`);
  await e.ctd.crictlOk(["rmp", "--all", "--force"], { timeoutMs: 300_000 });
}

async function settle(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

/** `n` pods started with `handler`, `c` at a time, timed until the last runs; then removed. */
async function parallelStart(
  e: E2E,
  handler: string,
  n: number,
  c: number,
  container: Container,
): Promise<number> {
  const t0 = performance.now();
  let started = 0;
  const worker = async () => {
    while (started < n) {
      started++;
      await runPod(e, handler, container);
    }
  };
  await Promise.all(Array.from({ length: Math.min(c, n) }, worker));
  const ms = performance.now() - t0;
  await removeAll(e);
  return ms;
}

/** Management PSS of `handler`'s pods at each count (median of samples at steady state). */
async function memoryByCount(
  e: E2E,
  handler: string,
  shimModel: boolean,
  counts: readonly number[],
  container: Container,
): Promise<Record<number, number>> {
  const memoryKiB: Record<number, number> = {};
  let running = 0;
  for (const n of counts) {
    while (running < n) {
      await runPod(e, handler, container);
      running++;
    }
    // Steady state: the sandboxer has reclaimed memory since the last start
    // (2 s after a burst, or by the max delay under containerd's polling); median of samples.
    await settle(RECLAIM_MAX_DELAY_MS + 1000);
    const xs: number[] = [];
    for (let i = 0; i < 3; i++) {
      xs.push(await managementKiB(e, shimModel));
      await settle(300);
    }
    memoryKiB[n] = median(xs);
  }
  await removeAll(e);
  return memoryKiB;
}

/**
 * Runs the peer's handler and the sandboxer's on one containerd: serial starts
 * alternating A B A B after a warm-up of each, then each one's parallel start
 * and memory. Results: [peer, ours].
 */
export async function criBench(o: CriBenchOptions): Promise<HandlerResult[]> {
  const bundle = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(ROOT, "scripts/bundle.ts")],
    stdout: "null",
  }).output();
  if (!bundle.success) throw new Error("bundling the sandboxer failed");
  const peer = o.peer ?? { handler: "runc" };
  const e = await startE2E(o.kind ?? "runc", {
    entry: join(ROOT, "dist/kuasar.js"),
    config: o.config,
    extraDropIns: peer.dropIn ? [peer.dropIn] : [],
  });
  try {
    const sides = [{ handler: peer.handler, shimModel: true }, {
      handler: e.fifo,
      shimModel: false,
    }];
    // Warm-up: first-use costs (image unpack, code caches) are not what is measured.
    for (const s of sides) await runPod(e, s.handler, o.container);
    await removeAll(e);
    const serial: number[][] = sides.map(() => []);
    for (let i = 0; i < o.serialN; i++) {
      for (const [k, s] of sides.entries()) {
        const t0 = performance.now();
        await runPod(e, s.handler, o.container);
        serial[k].push(performance.now() - t0);
      }
    }
    await removeAll(e);
    const results: HandlerResult[] = [];
    for (const [k, s] of sides.entries()) {
      results.push({
        handler: s.handler,
        serialMs: serial[k],
        parallelMs: await parallelStart(
          e,
          s.handler,
          o.parallelN,
          o.concurrency ?? o.parallelN,
          o.container,
        ),
        parallelN: o.parallelN,
        concurrency: o.concurrency ?? o.parallelN,
        memoryKiB: await memoryByCount(e, s.handler, s.shimModel, o.memoryCounts, o.container),
      });
    }
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
