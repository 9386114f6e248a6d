/**
 * The vmm sandboxer under real containerd 2.4 and crictl, unchanged (no
 * `extensions.tasks`): pods are QEMU VMs (TCG here), containers run in the
 * guest on its kernel, logs come through FIFOs or containerd's streaming IO,
 * exec works, a CNI pod's IP answers from the host, and pods survive a
 * sandboxer restart.
 */
import assert from "node:assert/strict";
import { containerdUnavailable } from "../support/containerd.ts";
import { GUEST_OVERHEAD_MIB } from "../../src/domain/vm_size.ts";
import { skipUnless, VMM_CRI_CONFIG, vmUnavailable } from "../support/env.ts";
import {
  assertAllPodsRemoved,
  assertExecStatsStop,
  assertWebPodSurvivesRestart,
  containerConfig,
  type E2E,
  logsOf,
  podConfig,
  runContainer,
  runTrappingContainer,
  waitState,
  withE2E,
} from "../support/e2e.ts";

const skip = skipUnless(vmUnavailable() ?? containerdUnavailable(), "containerd + vmm sandboxer");

function withVmm(fn: (e: E2E) => Promise<void>): Promise<void> {
  return withE2E("vmm", fn, { config: VMM_CRI_CONFIG });
}

for (const io of ["fifo", "stream"] as const) {
  Deno.test({
    name:
      `crictl + vmm (${io} IO): the guest's kernel, logs, exit code, exec, stats, stop, removal`,
    ...skip,
    fn: () =>
      withVmm(async (e) => {
        const { ctd } = e;
        const handler = io === "fifo" ? e.fifo : e.stream;
        const once = await runContainer(e, handler, ["sh", "-c", "echo hello; uname -r; exit 3"]);
        assert.deepEqual(await waitState(e, once.cid, "CONTAINER_EXITED", 60_000), {
          state: "CONTAINER_EXITED",
          exitCode: 3,
        });
        const logs = await logsOf(e, once.cid, /cloud-amd64/);
        assert.match(logs, /^hello\n/);
        assert.match(logs, /cloud-amd64/, "the guest's kernel");
        assert.doesNotMatch(logs, new RegExp(Deno.osRelease().replaceAll(".", "\\.")));

        const { pod, cid } = await runTrappingContainer(e, handler, 60_000);
        const input = await ctd.crictl(["exec", "-i", cid, "cat"], { stdin: "via-stdin\n" });
        assert.equal(input.stdout, "via-stdin\n", input.stderr);
        await assertExecStatsStop(e, cid);
        await assertAllPodsRemoved(e, [pod, once.pod]);
      }),
  });
}

Deno.test({
  name: "crictl + vmm: a CNI pod's IP answers from the host; pods survive a sandboxer restart",
  ...skip,
  fn: () => withVmm((e) => assertWebPodSurvivesRestart(e, "vm-page", 60_000)),
});

Deno.test({
  name: "crictl + vmm: a pod's CPU and memory resources size its VM (nproc, MemTotal in the guest)",
  ...skip,
  fn: () =>
    withVmm(async (e) => {
      const pc = podConfig(e);
      const pod = {
        ...pc,
        linux: {
          ...pc.linux,
          resources: { cpu_period: 100000, cpu_quota: 200000, memory_limit_in_bytes: 768 << 20 },
        },
      };
      const podJson = await e.ctd.writeJson(`${pc.metadata.name}.json`, pod);
      const id = await e.ctd.crictlOk(["runp", "--runtime", e.fifo, podJson]);
      const ctrJson = await e.ctd.writeJson(
        `${pc.metadata.name}-c.json`,
        containerConfig("size", [
          "sh",
          "-c",
          "echo cpus=$(nproc); awk '/MemTotal/ { print \"mem=\" int($2 / 1024) }' /proc/meminfo",
        ]),
      );
      const cid = await e.ctd.crictlOk(["create", id, ctrJson, podJson]);
      await e.ctd.crictlOk(["start", cid]);
      await waitState(e, cid, "CONTAINER_EXITED", 60_000);
      const logs = await logsOf(e, cid, /mem=/);
      assert.match(logs, /cpus=2/);
      const mem = Number(/mem=(\d+)/.exec(logs)?.[1]);
      const vm = 768 + GUEST_OVERHEAD_MIB;
      assert.ok(mem > vm - 160 && mem <= vm, `MemTotal ${mem} MiB in a ${vm} MiB VM`);
      await assertAllPodsRemoved(e, [id]);
    }),
});
