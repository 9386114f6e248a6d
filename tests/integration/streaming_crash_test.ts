/**
 * Streamed output across a daemon crash, and the two output streams of one
 * process sharing its monitor's io socket (reliability suite). The monitor
 * keeps output until the daemon acknowledges having passed it on to the
 * reader, so a daemon killed mid-flood loses nothing; each stream has its own
 * window, so an unread stderr does not hold up stdout.
 */
import assert from "node:assert/strict";
import { K8S_NS, taskClient, withDaemon } from "../support/daemon.ts";
import { createContainer, randomId, startPod } from "../support/pod.ts";
import { runcUnavailable, skipUnless } from "../support/env.ts";
import { drainOutput, openStream, streamUrl, type TestStream } from "../support/streams.ts";
import { assertShutdownLeavesNothing } from "../support/leaks.ts";
import { Any } from "../../src/gen/containerd/google/protobuf/any.ts";
import { Data, WindowUpdate } from "../../src/gen/containerd/types/transfer/streaming.ts";

const TOTAL = 32 << 20;
/** Position-checkable output: any hole or repeat shows. */
const SEQ = `seq 1 5000000 | head -c ${TOTAL}`;

/** Where `got` first differs from `want` (-1: equal). */
function firstDifference(got: Uint8Array, want: Uint8Array): number {
  const n = Math.min(got.length, want.length);
  for (let i = 0; i < n; i++) if (got[i] !== want[i]) return i;
  return got.length === want.length ? -1 : n;
}

Deno.test({
  name: "streaming IO: a daemon SIGKILLed mid-flood loses no output",
  ...skipUnless(runcUnavailable(), "streaming crash"),
  fn: () =>
    withDaemon(async (d) => {
      const want = (await new Deno.Command("sh", { args: ["-c", SEQ], stdout: "piped" }).output())
        .stdout;
      assert.equal(want.length, TOTAL);
      const pod = await startPod(d);
      const cid = randomId();
      const out = await openStream(pod.address, `${cid}-stdout`);
      await createContainer(d, pod, {
        args: ["sh", "-c", SEQ],
        stdout: streamUrl(pod.address, `${cid}-stdout`),
      }, cid);
      const t = await taskClient(pod.address);
      await t.task.start({ id: cid, execId: "" }, K8S_NS);
      const got = new Uint8Array(2 * TOTAL);
      let bytes = 0, killed = false;
      await drainOutput(out, async (data) => {
        got.set(data.subarray(0, got.length - bytes), bytes);
        bytes += data.length;
        if (!killed && bytes >= 4 << 20) {
          killed = true;
          // The reader stalls: the daemon's channel, its socket and the
          // monitor's window fill with output it has taken but not passed on.
          await new Promise((r) => setTimeout(r, 1000));
          await d.kill9();
          await d.spawn();
        }
      });
      const t2 = await taskClient(pod.address);
      const w = await t2.task.wait({ id: cid, execId: "" }, K8S_NS);
      assert.equal(w.exitStatus, 0);
      const at = firstDifference(got.subarray(0, Math.min(bytes, got.length)), want);
      const near = (b: Uint8Array) => new TextDecoder().decode(b.subarray(at, at + 24));
      assert.equal(
        at,
        -1,
        `output differs at byte ${at} of ${bytes}: got ${JSON.stringify(near(got))}, ` +
          `want ${JSON.stringify(near(want))}`,
      );
      await t2.task.delete({ id: cid, execId: "" }, K8S_NS);
      out.close();
      t.close();
      t2.close();
      await assertShutdownLeavesNothing(d, [pod.id]);
    }),
});

Deno.test({
  name: "streaming IO: stderr attached but never read does not stall stdout",
  ...skipUnless(runcUnavailable(), "streaming two streams"),
  fn: () =>
    withDaemon(async (d) => {
      const pod = await startPod(d);
      const cid = randomId();
      const out = await openStream(pod.address, `${cid}-stdout`);
      const err = await openStream(pod.address, `${cid}-stderr`); // attached, never read
      const size = 8 << 20;
      await createContainer(d, pod, {
        args: ["sh", "-c", `head -c ${size} /dev/zero >&2 & head -c ${size} /dev/zero; wait`],
        stdout: streamUrl(pod.address, `${cid}-stdout`),
        stderr: streamUrl(pod.address, `${cid}-stderr`),
      }, cid);
      const t = await taskClient(pod.address);
      await t.task.start({ id: cid, execId: "" }, K8S_NS);
      // stdout never ends while stderr is stuck (both shells hold both pipes):
      // what counts is that all of stdout arrives.
      let bytes = 0;
      let all!: () => void;
      const arrived = new Promise<string>((r) => (all = () => r("arrived")));
      const reading = drainOutput(out, (x) => {
        bytes += x.length;
        if (bytes >= size) all();
      });
      // Without separate windows stdout stalls: a deadline turns that hang into a failure.
      let timer: ReturnType<typeof setTimeout> | undefined;
      const deadline = new Promise<string>((r) => (timer = setTimeout(() => r("stalled"), 60_000)));
      const r = await Promise.race([arrived, deadline]);
      clearTimeout(timer);
      assert.equal(r, "arrived", `stdout stalled at ${bytes} bytes because stderr was not read`);
      assert.equal(bytes, size);
      await t.task.kill({ id: cid, execId: "", signal: 9, all: true }, K8S_NS);
      await t.task.wait({ id: cid, execId: "" }, K8S_NS);
      await reading;
      await t.task.delete({ id: cid, execId: "" }, K8S_NS);
      out.close();
      err.close();
      t.close();
      await assertShutdownLeavesNothing(d, [pod.id]);
    }),
});

/** Writes `data` to an input stream within the windows the server grants, as containerd does. */
async function writeWindowed(s: TestStream, data: Uint8Array): Promise<void> {
  let credit = 0;
  for (let off = 0; off < data.length;) {
    while (credit <= 0) {
      const m = await s.it.next();
      if (m.done) throw new Error("stdin stream closed");
      const a = Any.decode(m.value);
      if (a.typeUrl.endsWith("WindowUpdate")) credit += WindowUpdate.decode(a.value).update;
    }
    const chunk = data.subarray(off, off + Math.min(credit, 32 << 10));
    await s.stream.send(
      Any.encode({
        typeUrl: "containerd.types.transfer.Data",
        value: Data.encode({ data: chunk }).finish(),
      }).finish(),
    );
    off += chunk.length;
    credit -= chunk.length;
  }
  await s.stream.closeSend();
}

Deno.test({
  name: "streaming IO: much stdin through cat while stdout is read slowly: no deadlock",
  ...skipUnless(runcUnavailable(), "streaming stdin"),
  fn: () =>
    withDaemon(async (d) => {
      // Output backs up into the monitor while stdin keeps coming: acknowledgements
      // of output must still reach the monitor past the stdin it cannot yet take.
      const pod = await startPod(d);
      const cid = randomId();
      const out = await openStream(pod.address, `${cid}-stdout`);
      const inp = await openStream(pod.address, `${cid}-stdin`);
      await createContainer(d, pod, {
        args: ["cat"],
        stdin: streamUrl(pod.address, `${cid}-stdin`),
        stdout: streamUrl(pod.address, `${cid}-stdout`),
      }, cid);
      const t = await taskClient(pod.address);
      await t.task.start({ id: cid, execId: "" }, K8S_NS);
      const input = new Uint8Array(16 << 20).map((_, i) => i % 253);
      const got = new Uint8Array(input.length);
      let bytes = 0, stalled = false;
      const reading = drainOutput(out, async (x) => {
        got.set(x.subarray(0, got.length - bytes), bytes);
        bytes += x.length;
        if (!stalled && bytes >= 1 << 20) {
          stalled = true;
          await new Promise((r) => setTimeout(r, 3000));
        }
      });
      const flow = (async () => {
        await writeWindowed(inp, input);
        await t.task.closeIO({ id: cid, execId: "", stdin: true }, K8S_NS);
        await reading;
        return "done";
      })();
      // After a deadline the teardown fails these: the race has told already.
      flow.catch(() => {});
      reading.catch(() => {});
      // A deadlock hangs: the deadline turns it into a failure.
      let timer: ReturnType<typeof setTimeout> | undefined;
      const deadline = new Promise<string>((r) => (timer = setTimeout(() => r("stuck"), 60_000)));
      const r = await Promise.race([flow, deadline]);
      clearTimeout(timer);
      assert.equal(r, "done", `output stuck at ${bytes} bytes`);
      assert.equal(bytes, input.length);
      assert.equal(firstDifference(got, input), -1);
      assert.equal((await t.task.wait({ id: cid, execId: "" }, K8S_NS)).exitStatus, 0);
      await t.task.delete({ id: cid, execId: "" }, K8S_NS);
      out.close();
      inp.close();
      t.close();
      await assertShutdownLeavesNothing(d, [pod.id]);
    }),
});
