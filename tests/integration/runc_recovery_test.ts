/**
 * Crash recovery of the runC sandboxer: SIGKILL the daemon while pods run,
 * start it again, and nothing is lost (state, exit codes) or left behind
 * after Shutdown (processes, mounts, cgroups, files).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { K8S_NS, mkfifo, readFifo, taskClient, withDaemon } from "../support/daemon.ts";
import { createContainer, startContainer, startPod, type TestPod } from "../support/pod.ts";
import { runcUnavailable, skipUnless } from "../support/env.ts";
import { assertShutdownLeavesNothing, leftovers } from "../support/leaks.ts";
import { fromTimestamp } from "../../src/adapters/convert.ts";
import { toMillis } from "../../src/domain/time.ts";
import type { Timestamp } from "../../src/gen/containerd/google/protobuf/timestamp.ts";

/** A protobuf Timestamp in epoch milliseconds. */
function millis(t: Timestamp | undefined): number {
  assert.ok(t, "a timestamp");
  return toMillis(fromTimestamp(t)!);
}

const skip = skipUnless(runcUnavailable(), "runC recovery");

Deno.test({
  name: "runC: SIGKILL of the daemon with 5 running pods loses nothing and leaks nothing",
  ...skip,
  fn: () =>
    withDaemon(async (d) => {
      const pods: { pod: TestPod; cid: string; pid: number }[] = [];
      for (let i = 0; i < 5; i++) {
        const pod = await startPod(d, { cgroupParent: d.cgroupParent });
        if (i === 0) await mkfifo(join(d.base, "out0"));
        // Each container waits for a file, then exits with its own code.
        const c = await createContainer(d, pod, {
          args: [
            "sh",
            "-c",
            `while [ ! -e /tmp/go ]; do sleep 0.1; done; echo bye-${i}; exit ${10 + i}`,
          ],
          stdout: i === 0 ? join(d.base, "out0") : "",
        });
        const t = await taskClient(pod.address);
        await t.task.start({ id: c.id, execId: "" }, K8S_NS);
        t.close();
        pods.push({ pod, cid: c.id, pid: c.pid });
      }
      // The leak check sees live pods' processes, cgroups and files (it is not vacuous).
      const live = await leftovers(d, pods.map((p) => p.pod.id));
      for (const kind of ["process", "cgroup", "file"]) {
        assert.ok(live.some((l) => l.startsWith(kind + " ")), `${kind} seen: ${live.join("\n")}`);
      }
      // Pod 4 loses its container while the daemon is down: the exit must still be exact.
      const early = pods[4];
      const goEarly = Date.now();
      await Deno.writeTextFile(`/proc/${early.pid}/root/tmp/go`, "");

      await d.kill9();
      await new Promise((r) => setTimeout(r, 500));
      // The container of pod 4 has exited by now; the others still run.
      const restarted = Date.now();
      await d.spawn();

      for (const { pod } of pods) {
        const st = await d.controller.status(pod.id, true);
        assert.equal(st.state, "SANDBOX_READY", `pod ${pod.id}`);
        assert.equal(st.pid, pod.pid);
        assert.equal(st.address, pod.address);
      }
      {
        const t = await taskClient(early.pod.address);
        const w = await t.task.wait({ id: early.cid, execId: "" }, K8S_NS);
        assert.equal(w.exitStatus, 14, "exit while the daemon was down");
        // The exit time is when it exited (taken by its monitor), not when the new daemon saw it.
        const at = millis(w.exitedAt);
        assert.ok(at >= goEarly - 5 && at <= restarted, `exited at ${at}, go ${goEarly}`);
        t.close();
      }
      // pod 0: stdout still flows to its FIFO after the restart
      const fifoReader = readFifo(join(d.base, "out0"));
      for (let i = 0; i < 4; i++) {
        const { pod, cid, pid } = pods[i];
        const t = await taskClient(pod.address);
        const state = await t.task.state({ id: cid, execId: "" }, K8S_NS);
        assert.equal(state.status, 2, "still running after restart");
        const w = t.task.wait({ id: cid, execId: "" }, K8S_NS);
        const go = Date.now();
        await Deno.writeTextFile(`/proc/${pid}/root/tmp/go`, "");
        const { exitStatus, exitedAt } = await w;
        assert.equal(exitStatus, 10 + i, `true exit code of pod ${i}`);
        const at = millis(exitedAt);
        assert.ok(at >= go - 5 && at <= Date.now(), `exited at ${at}, go ${go}`);
        await t.task.delete({ id: cid, execId: "" }, K8S_NS);
        t.close();
      }
      assert.equal(await fifoReader.text, "bye-0\n");
      {
        const t = await taskClient(early.pod.address);
        await t.task.delete({ id: early.cid, execId: "" }, K8S_NS);
        t.close();
      }
      for (const { pod } of pods) {
        await d.controller.stop(pod.id, 1);
        await d.controller.shutdown(pod.id);
      }
      const left = await leftovers(d, pods.map((p) => p.pod.id));
      assert.deepEqual(left, [], "nothing left after Shutdown");
    }),
});

Deno.test({
  name: "runC: a restart while a container is created but not started keeps it startable",
  ...skip,
  fn: () =>
    withDaemon(async (d) => {
      const pod = await startPod(d);
      const c = await createContainer(d, pod, { args: ["sh", "-c", "exit 5"] });
      await d.kill9();
      await d.spawn();
      const t = await taskClient(pod.address);
      const w = t.task.wait({ id: c.id, execId: "" }, K8S_NS);
      await t.task.start({ id: c.id, execId: "" }, K8S_NS);
      assert.equal((await w).exitStatus, 5);
      await t.task.delete({ id: c.id, execId: "" }, K8S_NS);
      t.close();
      await assertShutdownLeavesNothing(d, [pod.id]);
    }),
});

Deno.test({
  name: "runC: a pod whose holder is killed reports its exit through Wait",
  ...skip,
  fn: () =>
    withDaemon(async (d) => {
      const pod = await startPod(d);
      const c = await createContainer(d, pod, { args: ["sleep", "1000"] });
      const t = await taskClient(pod.address);
      await t.task.start({ id: c.id, execId: "" }, K8S_NS);
      const waiting = d.controller.wait(pod.id);
      Deno.kill(pod.pid, "SIGKILL");
      const w = await waiting;
      assert.equal(w.exitStatus, 137);
      assert.equal((await d.controller.status(pod.id)).state, "SANDBOX_NOTREADY");
      // Containers do not outlive their pod.
      const cw = await t.task.wait({ id: c.id, execId: "" }, K8S_NS);
      assert.equal(cw.exitStatus, 137);
      t.close();
      await assertShutdownLeavesNothing(d, [pod.id]);
    }),
});

Deno.test({
  name: "runC: a pod that died while the daemon was down is reported exited after the restart",
  ...skip,
  fn: () =>
    withDaemon(async (d) => {
      const pod = await startPod(d);
      const c = await startContainer(d, pod, { args: ["sleep", "1000"] });
      await d.kill9();
      const killed = Date.now();
      Deno.kill(pod.pid, "SIGKILL");
      await new Promise((r) => setTimeout(r, 300));
      const restarted = Date.now();
      await d.spawn();
      const st = await d.controller.status(pod.id, true);
      assert.equal(st.state, "SANDBOX_NOTREADY");
      assert.equal(st.pid, 0);
      const w = await d.controller.wait(pod.id);
      assert.equal(w.exitStatus, 137, "the holder's SIGKILL");
      const at = millis(w.exitedAt);
      assert.ok(at >= killed - 5 && at <= restarted, `exit time from the holder's record: ${at}`);
      // Its container does not outlive it.
      const t2 = await taskClient(pod.address);
      assert.equal((await t2.task.wait({ id: c.id, execId: "" }, K8S_NS)).exitStatus, 137);
      await t2.task.delete({ id: c.id, execId: "" }, K8S_NS);
      t2.close();
      await assertShutdownLeavesNothing(d, [pod.id]);
    }),
});

Deno.test({
  name:
    "runC: task connections survive a daemon restart; a Wait in flight returns the true exit code",
  ...skip,
  fn: () =>
    withDaemon(async (d) => {
      const pod = await startPod(d);
      const c = await createContainer(d, pod, {
        args: ["sh", "-c", "while [ ! -e /tmp/go ]; do sleep 0.1; done; exit 23"],
      });
      // One connection, as containerd keeps it, across the whole restart.
      const t = await taskClient(pod.address);
      await t.task.start({ id: c.id, execId: "" }, K8S_NS);
      const waiting = t.task.wait({ id: c.id, execId: "" }, K8S_NS);
      await new Promise((r) => setTimeout(r, 200));
      await d.kill9();
      await d.spawn();
      // The same connection answers new calls...
      const st = await t.task.state({ id: c.id, execId: "" }, K8S_NS);
      assert.equal(st.status, 2);
      // ...and the Wait sent to the old daemon is answered by the new one.
      await Deno.writeTextFile(`/proc/${c.pid}/root/tmp/go`, "");
      assert.equal((await waiting).exitStatus, 23);
      await t.task.delete({ id: c.id, execId: "" }, K8S_NS);
      t.close();
      await assertShutdownLeavesNothing(d, [pod.id]);
    }),
});
