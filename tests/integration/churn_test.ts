/**
 * Reliability suite: pod churn with leak accounting, every kind that runs
 * here (VM pods few: each boots a guest under TCG). Hundreds of pods are
 * created, run a container to its exit, and are shut down, several at a
 * time; afterwards nothing of them is left (processes, mounts, cgroups,
 * files under --dir) and the daemon holds no more file descriptors and the
 * node no more network namespaces than before.
 */
import assert from "node:assert/strict";
import { startGvisorDaemon, startVmmDaemon, TestDaemon, withDaemon } from "../support/daemon.ts";
import { createContainer, runToExit, startPod, type TestPod } from "../support/pod.ts";
import { runcUnavailable, runscUnavailable, skipUnless, vmUnavailable } from "../support/env.ts";
import { leftovers } from "../support/leaks.ts";
import { buildWasmModules, createWasmContainer, wasmToolsUnavailable } from "../support/wasm.ts";

/** Open file descriptors of process `pid`. */
function fdCount(pid: number): number {
  return [...Deno.readDirSync(`/proc/${pid}/fd`)].length;
}

/**
 * Distinct network namespaces held by processes of daemon `d` (in its cgroup
 * parent, or naming its directory): a namespace lives as long as a process,
 * a mount or an fd holds it; mounts and the daemon's fds are counted apart.
 */
function netnsOf(d: TestDaemon): number {
  const seen = new Set<string>();
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const cmd = Deno.readTextFileSync(`/proc/${e.name}/cmdline`);
      const cgroup = Deno.readTextFileSync(`/proc/${e.name}/cgroup`);
      if (!cmd.includes(d.base) && !cgroup.includes(`:${d.cgroupParent}/`)) continue;
      seen.add(Deno.readLinkSync(`/proc/${e.name}/ns/net`));
    } catch { /* gone, or a kernel thread */ }
  }
  return seen.size;
}

/** Runs `pods` pods through their whole life, `parallel` at a time, and accounts for leaks. */
async function churn(
  d: TestDaemon,
  pods: number,
  parallel: number,
  run: (pod: TestPod) => Promise<{ id: string }>,
): Promise<void> {
  const ids: string[] = [];
  const lifeOfPod = async () => {
    const pod = await startPod(d, { cgroupParent: d.cgroupParent });
    ids.push(pod.id);
    const c = await run(pod);
    assert.equal(await runToExit(pod, c.id), 0);
    await d.controller.shutdown(pod.id);
  };
  // One pod first: what the daemon opens once, on first use (watchers, helpers), is open after it.
  await lifeOfPod();
  const fds = fdCount(d.pid), netns = netnsOf(d);
  let next = 1;
  const worker = async () => {
    while (next < pods) {
      next++;
      await lifeOfPod();
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
  assert.equal(ids.length, pods);
  assert.deepEqual(await leftovers(d, ids), []);
  // Connections the relay hands over close a moment after their last use.
  for (let i = 0; i < 50 && fdCount(d.pid) > fds; i++) {
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(fdCount(d.pid) <= fds, `daemon fds: ${fds} before, ${fdCount(d.pid)} after`);
  assert.ok(netnsOf(d) <= netns, `network namespaces: ${netns} before, ${netnsOf(d)} after`);
}

Deno.test({
  name: "churn: 300 runC pods come and go, nothing leaks",
  ...skipUnless(runcUnavailable(), "runC churn"),
  fn: () =>
    withDaemon((d) => churn(d, 300, 6, (pod) => createContainer(d, pod, { args: ["true"] }))),
});

Deno.test({
  name: "churn: 300 Wasm pods come and go, nothing leaks",
  ...skipUnless(
    (Deno.uid() !== 0 ? "needs root" : undefined) ?? wasmToolsUnavailable(),
    "Wasm churn",
  ),
  fn: async () => {
    const modules = await buildWasmModules();
    await withDaemon(
      (d) => churn(d, 300, 6, (pod) => createWasmContainer(d, pod, modules, { module: "hello" })),
      () => TestDaemon.start({ kind: "wasm" }),
    );
  },
});

Deno.test({
  name: "churn: 30 gVisor pods come and go, nothing leaks",
  ...skipUnless(runscUnavailable(), "gVisor churn"),
  fn: () =>
    withDaemon(
      (d) => churn(d, 30, 3, (pod) => createContainer(d, pod, { args: ["true"] })),
      () => startGvisorDaemon(),
    ),
});

Deno.test({
  name: "churn: 4 VM pods come and go, nothing leaks",
  ...skipUnless(Deno.uid() !== 0 ? "needs root" : vmUnavailable(), "VM churn"),
  fn: () =>
    withDaemon(
      (d) => churn(d, 4, 2, (pod) => createContainer(d, pod, { args: ["true"] })),
      () => startVmmDaemon(),
    ),
});
