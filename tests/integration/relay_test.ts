/**
 * The task relay under churn and failure: clients that come and go in
 * bursts (containerd opens a connection per task and per stream), and a
 * relay that is killed outright.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { K8S_NS, taskClient, type TestDaemon, withDaemon } from "../support/daemon.ts";
import { createContainer, startPod } from "../support/pod.ts";
import { runcUnavailable, skipUnless } from "../support/env.ts";
import { assertShutdownLeavesNothing, leftovers } from "../support/leaks.ts";

const skip = skipUnless(runcUnavailable(), "task relay");

async function relayPid(d: TestDaemon): Promise<number> {
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    const cmd = await Deno.readTextFile(`/proc/${e.name}/cmdline`).catch(() => "");
    if (cmd.includes("\0relay\0") && cmd.includes(join(d.dir, ".relay.sock"))) {
      return Number(e.name);
    }
  }
  return 0;
}

Deno.test({
  name: "relay: hundreds of short connections, some cut mid-request, leave it serving",
  ...skip,
  fn: () =>
    withDaemon(async (d) => {
      const pod = await startPod(d);
      const path = pod.address.replace("ttrpc+unix://", "");
      const pid = await relayPid(d);
      assert.ok(pid > 0);
      for (let round = 0; round < 20; round++) {
        await Promise.all(Array.from({ length: 20 }, async (_, i) => {
          const c = await Deno.connect({ transport: "unix", path });
          // Half of them hang up in the middle of a frame header.
          if (i % 2) await c.write(new Uint8Array([0, 0, 0, 8, 0]));
          c.close();
        }));
      }
      assert.equal(await relayPid(d), pid, "the same relay is still there");
      const t = await taskClient(pod.address);
      await assert.rejects(t.task.state({ id: "nope", execId: "" }, K8S_NS), /not found/);
      t.close();
      await assertShutdownLeavesNothing(d, [pod.id]);
    }),
});

Deno.test({
  name: "relay: a killed relay is replaced and pods' task sockets work again",
  ...skip,
  fn: () =>
    withDaemon(async (d) => {
      const pod = await startPod(d);
      const c = await createContainer(d, pod, { args: ["sleep", "100"] });
      const pid = await relayPid(d);
      Deno.kill(pid, "SIGKILL");
      let next = 0;
      for (let i = 0; i < 50 && (!next || next === pid); i++) {
        await new Promise((r) => setTimeout(r, 200));
        next = await relayPid(d);
      }
      assert.ok(next && next !== pid, "a new relay runs");
      let ok = false;
      for (let i = 0; i < 25 && !ok; i++) {
        try {
          const t = await taskClient(pod.address);
          ok = (await t.task.state({ id: c.id, execId: "" }, K8S_NS)).status === 1;
          t.close();
        } catch {
          await new Promise((r) => setTimeout(r, 200));
        }
      }
      assert.ok(ok, "the pod's task socket answers through the new relay");
      await assertShutdownLeavesNothing(d, [pod.id]);
    }),
});

Deno.test({
  name: "relay: a pod started while the last other one shuts down keeps its task socket",
  ...skip,
  fn: () =>
    withDaemon(async (d) => {
      let pods = await Promise.all(Array.from({ length: 8 }, () => startPod(d)));
      for (let round = 0; round < 6; round++) {
        // Shutting down the last pods stops the relay; the starts race it.
        const [, next] = await Promise.all([
          Promise.all(pods.map((p) => d.controller.shutdown(p.id))),
          Promise.all(Array.from({ length: 8 }, () => startPod(d))),
        ]);
        for (const p of next) {
          const t = await taskClient(p.address);
          await assert.rejects(t.task.state({ id: "none", execId: "" }, K8S_NS), /not found/);
          t.close();
        }
        pods = next;
      }
      for (const p of pods) await d.controller.shutdown(p.id);
      assert.deepEqual(await leftovers(d, pods.map((p) => p.id)), []);
    }),
});
