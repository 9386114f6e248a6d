/**
 * Streamed output under load (reliability suite): a container that writes
 * far more than its reader takes in waits for the reader instead of growing
 * the daemon, and its exit is reported only once every byte was read.
 */
import assert from "node:assert/strict";
import { K8S_NS, taskClient, withDaemon } from "../support/daemon.ts";
import { createContainer, randomId, startPod } from "../support/pod.ts";
import { runcUnavailable, skipUnless } from "../support/env.ts";
import { openStream, streamUrl } from "../support/streams.ts";
import { readFlood } from "../support/flood.ts";
import { assertShutdownLeavesNothing } from "../support/leaks.ts";

const TOTAL = 128 << 20;
/** Far below TOTAL: with no flow control the daemon holds what the reader has not taken. */
const MAX_GROWTH = 48 << 20;

Deno.test({
  name: "streaming IO: a flood waits for a slow reader; bounded memory, every byte, exit last",
  ...skipUnless(runcUnavailable(), "streaming flood"),
  fn: () =>
    withDaemon(async (d) => {
      const pod = await startPod(d);
      const cid = randomId();
      const out = await openStream(pod.address, `${cid}-stdout`);
      await createContainer(d, pod, {
        args: ["head", "-c", String(TOTAL), "/dev/zero"],
        stdout: streamUrl(pod.address, `${cid}-stdout`),
      }, cid);
      const t = await taskClient(pod.address);
      const r = await readFlood(
        t,
        out,
        cid,
        "",
        { pids: [d.pid], stallMs: 3000 },
        () => t.task.start({ id: cid, execId: "" }, K8S_NS),
      );
      assert.equal(r.exitStatus, 0);
      assert.equal(r.bytes, TOTAL, "every byte arrives");
      assert.equal(r.nonZero, 0);
      assert.equal(r.readAtExit, TOTAL, "the exit is reported after the last byte was read");
      assert.ok(
        r.peakGrowth < MAX_GROWTH,
        `daemon memory grew by ${(r.peakGrowth / 2 ** 20).toFixed(1)} MiB during the flood`,
      );
      await t.task.delete({ id: cid, execId: "" }, K8S_NS);
      out.close();
      t.close();
      await assertShutdownLeavesNothing(d, [pod.id]);
    }),
});
