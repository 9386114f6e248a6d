/**
 * The gVisor sandboxer under real containerd 2.4 and crictl: pods are runsc
 * sandboxes (no pause image), containers print through crictl logs, exec
 * works, the kernel is gVisor's, a CNI pod's IP answers from the host through
 * gVisor's network stack, and pods survive a sandboxer restart.
 */
import assert from "node:assert/strict";
import { containerdUnavailable } from "../support/containerd.ts";
import { runscUnavailable, skipUnless } from "../support/env.ts";
import {
  assertExecStatsStop,
  type E2E,
  fetchWhenUp,
  logsOf,
  podIp,
  runContainer,
  waitPodReady,
  waitState,
  withE2E,
} from "../support/e2e.ts";
import { leftovers } from "../support/leaks.ts";

const skip = skipUnless(
  runscUnavailable() ?? containerdUnavailable(),
  "containerd + gVisor sandboxer",
);

// network = "host": this runsc (Debian's 2022 build) refuses its own network
// stack in a CNI netns on this kernel (see gvisor_sandbox_backend.ts, hintFor).
const CONFIG = `[gvisor]\nplatform = "ptrace"\nnetwork = "host"\n`;

function withGvisor(fn: (e: E2E) => Promise<void>): Promise<void> {
  return withE2E("gvisor", fn, { config: CONFIG });
}

for (const io of ["fifo", "stream"] as const) {
  Deno.test({
    name: `crictl + gvisor (${io} IO): logs, exit code, exec, stats, stop and removal`,
    ...skip,
    fn: () =>
      withGvisor(async (e) => {
        const { ctd } = e;
        const handler = io === "fifo" ? e.fifo : e.stream;
        const once = await runContainer(e, handler, [
          "sh",
          "-c",
          "echo hello; dmesg | head -n 2; exit 3",
        ]);
        assert.deepEqual(await waitState(e, once.cid, "CONTAINER_EXITED"), {
          state: "CONTAINER_EXITED",
          exitCode: 3,
        });
        const logs = await logsOf(e, once.cid, /Starting gVisor/);
        assert.match(logs, /^hello\n/);
        assert.match(logs, /Starting gVisor/);

        const { pod, cid } = await runContainer(e, handler, [
          "sh",
          "-c",
          "trap 'echo bye; exit 5' TERM; while :; do sleep 0.2; done",
        ]);
        await waitState(e, cid, "CONTAINER_RUNNING");
        await assertExecStatsStop(e, cid);
        await ctd.crictlOk(["rmp", "--all", "--force"]);
        assert.equal(await ctd.crictlOk(["pods", "--quiet"]), "");
        assert.deepEqual(await leftovers(e.d, [pod, once.pod]), []);
      }),
  });
}

Deno.test({
  name: "crictl + gvisor: a CNI pod's IP answers from the host; pods survive a sandboxer restart",
  ...skip,
  fn: () =>
    withGvisor(async (e) => {
      const { ctd } = e;
      const web = await runContainer(e, e.fifo, [
        "sh",
        "-c",
        "mkdir -p /www && echo gvisor-page > /www/index.html && httpd -f -p 8080 -h /www",
      ]);
      await waitState(e, web.cid, "CONTAINER_RUNNING");
      const ip = await podIp(e, web.pod);
      const get = () => fetchWhenUp(`http://${ip}:8080/`);
      assert.equal(await get(), "gvisor-page\n");

      await e.d.kill9();
      await e.d.spawn();
      assert.equal(await waitPodReady(e, web.pod), "SANDBOX_READY");
      assert.equal((await waitState(e, web.cid, "CONTAINER_RUNNING")).state, "CONTAINER_RUNNING");
      const r = await ctd.crictl(["exec", "-s", web.cid, "sh", "-c", "echo still-here"]);
      assert.equal(r.stdout.trim(), "still-here", r.stderr);
      assert.equal(await get(), "gvisor-page\n");
      await ctd.crictlOk(["rmp", "--all", "--force"]);
      assert.deepEqual(await leftovers(e.d, [web.pod]), []);
    }),
});
