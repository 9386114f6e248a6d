/**
 * Memory of the runC sandboxer per pod: the daemon's PSS and that of the
 * helpers (namespace holders, container monitors) at several pod counts, and
 * the marginal cost of one more pod as the least-squares slope over them (a
 * Deno daemon's heap breathes by a few MiB, so two points alone can make the
 * slope of a few hundred KiB per pod come out at either sign).
 *
 * The shim model's cost per pod (containerd-shim-runc-v2 + pause) needs
 * containerd; it is measured beside this sandboxer in the `cri` section.
 *
 * @module
 */
import { TestDaemon } from "../../tests/support/daemon.ts";
import { startContainer, startPod, type TestPod } from "../../tests/support/pod.ts";
import { RECLAIM_SETTLED_MS } from "../../src/adapters/os/memory.ts";
import { pidsMatching, privateKiB, settled, settledPss, sumPss } from "./pss.ts";

/** One measurement point. */
export interface MemoryPoint {
  readonly pods: number;
  readonly daemonKiB: number;
  /** The daemon's private memory (USS): what its PSS is made of besides shared pages. */
  readonly daemonPrivateKiB: number;
  readonly holdersKiB: number;
  readonly monitorsKiB: number;
}

/** Result of the runC memory benchmark. */
export interface RuncMemoryResult {
  readonly idleDaemonKiB: number;
  readonly points: MemoryPoint[];
  /** Slope of daemon + holders + monitors over the points, KiB per pod. */
  readonly marginalKiB: Slope;
  /** Slope of daemon + holders over the points, KiB per pod: the sandbox alone. */
  readonly marginalSandboxOnlyKiB: Slope;
  /** Slope of the daemon alone, KiB per pod. */
  readonly marginalDaemonKiB: Slope;
}

/** A least-squares slope and its standard error. */
export interface Slope {
  readonly slope: number;
  /** Standard error of the slope (NaN with fewer than 3 points). */
  readonly se: number;
}

/** Least-squares slope of ys over xs, with its standard error. */
export function slope(xs: readonly number[], ys: readonly number[]): Slope {
  const n = xs.length;
  const mx = xs.reduce((a, b) => a + b, 0) / n, my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0, den = 0;
  for (let i = 0; i < n; i++) {
    num += (xs[i] - mx) * (ys[i] - my);
    den += (xs[i] - mx) ** 2;
  }
  const b = den ? num / den : 0;
  let ssr = 0;
  for (let i = 0; i < n; i++) ssr += (ys[i] - my - b * (xs[i] - mx)) ** 2;
  return { slope: b, se: n > 2 && den ? Math.sqrt(ssr / (n - 2) / den) : NaN };
}

async function measure(d: TestDaemon, pods: number): Promise<MemoryPoint> {
  // Steady state: the burst of starts is over and both of the daemon's reclaim
  // passes (GC + malloc_trim) have run.
  await new Promise((r) => setTimeout(r, RECLAIM_SETTLED_MS + 1000));
  const daemonKiB = await settledPss(d.pid);
  const daemonPrivateKiB = await settled(() => privateKiB(d.pid));
  const holders = await pidsMatching("\0hold\0--exit-file\0" + d.dir);
  const monitors = await pidsMatching("\0monitor\0--exit-file\0" + d.dir);
  return {
    pods,
    daemonKiB,
    daemonPrivateKiB,
    holdersKiB: await sumPss(holders),
    monitorsKiB: await sumPss(monitors),
  };
}

/**
 * Runs the benchmark at `counts` pods (ascending) of one `sleep` container each, with the
 * daemon run from `entry` (the bundle, as deployed; default: the source).
 */
export async function runcMemory(
  counts: number[] = [10, 20, 30, 40, 50],
  entry?: string,
): Promise<RuncMemoryResult> {
  const d = await TestDaemon.start({ entry, extraArgs: ["--log-level", "warn"] });
  const pods: TestPod[] = [];
  try {
    await new Promise((r) => setTimeout(r, RECLAIM_SETTLED_MS + 1000));
    const idleDaemonKiB = await settledPss(d.pid);
    const points: MemoryPoint[] = [];
    for (const n of counts) {
      while (pods.length < n) {
        const pod = await startPod(d);
        await startContainer(d, pod, { args: ["sleep", "100000"] });
        pods.push(pod);
      }
      points.push(await measure(d, n));
    }
    const xs = points.map((p) => p.pods);
    const fit = (f: (p: MemoryPoint) => number) => slope(xs, points.map(f));
    return {
      idleDaemonKiB,
      points,
      // The daemon's growth is taken from its private memory: its PSS also
      // moves with how many other processes share the deno binary's pages.
      marginalKiB: fit((p) => p.daemonPrivateKiB + p.holdersKiB + p.monitorsKiB),
      marginalSandboxOnlyKiB: fit((p) => p.daemonPrivateKiB + p.holdersKiB),
      marginalDaemonKiB: fit((p) => p.daemonPrivateKiB),
    };
  } finally {
    for (const p of pods) {
      await d.controller.stop(p.id, 1).catch(() => {});
      await d.controller.shutdown(p.id).catch(() => {});
    }
    await d.cleanup();
  }
}
