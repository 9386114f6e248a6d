/**
 * Pods and the daemon's own state share --dir: no pod id may name (and so
 * delete, or shadow) the daemon's entries, Shutdown never answers OK while
 * a container process runs, and a --dir written with the old names keeps
 * working after an upgrade.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { K8S_NS, taskClient, TestDaemon, withDaemon } from "../support/daemon.ts";
import { assertShutdownLeavesNothing, leftovers } from "../support/leaks.ts";
import { startContainer, startPod } from "../support/pod.ts";
import { runcUnavailable, skipUnless } from "../support/env.ts";

const skip = skipUnless(runcUnavailable(), "state layout");

/** Names the daemon kept directly under --dir before they moved out of the ids' namespace. */
const OLD_DAEMON_NAMES = [
  "runc",
  "runsc",
  "exits",
  "s",
  "pause-rootfs",
  "wasm-io",
  "wasm-host.log",
  "wasm-host.sock",
  "relay.sock",
  "relay.log",
  "task-backend.sock",
];

/** The directory holding runc's state of container `cid`, wherever the daemon keeps its root. */
async function runcStateOf(d: TestDaemon, cid: string): Promise<string> {
  for await (const e of Deno.readDir(d.dir)) {
    const p = join(d.dir, e.name, cid);
    if (await Deno.stat(join(p, "state.json")).then(() => true, () => false)) return p;
  }
  throw new Error(`no runc state of ${cid} under ${d.dir}`);
}

/** SIGKILLs a running container through the Task API and checks its exit. */
async function killThroughTaskApi(address: string, cid: string): Promise<void> {
  const t = await taskClient(address);
  try {
    const waiting = t.task.wait({ id: cid, execId: "" }, K8S_NS);
    waiting.catch(() => {}); // awaited below unless Kill fails
    await t.task.kill({ id: cid, execId: "", signal: 9, all: false }, K8S_NS);
    assert.equal((await waiting).exitStatus, 137);
  } finally {
    t.close();
  }
}

/** Starts pods named `ids` beside a pod with a running container, shuts them down, checks the other pod. */
async function namedPodsLeaveOthersIntact(d: TestDaemon, ids: string[]): Promise<void> {
  const named = [];
  for (const id of ids) named.push(await startPod(d, { id, hostname: "named" }));
  const other = await startPod(d);
  const c = await startContainer(d, other, { args: ["sleep", "1000"] });
  for (const p of named) await d.controller.shutdown(p.id);
  // The other pod's container is still known to runc: Kill reaches it.
  await killThroughTaskApi(other.address, c.id);
  // (Not by name: a pod id like "runc" would match every runc command line on the node.)
  await assertShutdownLeavesNothing(d, [other.id]);
}

Deno.test({
  name: "state layout: Shutdown of a pod named runc leaves the other pods' containers intact",
  ...skip,
  fn: () => withDaemon((d) => namedPodsLeaveOthersIntact(d, ["runc"])),
});

Deno.test({
  name: "state layout: every name the daemon used under --dir is a pod id like any other",
  ...skip,
  fn: () => withDaemon((d) => namedPodsLeaveOthersIntact(d, OLD_DAEMON_NAMES)),
});

Deno.test({
  name: "state layout: Shutdown does not answer OK while a container whose runc state is gone runs",
  ...skip,
  fn: () =>
    withDaemon(async (d) => {
      const pod = await startPod(d);
      const c = await startContainer(d, pod, { args: ["sleep", "1000"] });
      try {
        await Deno.remove(await runcStateOf(d, c.id), { recursive: true });
        // Either the process is killed by another route, or Shutdown fails (and containerd retries).
        const answer = await d.controller.shutdown(pod.id).then(() => "ok", (e) => String(e));
        const left = await leftovers(d, [pod.id]);
        if (answer === "ok") {
          assert.deepEqual(left, []);
        } else {
          assert.ok(left.some((l) => l.startsWith("process ")), answer);
        }
      } finally {
        // Nothing else would end it when the test fails (its command line names no test path).
        const cmd = await Deno.readTextFile(`/proc/${c.pid}/cmdline`).catch(() => "");
        if (cmd === "sleep\x001000\x00") Deno.kill(c.pid, "SIGKILL");
      }
    }),
});

Deno.test({
  name: "state layout: a --dir of the old layout keeps its pods across the upgrade",
  ...skip,
  fn: () =>
    withDaemon(async (d) => {
      const pod = await startPod(d);
      const c = await startContainer(d, pod, { args: ["sleep", "1000"] });
      assert.ok((await runcStateOf(d, c.id)).startsWith(join(d.dir, "runc")));
      await d.kill9();
      await d.spawn();
      assert.equal((await d.controller.status(pod.id)).state, "SANDBOX_READY");
      // While the old names are in use they are no pod ids, and recovery did not take them for pods.
      await assert.rejects(startPod(d, { id: "runc", hostname: "named" }), /sandboxer's own state/);
      await assert.rejects(d.controller.status("exits"), /not found/);
      await killThroughTaskApi(pod.address, c.id);
      await assertShutdownLeavesNothing(d, [pod.id]);
    }, async () => {
      // What the previous version left: its exit records and runc root under plain names.
      const base = await Deno.makeTempDir({ prefix: "k-" });
      for (const name of ["exits", "runc"]) {
        await Deno.mkdir(join(base, "state", name), { recursive: true, mode: 0o700 });
      }
      return await TestDaemon.start({ base });
    }),
});
