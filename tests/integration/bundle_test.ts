/**
 * The single-file bundle (`deno task bundle`) is what a node without the
 * sources runs: it must serve, and its Wasm host must find its worker bundle.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { K8S_NS, mkfifo, readFifo, taskClient, TestDaemon } from "../support/daemon.ts";
import { skipUnless } from "../support/env.ts";
import { startPod } from "../support/pod.ts";
import { buildWasmModules, createWasmContainer, wasmToolsUnavailable } from "../support/wasm.ts";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const name = "bundle: dist/kuasar.js serves a Wasm pod whose module runs on the bundled worker";

Deno.test({
  name,
  ...skipUnless(Deno.uid() !== 0 ? "needs root" : wasmToolsUnavailable(), name),
  async fn() {
    const out = await Deno.makeTempDir({ prefix: "kuasar-bundle-" });
    try {
      const b = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", join(ROOT, "scripts/bundle.ts"), out],
        cwd: ROOT,
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.ok(b.success, new TextDecoder().decode(b.stderr));
      // One-byte sources: V8 would hold a bundle with one character beyond Latin-1 at twice its size.
      for (const f of ["kuasar.js", "kuasar-wasm-worker.js", "kuasar-agent.js"]) {
        const text = await Deno.readTextFile(join(out, f));
        assert.equal(text.match(/[\u0100-\uffff]/)?.[0], undefined, f);
      }
      const version = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", join(out, "kuasar.js"), "--version"],
        stdout: "piped",
      }).output();
      assert.match(new TextDecoder().decode(version.stdout), /^Version: .*\nBuild Time: \d{4}-/);

      const modules = await buildWasmModules();
      const d = await TestDaemon.start({ kind: "wasm", entry: join(out, "kuasar.js") });
      try {
        const pod = await startPod(d);
        const fifo = join(d.base, "out");
        await mkfifo(fifo);
        const text = readFifo(fifo);
        const c = await createWasmContainer(d, pod, modules, { module: "hello", stdout: fifo });
        const t = await taskClient(pod.address);
        try {
          const w = t.task.wait({ id: c.id, execId: "" }, K8S_NS);
          await t.task.start({ id: c.id, execId: "" }, K8S_NS);
          assert.equal((await w).exitStatus, 0);
          assert.equal(await text.text, "hello from wasm\n");
          await t.task.delete({ id: c.id, execId: "" }, K8S_NS);
        } finally {
          t.close();
        }
        await d.controller.shutdown(pod.id);
      } catch (e) {
        console.error(await d.logs());
        throw e;
      } finally {
        await d.cleanup();
      }
    } finally {
      await Deno.remove(out, { recursive: true });
    }
  },
});
