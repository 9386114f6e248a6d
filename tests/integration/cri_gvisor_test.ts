/**
 * The gVisor sandboxer under real containerd 2.4 and crictl: pods are runsc
 * sandboxes (no pause image), containers print through crictl logs, exec
 * works, the kernel is gVisor's, a CNI pod's IP answers from the host through
 * gVisor's network stack, and pods survive a sandboxer restart.
 */
import assert from "node:assert/strict";
import { containerdUnavailable } from "../support/containerd.ts";
import { GVISOR_CRI_CONFIG, runscUnavailable, skipUnless } from "../support/env.ts";
import {
  assertAllPodsRemoved,
  assertExecStatsStop,
  assertWebPodSurvivesRestart,
  type E2E,
  logsOf,
  runContainer,
  runTrappingContainer,
  waitState,
  withE2E,
} from "../support/e2e.ts";

const skip = skipUnless(
  runscUnavailable() ?? containerdUnavailable(),
  "containerd + gVisor sandboxer",
);

function withGvisor(fn: (e: E2E) => Promise<void>): Promise<void> {
  return withE2E("gvisor", fn, { config: GVISOR_CRI_CONFIG });
}

for (const io of ["fifo", "stream"] as const) {
  Deno.test({
    name: `crictl + gvisor (${io} IO): logs, exit code, exec, stats, stop and removal`,
    ...skip,
    fn: () =>
      withGvisor(async (e) => {
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

        const { pod, cid } = await runTrappingContainer(e, handler);
        await assertExecStatsStop(e, cid);
        await assertAllPodsRemoved(e, [pod, once.pod]);
      }),
  });
}

Deno.test({
  name: "crictl + gvisor: a CNI pod's IP answers from the host; pods survive a sandboxer restart",
  ...skip,
  fn: () => withGvisor((e) => assertWebPodSurvivesRestart(e, "gvisor-page")),
});
