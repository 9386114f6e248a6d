/**
 * containerd 1.7 (shim mode, configured as docs/engines.md says) and crictl against the runC,
 * Wasm, gVisor and vmm sandboxers: containerd runs `containerd-shim-kuasar-<kind>-v2 start` per pod and
 * speaks the shim's Sandbox API and the Task API v2 at the address it prints, which the
 * sandboxer serves itself. Pods, containers, logs, exec (sync, stdin, tty), exit codes, stop,
 * removal, a sandboxer restart and a containerd restart with pods running, and no process per
 * pod besides the kind's own.
 */
import assert from "node:assert/strict";
import { containerd17Unavailable } from "../support/containerd.ts";
import {
  GVISOR_CRI_CONFIG,
  runcUnavailable,
  runscUnavailable,
  skipUnless,
  VMM_CRI_CONFIG,
  vmUnavailable,
} from "../support/env.ts";
import {
  assertAllPodsRemoved,
  assertExecStatsStop,
  type E2E,
  logsOf,
  runContainer,
  runTrappingContainer,
  waitPodReady,
  waitState,
  withE2E,
} from "../support/e2e.ts";
import { WASM_IMAGE } from "../support/images.ts";
import { wasmToolsUnavailable } from "../support/wasm.ts";

const ctd17 = containerd17Unavailable();

/** Processes of the shim binary, wherever they run from: none may outlive `start`. */
async function shimBinaryProcesses(): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const argv0 = (await Deno.readTextFile(`/proc/${e.name}/cmdline`)).split("\0")[0];
      if (/containerd-shim-kuasar-[a-z]+-v2$/.test(argv0)) out.push(`${e.name} ${argv0}`);
    } catch { /* exited */ }
  }
  return out;
}

/** No shim process stays behind: neither ours nor any other with this containerd's -address. */
async function assertNoShimProcesses(e: E2E): Promise<void> {
  assert.deepEqual(await shimBinaryProcesses(), []);
  assert.deepEqual(await e.ctd.shimPids(), []);
}

Deno.test({
  name: "containerd 1.7 + runC (shim mode): lifecycle, exec, no per-pod shim, both restarts",
  ...skipUnless(runcUnavailable() ?? ctd17, "containerd 1.7 + runC sandboxer"),
  fn: () =>
    withE2E("runc", async (e) => {
      const { ctd } = e;
      const a = await runTrappingContainer(e, e.fifo);
      const b = await runContainer(e, e.fifo, [
        "sh",
        "-c",
        "echo started; while :; do echo tick; sleep 0.5; done",
      ]);
      await waitState(e, b.cid, "CONTAINER_RUNNING");
      assert.match(await logsOf(e, b.cid, /started/), /started/);
      await assertNoShimProcesses(e);

      // exec with stdin and with a tty (assertExecStatsStop does the sync ones)
      const withStdin = await ctd.crictl(["exec", "-i", b.cid, "tr", "a-z", "A-Z"], {
        stdin: "shout\n",
      });
      assert.equal(withStdin.code, 0, withStdin.stderr);
      assert.equal(withStdin.stdout, "SHOUT\n");
      const tty = await ctd.crictlTty([
        "exec",
        "-i",
        "-t",
        b.cid,
        "sh",
        "-c",
        "tty; echo is-a-tty",
      ]);
      assert.equal(tty.code, 0, tty.stderr);
      assert.match(tty.stdout, /\/dev\/pts\/\d+/);

      // The sandboxer dies and comes back: containerd 1.7 keeps its connections (the relay holds
      // them) and the pods keep working.
      await e.d.kill9();
      await e.d.spawn();
      for (const x of [a, b]) {
        assert.equal(await waitPodReady(e, x.pod), "SANDBOX_READY");
        const r = await ctd.crictl(["exec", "-s", x.cid, "sh", "-c", "echo still-here"]);
        assert.equal(r.code, 0, r.stderr);
        assert.equal(r.stdout.trim(), "still-here");
      }
      // containerd restarts: it reloads each pod's shim from the address file the binary wrote.
      await ctd.restart();
      for (const x of [a, b]) {
        assert.equal(await waitPodReady(e, x.pod), "SANDBOX_READY");
        assert.equal((await waitState(e, x.cid, "CONTAINER_RUNNING")).state, "CONTAINER_RUNNING");
      }
      const before = (await ctd.crictlOk(["logs", b.cid])).split("\n").length;
      await new Promise((r) => setTimeout(r, 1500));
      assert.ok((await ctd.crictlOk(["logs", b.cid])).split("\n").length > before);

      // Both at once, the sandboxer down for longer than containerd's default 5 s shim load
      // timeout: the documented `shim.load` timeout keeps the containers containerd's, running.
      await e.d.kill9();
      const restarting = ctd.restart();
      await new Promise((r) => setTimeout(r, 7000));
      await e.d.spawn();
      await restarting;
      for (const x of [a, b]) {
        assert.equal(await waitPodReady(e, x.pod), "SANDBOX_READY");
        assert.equal((await waitState(e, x.cid, "CONTAINER_RUNNING")).state, "CONTAINER_RUNNING");
      }

      // exec, stats, stop with the trap's exit code
      await assertExecStatsStop(e, a.cid);
      await assertNoShimProcesses(e);
      await assertAllPodsRemoved(e, [a.pod, b.pod]);
    }, { release: "1.7" }),
});

Deno.test({
  name: "containerd 1.7 + Wasm (shim mode): the image's module runs and exits with its code",
  ...skipUnless(
    (Deno.uid() !== 0 ? "needs root" : undefined) ?? wasmToolsUnavailable() ?? ctd17,
    "containerd 1.7 + Wasm sandboxer",
  ),
  fn: () =>
    withE2E("wasm", async (e) => {
      const ok = await runContainer(e, e.fifo, [], { image: WASM_IMAGE });
      assert.deepEqual(await waitState(e, ok.cid, "CONTAINER_EXITED"), {
        state: "CONTAINER_EXITED",
        exitCode: 0,
      });
      assert.equal(
        (await e.ctd.crictl(["logs", ok.cid])).stdout,
        "arg[0]=/app.wasm\narg[1]=from-cmd\n",
      );
      const failing = await runContainer(e, e.fifo, ["/app.wasm", "fail"], { image: WASM_IMAGE });
      assert.deepEqual(await waitState(e, failing.cid, "CONTAINER_EXITED"), {
        state: "CONTAINER_EXITED",
        exitCode: 7,
      });
      await assertNoShimProcesses(e);
      await assertAllPodsRemoved(e, [ok.pod, failing.pod]);
    }, { release: "1.7" }),
});

Deno.test({
  name: "containerd 1.7 + vmm (shim mode): a VM pod runs a container, takes execs, stops",
  ...skipUnless(vmUnavailable() ?? ctd17, "containerd 1.7 + vmm sandboxer"),
  fn: () =>
    withE2E("vmm", async (e) => {
      const { pod, cid } = await runTrappingContainer(e, e.fifo, 120_000);
      const uname = await e.ctd.crictl(["exec", "-s", cid, "uname", "-r"]);
      assert.equal(uname.code, 0, uname.stderr);
      assert.match(uname.stdout, /cloud-amd64/, "the guest's kernel");
      await assertNoShimProcesses(e);
      await assertExecStatsStop(e, cid);
      await assertAllPodsRemoved(e, [pod]);
    }, { release: "1.7", config: VMM_CRI_CONFIG }),
});

Deno.test({
  name: "containerd 1.7 + gVisor (shim mode): output, exit code, exec, stop, removal",
  ...skipUnless(runscUnavailable() ?? ctd17, "containerd 1.7 + gVisor sandboxer"),
  fn: () =>
    withE2E("gvisor", async (e) => {
      const once = await runContainer(e, e.fifo, [
        "sh",
        "-c",
        "echo hello; dmesg | head -n 2; exit 3",
      ]);
      assert.deepEqual(await waitState(e, once.cid, "CONTAINER_EXITED"), {
        state: "CONTAINER_EXITED",
        exitCode: 3,
      });
      assert.match(await logsOf(e, once.cid, /Starting gVisor/), /^hello\n[\s\S]*Starting gVisor/);
      const { pod, cid } = await runTrappingContainer(e, e.fifo);
      await assertNoShimProcesses(e);
      await assertExecStatsStop(e, cid);
      await assertAllPodsRemoved(e, [pod, once.pod]);
    }, { release: "1.7", config: GVISOR_CRI_CONFIG }),
});
