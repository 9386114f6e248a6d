/**
 * containerd's streaming IO against the real daemon: streams opened before
 * Task.Create, stdout/stderr under flow control, stdin with its window, and
 * output that waits in the monitor while the daemon restarts.
 */
import assert from "node:assert/strict";
import { K8S_NS, taskClient, withDaemon } from "../support/daemon.ts";
import { createContainer, randomId, startPod } from "../support/pod.ts";
import { runcUnavailable, skipUnless } from "../support/env.ts";
import {
  catThroughStreams,
  openStream,
  readOutput,
  streamUrl,
  writeInput,
} from "../support/streams.ts";
import { assertShutdownLeavesNothing } from "../support/leaks.ts";
import { processSpec } from "../support/oci.ts";

const skip = skipUnless(runcUnavailable(), "streaming IO");

Deno.test({
  name: "streaming IO: stdout, stderr and stdin of containers and execs",
  ...skip,
  fn: () =>
    withDaemon(async (d) => {
      const pod = await startPod(d);
      const cid = randomId();
      // As containerd does: streams first (CreateContainer), task later (StartContainer).
      const out = await openStream(pod.address, `${cid}-stdout`);
      const err = await openStream(pod.address, `${cid}-stderr`);
      const inp = await openStream(pod.address, `${cid}-stdin`);
      const outText = readOutput(out);
      const errText = readOutput(err);
      await createContainer(d, pod, {
        args: ["sh", "-c", "read line; echo got:$line; echo oops >&2; exit 4"],
        stdin: streamUrl(pod.address, `${cid}-stdin`),
        stdout: streamUrl(pod.address, `${cid}-stdout`),
        stderr: streamUrl(pod.address, `${cid}-stderr`),
      }, cid);
      const t = await taskClient(pod.address);
      const w = t.task.wait({ id: cid, execId: "" }, K8S_NS);
      await t.task.start({ id: cid, execId: "" }, K8S_NS);
      await writeInput(inp, "hi there\n");
      assert.equal((await w).exitStatus, 4);
      assert.equal(await outText, "got:hi there\n");
      assert.equal(await errText, "oops\n");

      // An exec with a large streamed output: flow control keeps every byte.
      const c2 = await createContainer(d, pod, { args: ["sleep", "100"] });
      await t.task.start({ id: c2.id, execId: "" }, K8S_NS);
      const eid = randomId();
      const eout = await openStream(pod.address, `${eid}-stdout`);
      const eText = readOutput(eout);
      await t.task.exec({
        id: c2.id,
        execId: eid,
        terminal: false,
        stdin: "",
        stdout: streamUrl(pod.address, `${eid}-stdout`),
        stderr: "",
        spec: {
          typeUrl: "x",
          value: new TextEncoder().encode(JSON.stringify(processSpec(["seq", "1", "50000"]))),
        },
      }, K8S_NS);
      const ew = t.task.wait({ id: c2.id, execId: eid }, K8S_NS);
      await t.task.start({ id: c2.id, execId: eid }, K8S_NS);
      assert.equal((await ew).exitStatus, 0);
      const lines = (await eText).trim().split("\n");
      assert.equal(lines.length, 50000);
      assert.equal(lines[49999], "50000");

      // As `crictl exec -i` through containerd: stdin written, its connection closed and
      // CloseIO sent at once. The task relay delivers what a client sent before it left.
      for (let i = 0; i < 20; i++) {
        assert.equal(await catThroughStreams(t, pod.address, c2.id, `line ${i}\n`), `line ${i}\n`);
      }
      for (const s of [out, err, inp, eout]) s.close();
      t.close();
      await assertShutdownLeavesNothing(d, [pod.id]);
    }),
});

Deno.test({
  name: "streaming IO: output written while the daemon is down arrives after its restart",
  ...skip,
  fn: () =>
    withDaemon(async (d) => {
      const pod = await startPod(d);
      const cid = randomId();
      const out = await openStream(pod.address, `${cid}-stdout`);
      const text = readOutput(out);
      await createContainer(d, pod, {
        args: [
          "sh",
          "-c",
          "echo before; while [ ! -e /tmp/go ]; do sleep 0.1; done; echo after; exit 0",
        ],
        stdout: streamUrl(pod.address, `${cid}-stdout`),
      }, cid);
      const t = await taskClient(pod.address);
      const st = await t.task.start({ id: cid, execId: "" }, K8S_NS);
      await new Promise((r) => setTimeout(r, 300));
      await d.kill9();
      await Deno.writeTextFile(`/proc/${st.pid}/root/tmp/go`, "");
      await new Promise((r) => setTimeout(r, 500));
      await d.spawn();
      // The same stream (through the relay) carries on.
      assert.equal(await text, "before\nafter\n");
      assert.equal((await t.task.wait({ id: cid, execId: "" }, K8S_NS)).exitStatus, 0);
      await t.task.delete({ id: cid, execId: "" }, K8S_NS);
      out.close();
      t.close();
      await assertShutdownLeavesNothing(d, [pod.id]);
    }),
});
