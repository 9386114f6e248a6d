/**
 * One runC sandboxer with many pods (1000 by default), each with one `sleep`
 * container started through the Task API: how pod start latency, memory,
 * Controller.Status and Task.State latency grow with the pod count, and how
 * long the daemon takes to recover all of them after a SIGKILL.
 *
 * @module
 */
import { join } from "node:path";
import { K8S_NS, taskClient, TestDaemon } from "../../tests/support/daemon.ts";
import { writeBundle } from "../../tests/support/oci.ts";
import { overlayRootfs } from "../../tests/support/rootfs.ts";
import { mountAll, unmountAll } from "../../src/adapters/os/mounts.ts";
import { startContainer, startPod, type TestPod } from "../../tests/support/pod.ts";
import { RECLAIM_SETTLED_MS } from "../../src/adapters/os/memory.ts";
import { percentile, pidsMatching, settledPss, sumPss } from "./pss.ts";

/** Figures at one pod count. */
export interface ScalePoint {
  readonly pods: number;
  /** Pod + first container start (ms) of the last 10 pods started to reach this count. */
  readonly startMs: number[];
  /** Of which the pod (Controller Create + Start) and the container (Task Create + Start). */
  readonly podMs: number[];
  readonly containerMs: number[];
  /** `runc run --detach` of the same container by itself, with this many pods around (ms). */
  readonly bareRuncMs: number[];
  readonly daemonKiB: number;
  /** Holders, monitors and the relay. */
  readonly helpersKiB: number;
  /** The kernel's mount objects (slab `mnt_cache`), every namespace's, KiB (NaN if unreadable). */
  readonly kernelMountsKiB: number;
  /** Controller.Status and Task.State (on an open connection) latencies, ms. */
  readonly statusMs: number[];
  readonly stateMs: number[];
}

/** What a restart after SIGKILL took, with `pods` pods. */
export interface Recovery {
  readonly pods: number;
  /** Until the new daemon's socket answers. */
  readonly listenMs: number;
  /** Until it has logged the end of its recovery. */
  readonly recoveredMs: number;
  /** The recovery's own figure (its log line). */
  readonly loggedMs: number;
  /** Pods answering SANDBOX_READY afterwards, and containers RUNNING. */
  readonly ready: number;
  readonly running: number;
}

export interface ScaleResult {
  readonly points: ScalePoint[];
  readonly recovery: Recovery;
  /** Stop + Shutdown of every pod, 8 at a time. */
  readonly teardownMs: number;
}

async function timed<T>(f: () => Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const r = await f();
  return [r, performance.now() - t0];
}

async function startOne(d: TestDaemon): Promise<[TestPod, string, number, number]> {
  const [pod, podMs] = await timed(() => startPod(d));
  const [c, containerMs] = await timed(() => startContainer(d, pod, { args: ["sleep", "100000"] }));
  return [pod, c.id, podMs, containerMs];
}

/**
 * `runc run --detach` of a busybox `sleep` on its own overlay rootfs, without the sandboxer,
 * timed, then deleted: what runc and the kernel take with the pods around, for comparison.
 */
async function bareRunc(base: string, i: number): Promise<number> {
  const id = `bare-${i}`;
  const bundle = join(base, "bare", id);
  await writeBundle(bundle, id, { args: ["sleep", "100000"], sandboxPid: 0, sandboxId: id });
  const specPath = join(bundle, "config.json");
  const spec = JSON.parse(await Deno.readTextFile(specPath));
  delete spec.linux.cgroupsPath;
  spec.linux.namespaces = spec.linux.namespaces.map((n: { type: string }) => ({ type: n.type }));
  await Deno.writeTextFile(specPath, JSON.stringify(spec));
  const rootfs = join(bundle, "rootfs");
  await mountAll(await overlayRootfs(join(base, "bare-snap", id)), rootfs);
  const runc = ["--root", join(base, "bare-root")];
  const quiet = (args: string[]) =>
    new Deno.Command("runc", {
      args: [...runc, ...args],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn().status;
  try {
    const [st, ms] = await timed(() => quiet(["run", "--detach", "--bundle", bundle, id]));
    if (!st.success) throw new Error(`runc run ${id} failed (${st.code})`);
    return ms;
  } finally {
    await quiet(["delete", "--force", id]);
    await unmountAll(rootfs);
    await Deno.remove(bundle, { recursive: true }).catch(() => {});
  }
}

/** Latencies of Controller.Status and Task.State over a sample of the pods. */
async function latencies(
  d: TestDaemon,
  pods: { pod: TestPod; container: string }[],
): Promise<{ statusMs: number[]; stateMs: number[] }> {
  const statusMs: number[] = [], stateMs: number[] = [];
  const step = Math.max(1, Math.floor(pods.length / 20));
  for (let i = 0; i < pods.length; i += step) {
    const { pod, container } = pods[i];
    statusMs.push((await timed(() => d.controller.status(pod.id)))[1]);
    const t = await taskClient(pod.address);
    try {
      await t.task.state({ id: container, execId: "" }, K8S_NS); // the connection's first call
      stateMs.push((await timed(() => t.task.state({ id: container, execId: "" }, K8S_NS)))[1]);
    } finally {
      t.close();
    }
  }
  return { statusMs, stateMs };
}

/** Active objects × size of the kernel's `mnt_cache` slab, in KiB. */
async function kernelMountsKiB(): Promise<number> {
  const line = (await Deno.readTextFile("/proc/slabinfo").catch(() => "")).split("\n")
    .find((l) => l.startsWith("mnt_cache "));
  const f = line?.split(/\s+/);
  return f ? Number(f[1]) * Number(f[3]) / 1024 : NaN;
}

async function memory(
  d: TestDaemon,
): Promise<{ daemonKiB: number; helpersKiB: number; kernelMountsKiB: number }> {
  // Steady state: both of the daemon's reclaim passes have run since the last start.
  await new Promise((r) => setTimeout(r, RECLAIM_SETTLED_MS + 1000));
  const helpers = (await pidsMatching(d.dir)).filter((p) => p !== d.pid);
  const sleeps = new Set<number>();
  for (const p of helpers) {
    const comm = await Deno.readTextFile(`/proc/${p}/comm`).catch(() => "");
    if (comm.trim() === "sleep") sleeps.add(p);
  }
  return {
    daemonKiB: await settledPss(d.pid),
    helpersKiB: await sumPss(helpers.filter((p) => !sleeps.has(p))),
    kernelMountsKiB: await kernelMountsKiB(),
  };
}

/** Recovery after SIGKILL: until the socket answers, until the log says recovery ended. */
async function recover(
  d: TestDaemon,
  pods: { pod: TestPod; container: string }[],
): Promise<Recovery> {
  const before = (await d.logs()).length;
  const t0 = performance.now();
  await d.kill9();
  await d.spawn();
  const listenMs = performance.now() - t0;
  let line: string | undefined;
  while (!line) {
    line = (await d.logs()).slice(before).split("\n").find((l) =>
      l.includes('"recover sandboxes finished"')
    );
    if (!line) await new Promise((r) => setTimeout(r, 20));
  }
  const recoveredMs = performance.now() - t0;
  let ready = 0, running = 0;
  for (const { pod, container } of pods) {
    if ((await d.controller.status(pod.id)).state === "SANDBOX_READY") ready++;
    const t = await taskClient(pod.address);
    try {
      if ((await t.task.state({ id: container, execId: "" }, K8S_NS)).status === 2) running++;
    } finally {
      t.close();
    }
  }
  return {
    pods: pods.length,
    listenMs,
    recoveredMs,
    loggedMs: Number(JSON.parse(line).millis),
    ready,
    running,
  };
}

/** Runs the benchmark up to the last of `counts` pods (ascending), the daemon from `entry`. */
/** Pods started and removed before the first point. */
export const WARMUP_PODS = 10;

export async function scaleBench(counts: number[], entry?: string): Promise<ScaleResult> {
  const d = await TestDaemon.start({ entry, extraArgs: ["--log-level", "info"] });
  const pods: { pod: TestPod; container: string }[] = [];
  try {
    // A warm-up, as the other sections have: the daemon's first pods run its code cold
    // (compiled as it goes), which would slow the first point and flatter the ratio to it.
    for (let i = 0; i < WARMUP_PODS; i++) {
      const [pod] = await startOne(d);
      await d.controller.stop(pod.id, 1);
      await d.controller.shutdown(pod.id);
    }
    const points: ScalePoint[] = [];
    for (const n of counts) {
      const podMs: number[] = [], containerMs: number[] = [];
      while (pods.length < n) {
        const [pod, container, p, c] = await startOne(d);
        pods.push({ pod, container });
        if (pods.length > n - 10) {
          podMs.push(p);
          containerMs.push(c);
        }
      }
      const startMs = podMs.map((p, i) => p + containerMs[i]);
      const bareRuncMs: number[] = [];
      for (let i = 0; i < 5; i++) bareRuncMs.push(await bareRunc(d.base, n * 10 + i));
      const lat = await latencies(d, pods);
      points.push({
        pods: n,
        startMs,
        podMs,
        containerMs,
        bareRuncMs,
        ...await memory(d),
        ...lat,
      });
      console.error(
        `[scale] ${n} pods: start p50 ${percentile(startMs, 50).toFixed(0)} ms, ` +
          `status p50 ${percentile(lat.statusMs, 50).toFixed(1)} ms`,
      );
    }
    const recovery = await recover(d, pods);
    const [, teardownMs] = await timed(async () => {
      const queue = [...pods];
      await Promise.all(Array.from({ length: 8 }, async () => {
        for (let p = queue.shift(); p; p = queue.shift()) {
          await d.controller.stop(p.pod.id, 1).catch(() => {});
          await d.controller.shutdown(p.pod.id).catch(() => {});
        }
      }));
    });
    pods.length = 0;
    return { points, recovery, teardownMs };
  } finally {
    for (const p of pods) {
      await d.controller.stop(p.pod.id, 1).catch(() => {});
      await d.controller.shutdown(p.pod.id).catch(() => {});
    }
    await d.cleanup();
  }
}
