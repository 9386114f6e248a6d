/**
 * The rest of the Task API against real runc: pause/resume, kill of all
 * processes, stdin and CloseIO, Connect, Shutdown, OOM kills in a running
 * container, version 2 of the service, and the Controller's graceful-then-
 * forced Stop and Metrics for runC pods. Events go to a stand-in for
 * containerd's Events service.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { K8S_NS, mkfifo, readFifo, taskClient, TestDaemon, withDaemon } from "../support/daemon.ts";
import { execRequest } from "../support/oci.ts";
import { createContainer, startPod } from "../support/pod.ts";
import { runcUnavailable, skipUnless } from "../support/env.ts";
import { decodeMetrics, freezerState } from "../support/cgroups.ts";
import { type EventsSink, withEventsDaemon } from "../support/events.ts";
import { assertShutdownLeavesNothing, leftovers } from "../support/leaks.ts";
import { TaskOOM } from "../../src/gen/containerd/events/task.ts";

const skip = skipUnless(runcUnavailable(), "runC Task API");

const RUNNING = 2, PAUSED = 4;

const topics = (sink: EventsSink) => sink.events.map((e) => e.topic);

/** Waits until `path` exists (a container's sign that it is set up). */
async function ready(path: string): Promise<void> {
  for (let i = 0; i < 250; i++) {
    if (await Deno.stat(path).then(() => true, () => false)) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`${path} never appeared`);
}

Deno.test({
  name: "runC: pause and resume freeze the container's cgroup; exec events; kill all ends execs",
  ...skip,
  fn: () =>
    withEventsDaemon(async (d, sink) => {
      const pod = await startPod(d);
      const c = await createContainer(d, pod, { args: ["sleep", "1000"] });
      const t = await taskClient(pod.address);
      try {
        await t.task.start({ id: c.id, execId: "" }, K8S_NS);
        await t.task.exec(execRequest(c.id, "e1", ["sleep", "1000"], ""), K8S_NS);
        await t.task.start({ id: c.id, execId: "e1" }, K8S_NS);
        await sink.until((e) => e.some((x) => x.topic === "/tasks/exec-started"));
        assert.ok(topics(sink).includes("/tasks/exec-added"));

        const cgroup = `${d.cgroupParent}/${c.id}`;
        await t.task.pause({ id: c.id }, K8S_NS);
        assert.equal((await t.task.state({ id: c.id, execId: "" }, K8S_NS)).status, PAUSED);
        assert.equal(await freezerState(cgroup), "FROZEN");
        await t.task.resume({ id: c.id }, K8S_NS);
        assert.equal((await t.task.state({ id: c.id, execId: "" }, K8S_NS)).status, RUNNING);
        assert.equal(await freezerState(cgroup), "THAWED");
        await sink.until((e) => e.some((x) => x.topic === "/tasks/resumed"));
        const t1 = topics(sink);
        assert.ok(t1.indexOf("/tasks/paused") >= 0, t1.join(" "));
        assert.ok(t1.indexOf("/tasks/paused") < t1.indexOf("/tasks/resumed"));

        // all = true reaches the exec too, not only the init.
        const wInit = t.task.wait({ id: c.id, execId: "" }, K8S_NS);
        const wExec = t.task.wait({ id: c.id, execId: "e1" }, K8S_NS);
        await t.task.kill({ id: c.id, execId: "", signal: 9, all: true }, K8S_NS);
        assert.equal((await wInit).exitStatus, 137);
        assert.equal((await wExec).exitStatus, 137);
        await t.task.delete({ id: c.id, execId: "e1" }, K8S_NS);
        await t.task.delete({ id: c.id, execId: "" }, K8S_NS);
      } finally {
        t.close();
      }
      await assertShutdownLeavesNothing(d, [pod.id]);
    }),
});

Deno.test({
  name:
    "runC: an OOM kill in a running container reaches the Events service; the container goes on",
  ...skip,
  fn: () =>
    withEventsDaemon(async (d, sink) => {
      const pod = await startPod(d);
      const c = await createContainer(d, pod, {
        args: ["sleep", "1000"],
        memoryLimit: 16 * 1024 * 1024,
      });
      const t = await taskClient(pod.address);
      try {
        await t.task.start({ id: c.id, execId: "" }, K8S_NS);
        // dd allocates its 64 MiB block and fills it: the kernel kills it, not the container.
        await t.task.exec(
          execRequest(c.id, "hog", ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"], ""),
          K8S_NS,
        );
        const w = t.task.wait({ id: c.id, execId: "hog" }, K8S_NS);
        await t.task.start({ id: c.id, execId: "hog" }, K8S_NS);
        assert.equal((await w).exitStatus, 137);
        await sink.until((e) => e.some((x) => x.topic === "/tasks/oom"));
        const oom = sink.events.filter((e) => e.topic === "/tasks/oom");
        assert.equal(oom.length, 1, topics(sink).join(" "));
        assert.equal(TaskOOM.decode(oom[0].value).containerId, c.id);
        assert.equal((await t.task.state({ id: c.id, execId: "" }, K8S_NS)).status, RUNNING);
        await t.task.delete({ id: c.id, execId: "hog" }, K8S_NS);

        // The init's exit does not report the same kill again.
        const wi = t.task.wait({ id: c.id, execId: "" }, K8S_NS);
        await t.task.kill({ id: c.id, execId: "", signal: 9, all: false }, K8S_NS);
        await wi;
        await t.task.delete({ id: c.id, execId: "" }, K8S_NS);
        await sink.until((e) => e.some((x) => x.topic === "/tasks/delete"));
        assert.equal(sink.events.filter((e) => e.topic === "/tasks/oom").length, 1);
      } finally {
        t.close();
      }
      await assertShutdownLeavesNothing(d, [pod.id]);
    }),
});

Deno.test({
  name: "runC: stdin through a FIFO and CloseIO; Connect and Shutdown answer; Task API v2",
  ...skip,
  fn: () =>
    withDaemon(async (d) => {
      const pod = await startPod(d);
      assert.equal(pod.version, 2, "Start reports the configured Task API version");
      const stdin = join(d.base, "in"), stdout = join(d.base, "out");
      await mkfifo(stdin);
      await mkfifo(stdout);
      // containerd opens the FIFO's write end before Task.Create.
      const writer = await Deno.open(stdin, { read: true, write: true });
      const out = readFifo(stdout);
      const c = await createContainer(d, pod, { args: ["cat"], stdin, stdout });
      const t = await taskClient(pod.address, 2);
      try {
        const conn = await t.task.connect({ id: c.id }, K8S_NS);
        assert.equal(conn.shimPid, d.pid, "one daemon serves every pod");
        assert.equal(conn.taskPid, c.pid);
        assert.ok(conn.version);
        const w = t.task.wait({ id: c.id, execId: "" }, K8S_NS);
        await t.task.start({ id: c.id, execId: "" }, K8S_NS);
        await writer.write(new TextEncoder().encode("ping\n"));
        await t.task.closeIO({ id: c.id, execId: "", stdin: true }, K8S_NS);
        writer.close();
        assert.equal((await w).exitStatus, 0);
        assert.equal(await out.text, "ping\n");
        // containerd's file:// stdio: output appended to a regular file.
        const file = join(d.base, "out.log");
        const f = await createContainer(d, pod, {
          args: ["echo", "filed"],
          stdout: `file://${file}`,
        });
        const wf = t.task.wait({ id: f.id, execId: "" }, K8S_NS);
        await t.task.start({ id: f.id, execId: "" }, K8S_NS);
        assert.equal((await wf).exitStatus, 0);
        assert.equal(await Deno.readTextFile(file), "filed\n");
        await t.task.delete({ id: f.id, execId: "" }, K8S_NS);
        // A pod's Shutdown call must not end the daemon that serves every pod.
        await t.task.shutdown({ id: c.id, now: false }, K8S_NS);
        assert.equal((await t.task.state({ id: c.id, execId: "" }, K8S_NS)).exitStatus, 0);
        await t.task.delete({ id: c.id, execId: "" }, K8S_NS);
      } finally {
        t.close();
      }
      await assertShutdownLeavesNothing(d, [pod.id]);
    }, () => TestDaemon.start({ extraArgs: ["--task-api-version", "2"] })),
});

Deno.test({
  name: "runC: Controller.Stop is graceful, then forced after timeout_secs; Metrics of a runC pod",
  ...skip,
  fn: () =>
    withDaemon(async (d) => {
      const polite = await startPod(d);
      const stubborn = await startPod(d);
      // Each says when its trap is set; `wait` returns to the shell on a signal.
      const pc = await createContainer(d, polite, {
        args: ["sh", "-c", "trap 'exit 5' TERM; touch /tmp/ready; sleep 1000 & wait"],
      });
      const sc = await createContainer(d, stubborn, {
        args: ["sh", "-c", "trap '' TERM; touch /tmp/ready; sleep 1000 & wait"],
      });
      const tp = await taskClient(polite.address), ts = await taskClient(stubborn.address);
      try {
        await tp.task.start({ id: pc.id, execId: "" }, K8S_NS);
        await ts.task.start({ id: sc.id, execId: "" }, K8S_NS);
        for (const c of [pc, sc]) await ready(`/proc/${c.pid}/root/tmp/ready`);

        const m = decodeMetrics((await d.controller.metrics(polite.id)).metrics?.data);
        assert.ok(m.memoryUsage > 0, "pod memory usage");
        assert.ok(m.pids >= 2, `pod pids ${m.pids}`);

        const wp = tp.task.wait({ id: pc.id, execId: "" }, K8S_NS);
        await d.controller.stop(polite.id, 10);
        assert.equal((await wp).exitStatus, 5, "SIGTERM first, and the container's own exit");

        const ws = ts.task.wait({ id: sc.id, execId: "" }, K8S_NS);
        const begun = Date.now();
        await d.controller.stop(stubborn.id, 1);
        assert.equal((await ws).exitStatus, 137, "SIGKILL once timeout_secs ran out");
        assert.ok(Date.now() - begun >= 900, "the grace period was given");
        for (const pod of [polite, stubborn]) {
          assert.equal((await d.controller.status(pod.id)).state, "SANDBOX_NOTREADY");
        }
      } finally {
        tp.close();
        ts.close();
      }
      for (const pod of [polite, stubborn]) await d.controller.shutdown(pod.id);
      assert.deepEqual(await leftovers(d, [polite.id, stubborn.id]), []);
    }),
});
