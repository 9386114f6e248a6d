/**
 * The Wasm sandboxer under real containerd 2.4 and crictl: a locally built
 * Wasm OCI image (only the module, as its entrypoint) runs with FIFO and
 * streamed IO; `crictl logs` shows its output; a looping module is stopped;
 * the pod survives a restart of the sandboxer.
 */
import assert from "node:assert/strict";
import { containerdUnavailable } from "../support/containerd.ts";
import { skipUnless } from "../support/env.ts";
import { type E2E, runContainer, waitState, withE2E } from "../support/e2e.ts";
import { WASM_IMAGE } from "../support/images.ts";
import { leftovers } from "../support/leaks.ts";
import { wasmToolsUnavailable } from "../support/wasm.ts";

const skip = skipUnless(
  (Deno.uid() !== 0 ? "needs root" : undefined) ?? wasmToolsUnavailable() ??
    containerdUnavailable(),
  "containerd + Wasm sandboxer",
);

/** `crictl logs` (which prints the container's stderr lines on its own stderr), both streams. */
async function logsOf(e: E2E, cid: string, want: RegExp): Promise<{ out: string; err: string }> {
  let text = { out: "", err: "" };
  for (let i = 0; i < 50; i++) {
    const r = await e.ctd.crictl(["logs", cid]);
    text = { out: r.stdout, err: r.stderr };
    if (want.test(r.stdout + r.stderr)) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  return text;
}

for (const io of ["fifo", "stream"] as const) {
  Deno.test({
    name: `crictl + wasm (${io} IO): the image's module runs, exits and crictl logs shows it`,
    ...skip,
    async fn() {
      await withE2E("wasm", async (e) => {
        const handler = io === "fifo" ? e.fifo : e.stream;
        // No command: the image's entrypoint (/app.wasm) and Cmd run, with the image's env.
        const { pod, cid } = await runContainer(e, handler, [], { image: WASM_IMAGE });
        const st = await waitState(e, cid, "CONTAINER_EXITED");
        assert.deepEqual(st, { state: "CONTAINER_EXITED", exitCode: 0 });
        const logs = await logsOf(e, cid, /to stderr/);
        assert.equal(logs.out, "arg[0]=/app.wasm\narg[1]=from-cmd\n");
        assert.equal(logs.err, "to stderr\n");
        // Args from the container config, and a non-zero exit code.
        const failing = await runContainer(e, handler, ["/app.wasm", "fail"], {
          image: WASM_IMAGE,
        });
        assert.deepEqual(await waitState(e, failing.cid, "CONTAINER_EXITED"), {
          state: "CONTAINER_EXITED",
          exitCode: 7,
        });
        assert.match((await logsOf(e, failing.cid, /fail/)).out, /arg\[1\]=fail/);
        for (const p of [pod, failing.pod]) {
          await e.ctd.crictlOk(["stopp", p]);
          await e.ctd.crictlOk(["rmp", p]);
        }
        assert.deepEqual(await leftovers(e.d, [pod, failing.pod]), []);
      });
    },
  });
}

Deno.test({
  name: "crictl + wasm: a native image is refused with a clear error; the pod stays usable",
  ...skip,
  async fn() {
    await withE2E("wasm", async (e) => {
      const r = await runContainer(e, e.fifo, ["sh", "-c", "echo hi"]).catch((err) => err);
      assert.ok(r instanceof Error);
      assert.match(String(r.message), /not WebAssembly.*runc handler/);
    });
  },
});

Deno.test({
  name: "crictl + wasm: the pod and its exited container survive a sandboxer restart",
  ...skip,
  async fn() {
    await withE2E("wasm", async (e) => {
      const { pod, cid, podJson } = await runContainer(e, e.fifo, [], { image: WASM_IMAGE });
      await waitState(e, cid, "CONTAINER_EXITED");
      await e.d.kill9();
      await e.d.spawn();
      // containerd's gRPC client reconnects with a backoff (at most 3 s).
      let state = "";
      for (let i = 0; i < 50 && state !== "SANDBOX_READY"; i++) {
        const r = await e.ctd.crictl(["inspectp", "--output", "json", pod]);
        state = r.code === 0 ? JSON.parse(r.stdout).status.state : "";
        if (state !== "SANDBOX_READY") await new Promise((res) => setTimeout(res, 200));
      }
      assert.equal(state, "SANDBOX_READY");
      assert.equal((await waitState(e, cid, "CONTAINER_EXITED")).exitCode, 0);
      // A new container in the same pod after the restart.
      const ctr = await e.ctd.writeJson("again.json", {
        metadata: { name: "again" },
        image: { image: WASM_IMAGE },
        command: ["/app.wasm", "again"],
        log_path: "again.log",
        linux: {},
      });
      const again = await e.ctd.crictlOk(["create", pod, ctr, podJson]);
      await e.ctd.crictlOk(["start", again]);
      assert.equal((await waitState(e, again, "CONTAINER_EXITED")).exitCode, 0);
      assert.match((await logsOf(e, again, /again/)).out, /arg\[1\]=again/);
      await e.ctd.crictlOk(["stopp", pod]);
      await e.ctd.crictlOk(["rmp", pod]);
      assert.deepEqual(await leftovers(e.d, [pod]), []);
    });
  },
});
