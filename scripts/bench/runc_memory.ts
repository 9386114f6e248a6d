/**
 * Memory of the runC sandboxer per pod: the daemon's PSS and that of the
 * helpers (namespace holders, container monitors) with 10 and 50 running
 * pods, and the marginal cost of one more pod. The baseline is what the
 * containerd shim model costs per pod (a containerd-shim-runc-v2 plus a pause
 * container), measured in the same run when containerd's shim is installed.
 *
 * @module
 */
import { K8S_NS, taskClient, TestDaemon } from "../../tests/support/daemon.ts";
import { createContainer, startPod, type TestPod } from "../../tests/support/pod.ts";
import { pidsMatching, settledPss, sumPss } from "./pss.ts";

/** One measurement point. */
export interface MemoryPoint {
  readonly pods: number;
  readonly daemonKiB: number;
  readonly holdersKiB: number;
  readonly monitorsKiB: number;
}

/** Result of the runC memory benchmark. */
export interface RuncMemoryResult {
  readonly idleDaemonKiB: number;
  readonly points: MemoryPoint[];
  /** (total(50) − total(10)) / 40, in KiB: daemon growth + holder + monitor per pod. */
  readonly marginalKiB: number;
  readonly marginalSandboxOnlyKiB: number;
}

/** How long the daemon waits after the last call before it reclaims memory (IdleReclaimer). */
const RECLAIM_AFTER_MS = 2000;

async function measure(d: TestDaemon, pods: number): Promise<MemoryPoint> {
  // Steady state: the burst of starts is over and the daemon has reclaimed.
  await new Promise((r) => setTimeout(r, RECLAIM_AFTER_MS + 1000));
  const daemonKiB = await settledPss(d.pid);
  const holders = await pidsMatching("\0hold\0--exit-file\0" + d.dir);
  const monitors = await pidsMatching("\0monitor\0--exit-file\0" + d.dir);
  return {
    pods,
    daemonKiB,
    holdersKiB: await sumPss(holders),
    monitorsKiB: await sumPss(monitors),
  };
}

/** Runs the benchmark with `counts` (e.g. [10, 50]) pods of one `sleep` container each. */
export async function runcMemory(counts: number[] = [10, 50]): Promise<RuncMemoryResult> {
  const d = await TestDaemon.start({ extraArgs: ["--log-level", "warn"] });
  const pods: TestPod[] = [];
  try {
    await new Promise((r) => setTimeout(r, RECLAIM_AFTER_MS + 1000));
    const idleDaemonKiB = await settledPss(d.pid);
    const points: MemoryPoint[] = [];
    for (const n of counts) {
      while (pods.length < n) {
        const pod = await startPod(d);
        const c = await createContainer(d, pod, { args: ["sleep", "100000"] });
        const t = await taskClient(pod.address);
        await t.task.start({ id: c.id, execId: "" }, K8S_NS);
        t.close();
        pods.push(pod);
      }
      points.push(await measure(d, n));
    }
    const total = (p: MemoryPoint) => p.daemonKiB + p.holdersKiB + p.monitorsKiB;
    const [a, b] = [points[0], points[points.length - 1]];
    const span = b.pods - a.pods || 1;
    return {
      idleDaemonKiB,
      points,
      marginalKiB: (total(b) - total(a)) / span,
      marginalSandboxOnlyKiB: (b.daemonKiB + b.holdersKiB - a.daemonKiB - a.holdersKiB) / span,
    };
  } finally {
    for (const p of pods) {
      await d.controller.stop(p.id, 1).catch(() => {});
      await d.controller.shutdown(p.id).catch(() => {});
    }
    await d.cleanup();
  }
}
