/**
 * Streamed output under load (reliability suite): a container that writes
 * far more than its reader takes in waits for the reader instead of growing
 * the daemon, and its exit is reported only once every byte was read.
 */
import assert from "node:assert/strict";
import { K8S_NS, taskClient, TestDaemon, withDaemon } from "../support/daemon.ts";
import { createContainer, randomId, startPod } from "../support/pod.ts";
import { runcUnavailable, skipUnless } from "../support/env.ts";
import { openStream, streamUrl } from "../support/streams.ts";
import { pidsWith, readFlood } from "../support/flood.ts";
import {
  buildWasmModules,
  createWasmContainer,
  wasmtimeUnavailable,
  wasmToolsUnavailable,
} from "../support/wasm.ts";
import { assertShutdownLeavesNothing } from "../support/leaks.ts";

const TOTAL = 256 << 20;
/**
 * Far below TOTAL: with no flow control a process holds what the reader has
 * not taken (all of it, during the stall). With it, each grows by what V8 and
 * malloc keep of the buffers that went through (~50 MiB), whatever the size.
 */
const MAX_GROWTH = 96 << 20;

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
      assert.equal(r.unexpected, 0);
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

const engines: [string, string | undefined][] = [
  ["embedded", undefined],
  ["wasmtime", wasmtimeUnavailable()],
];
for (const [engine, unavailable] of engines) {
  Deno.test({
    name: `streaming IO (wasm/${engine}): a module's flood waits for a slow reader, exit last`,
    ...skipUnless(
      (Deno.uid() !== 0 ? "needs root" : undefined) ?? wasmToolsUnavailable() ?? unavailable,
      `Wasm flood on ${engine}`,
    ),
    fn: async () => {
      const modules = await buildWasmModules();
      await withDaemon(async (d) => {
        const pod = await startPod(d);
        const t = await taskClient(pod.address);
        // The engine's own start-up (Wasmtime's library and compiler) is not the flood's.
        const warm = await createWasmContainer(d, pod, modules, {
          module: "hello",
          annotations: { "io.kuasar.wasm.engine": engine },
        });
        const warmExit = t.task.wait({ id: warm.id, execId: "" }, K8S_NS);
        await t.task.start({ id: warm.id, execId: "" }, K8S_NS);
        await warmExit;
        await t.task.delete({ id: warm.id, execId: "" }, K8S_NS);
        const cid = randomId();
        const out = await openStream(pod.address, `${cid}-stdout`);
        const lines = Math.ceil(TOTAL / 1001);
        await createWasmContainer(d, pod, modules, {
          module: "echo",
          args: ["lines", String(lines)],
          stdout: streamUrl(pod.address, `${cid}-stdout`),
          annotations: { "io.kuasar.wasm.engine": engine },
        }, cid);
        const r = await readFlood(t, out, cid, "", {
          // The daemon and the Wasm host (the module runs there).
          pids: [d.pid, ...pidsWith("wasm-host", d.dir)],
          stallMs: 3000,
          expected: (b) => b === 0x78 || b === 0x0a, // "x" lines
        }, () => t.task.start({ id: cid, execId: "" }, K8S_NS));
        assert.equal(r.exitStatus, 0);
        assert.equal(r.bytes, lines * 1001, "every byte arrives");
        assert.equal(r.unexpected, 0);
        assert.equal(r.readAtExit, lines * 1001, "the exit is reported after the last byte");
        assert.ok(
          r.peakGrowth < MAX_GROWTH,
          `the daemon or the Wasm host grew by ${(r.peakGrowth / 2 ** 20).toFixed(1)} MiB`,
        );
        await t.task.delete({ id: cid, execId: "" }, K8S_NS);
        out.close();
        t.close();
        await assertShutdownLeavesNothing(d, [pod.id]);
      }, () => TestDaemon.start({ kind: "wasm" }));
    },
  });
}
