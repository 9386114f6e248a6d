/**
 * The vmm sandboxer under real containerd 2.4 and crictl, unchanged (no
 * `extensions.tasks`): pods are QEMU VMs (TCG here), containers run in the
 * guest on its kernel, logs come through FIFOs or containerd's streaming IO,
 * exec works, a CNI pod's IP answers from the host, and pods survive a
 * sandboxer restart.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { containerdUnavailable } from "../support/containerd.ts";
import {
  BLOCK_IO_OUTPUT,
  BLOCK_IO_SCRIPT,
  blockFixtures,
  blockToolsMissing,
} from "../support/block.ts";
import { GUEST_OVERHEAD_MIB } from "../../src/domain/vm_size.ts";
import { skipUnless, TEST_VM_TEMPLATE, vmmCriConfig, vmUnavailable } from "../support/env.ts";
import { suiteTemplateBuilt } from "../support/vm_template.ts";
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

function withVmm(fn: (e: E2E) => Promise<void>, extra: string[] = []): Promise<void> {
  return withE2E("vmm", async (e) => {
    await suiteTemplateBuilt(() => e.d.logs());
    await fn(e);
  }, { config: vmmCriConfig(extra) });
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
  fn: () =>
    withVmm(async (e) => {
      await assertWebPodSurvivesRestart(e, "vm-page", 60_000);
      // In the template mode its VM was the pool's: the CNI interface's tap was made in the
      // VM's own netns and moved into the pod's.
      if (TEST_VM_TEMPLATE) {
        const ready = (await e.d.logs()).split("\n").filter((l) => l.includes('"vm ready"'));
        assert.ok(ready.some((l) => l.includes('"pooled"')), ready.join("\n"));
      }
    }),
});

Deno.test({
  name: "crictl + vmm (FIFO IO): output after a sandboxer restart or SIGKILL still reaches " +
    "the container's log and a running exec; after a containerd restart, the log",
  ...skip,
  fn: () =>
    withVmm(async (e) => {
      // The daemon copies a VM process's output into containerd's FIFO itself: its exit must
      // not end the output for containerd (the task relay holds the FIFO meanwhile).
      const { pod, cid } = await runContainer(e, e.fifo, [
        "sh",
        "-c",
        "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.5; done",
      ]);
      const ticks = async () =>
        Number(/tick (\d+)\n$/.exec((await e.ctd.crictl(["logs", cid])).stdout)?.[1] ?? 0);
      const grows = async (after: string) => {
        const from = await ticks();
        let now = from;
        for (let i = 0; i < 100 && now < from + 4; i++) {
          await new Promise((r) => setTimeout(r, 200));
          now = await ticks();
        }
        assert.ok(now >= from + 4, `the log goes on after ${after}: tick ${from} → ${now}`);
      };
      await grows("start");
      const exec = e.ctd.crictl([
        "exec",
        cid,
        "sh",
        "-c",
        "echo start; sleep 12; echo end; exit 4",
      ]);
      await new Promise((r) => setTimeout(r, 2000));
      await e.d.stop();
      await e.d.spawn();
      await grows("a restart");
      await e.d.kill9();
      await e.d.spawn();
      await grows("a SIGKILL");
      const r = await exec;
      assert.equal(r.stdout, "start\nend\n", r.stderr);
      // crictl exits 1 for any failed command and names its code.
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /exit code 4/, "the exec's own exit code");
      // containerd restarted: its reader goes, and comes back when it recovers the container.
      await e.ctd.restart();
      await grows("a containerd restart");
      await assertAllPodsRemoved(e, [pod]);
    }),
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

Deno.test({
  name:
    "crictl + vmm: a container raised beyond its VM grows it (CPU and memory hot-plug); beyond its room, refused",
  ...skip,
  fn: () =>
    withVmm(async (e) => {
      const { pod, cid, podJson } = await runTrappingContainer(e, e.fifo, 60_000);
      const size = async () => {
        const r = await e.ctd.crictlOk([
          "exec",
          cid,
          "sh",
          "-c",
          "echo cpus=$(nproc); awk '/MemTotal/ { print \"mem=\" int($2 / 1024) }' /proc/meminfo",
        ]);
        return { cpus: Number(/cpus=(\d+)/.exec(r)?.[1]), mem: Number(/mem=(\d+)/.exec(r)?.[1]) };
      };
      const before = await size();
      assert.equal(before.cpus, 1);
      assert.ok(before.mem < 512, `MemTotal ${before.mem} MiB in a 512 MiB VM`);
      // In-place resize, as the kubelet does it: 2 CPUs and 1 GiB for the container.
      await e.ctd.crictlOk([
        "update",
        "--cpu-period",
        "100000",
        "--cpu-quota",
        "200000",
        "--memory",
        String(1 << 30),
        cid,
      ]);
      const after = await size();
      assert.equal(after.cpus, 2, "a vCPU hot-plugged and onlined");
      const vm = 1024 + GUEST_OVERHEAD_MIB;
      assert.ok(after.mem > vm - 200 && after.mem <= vm, `MemTotal ${after.mem} MiB, VM ${vm} MiB`);
      // More CPUs than its room (default_max_vcpus): the VM cannot grow there; the Update says why.
      const refused = await e.ctd.crictl([
        "update",
        "--cpu-period",
        "100000",
        "--cpu-quota",
        "300000",
        cid,
      ]);
      assert.notEqual(refused.code, 0);
      assert.match(refused.stderr, /does not fit the pod's VM \(2 vCPUs\), which can grow to/);
      assert.deepEqual(await size(), after, "nothing changed");
      // A container created with limits beyond the VM grows it too (another DIMM).
      const bigJson = await e.ctd.writeJson("big.json", {
        ...containerConfig("big", [
          "sh",
          "-c",
          "awk '/MemTotal/ { print \"mem=\" int($2 / 1024) }' /proc/meminfo",
        ]),
        linux: { resources: { memory_limit_in_bytes: 1536 << 20 } },
      });
      const big = await e.ctd.crictlOk(["create", pod, bigJson, podJson]);
      await e.ctd.crictlOk(["start", big]);
      await waitState(e, big, "CONTAINER_EXITED", 60_000);
      const bigMem = Number(/mem=(\d+)/.exec(await logsOf(e, big, /mem=/))?.[1]);
      const bigVm = 1536 + GUEST_OVERHEAD_MIB;
      assert.ok(bigMem > bigVm - 200 && bigMem <= bigVm, `MemTotal ${bigMem} MiB, VM ${bigVm} MiB`);
      await assertAllPodsRemoved(e, [pod]);
    }, ["default_max_vcpus = 2", "mem_slots = 2"]),
});

Deno.test({
  name:
    "crictl + vmm: a block volume and a raw block device are disks of the VM, read and written there",
  ...skipUnless(
    vmUnavailable() ?? containerdUnavailable() ?? blockToolsMissing(),
    "containerd + vmm sandboxer, e2fsprogs",
  ),
  fn: () =>
    withVmm(async (e) => {
      const dir = await Deno.makeTempDir();
      try {
        const f = await blockFixtures(dir);
        try {
          const pc = podConfig(e);
          const podJson = await e.ctd.writeJson(`${pc.metadata.name}.json`, pc);
          const id = await e.ctd.crictlOk(["runp", "--runtime", e.fifo, podJson]);
          // A CSI block volume as the kubelet passes it: a mount of the device, and a raw
          // device (volumeDevices) in `devices`.
          const ctrJson = await e.ctd.writeJson(`${pc.metadata.name}-c.json`, {
            ...containerConfig("blk", [
              "sh",
              "-c",
              `grep ' /data ' /proc/mounts | cut -d' ' -f3; ${BLOCK_IO_SCRIPT}`,
            ]),
            mounts: [{ host_path: f.vol.path, container_path: "/data" }],
            devices: [{
              host_path: f.rawDev.path,
              container_path: "/dev/xvdb",
              permissions: "rwm",
            }],
          });
          const cid = await e.ctd.crictlOk(["create", id, ctrJson, podJson]);
          await e.ctd.crictlOk(["start", cid]);
          assert.equal((await waitState(e, cid, "CONTAINER_EXITED", 60_000)).exitCode, 0);
          assert.equal(await logsOf(e, cid, /raw-bytes/), `ext4\n${BLOCK_IO_OUTPUT}`);
          await assertAllPodsRemoved(e, [id]);
        } finally {
          await f.release();
        }
        await f.assertWritten();
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    }),
});

Deno.test({
  name:
    "crictl + vmm: shareProcessNamespace shows the other container's processes; a memory emptyDir is a guest tmpfs",
  ...skip,
  fn: () =>
    withVmm(async (e) => {
      // As kubelet makes an emptyDir with medium: Memory: a tmpfs at its volume path.
      const vol = join(e.ctd.base, "pods/u1/volumes/kubernetes.io~empty-dir/cache");
      await Deno.mkdir(vol, { recursive: true });
      const m = await new Deno.Command("mount", { args: ["-t", "tmpfs", "tmpfs", vol] }).output();
      assert.ok(m.success, "mount tmpfs");
      try {
        const pc = podConfig(e);
        // namespace_options.pid = POD: shareProcessNamespace.
        const pod = {
          ...pc,
          linux: {
            ...pc.linux,
            security_context: { namespace_options: { network: 0, pid: 0 } },
          },
        };
        const podJson = await e.ctd.writeJson(`${pc.metadata.name}.json`, pod);
        const id = await e.ctd.crictlOk(["runp", "--runtime", e.fifo, podJson]);
        const run = async (name: string, script: string) => {
          const json = await e.ctd.writeJson(`${pc.metadata.name}-${name}.json`, {
            ...containerConfig(name, ["sh", "-c", script]),
            mounts: [{ host_path: vol, container_path: "/cache" }],
          });
          const cid = await e.ctd.crictlOk(["create", id, json, podJson]);
          await e.ctd.crictlOk(["start", cid]);
          return cid;
        };
        const sleeper = await run("sleeper", "echo kept > /cache/f; exec sleep 1000");
        await waitState(e, sleeper, "CONTAINER_RUNNING", 60_000);
        const looker = await run(
          "looker",
          "ps -o args | grep -c '^sleep 1000'; grep ' /cache ' /proc/mounts | cut -d' ' -f3; cat /cache/f",
        );
        assert.equal((await waitState(e, looker, "CONTAINER_EXITED", 60_000)).exitCode, 0);
        assert.equal(await logsOf(e, looker, /kept/), "1\ntmpfs\nkept\n");
        assert.deepEqual([...Deno.readDirSync(vol)], [], "in the guest's memory, not the host's");
        await assertAllPodsRemoved(e, [id]);
      } finally {
        await new Deno.Command("umount", { args: ["-l", vol] }).output();
      }
    }),
});

Deno.test({
  name:
    'crictl + vmm, share_fs = "None": an image\'s container from a bundle disk, its logs, exec, removal',
  ...skipUnless(
    vmUnavailable() ?? containerdUnavailable() ?? blockToolsMissing(),
    "containerd + vmm sandboxer, e2fsprogs",
  ),
  fn: async () => {
    const images = await Deno.makeTempDir({ prefix: "k-bd-" });
    try {
      await withVmm(async (e) => {
        // containerd's overlay snapshot of the image, packed into the container's image.
        const { pod, cid } = await runContainer(e, e.stream, [
          "sh",
          "-c",
          "echo from-a-disk; grep ' / ' /proc/mounts | cut -d' ' -f3; echo $((6 * 7)) > /made; " +
          "trap 'exit 0' TERM; while :; do sleep 1; done",
        ]);
        const logs = await logsOf(e, cid, /ext4/);
        assert.equal(logs, "from-a-disk\next4\n");
        const ex = await e.ctd.crictl(["exec", cid, "sh", "-c", "cat /made; head -1 /etc/passwd"]);
        assert.equal(ex.code, 0, ex.stderr);
        assert.equal(
          ex.stdout,
          "42\nroot:x:0:0:root:/root:/bin/sh\n",
          "the image's files, its writes",
        );
        const [podDir] = await Array.fromAsync(Deno.readDir(images));
        assert.ok(podDir, "the pod's images are on the host");
        await assertAllPodsRemoved(e, [pod]);
        assert.deepEqual(await Array.fromAsync(Deno.readDir(images)), [], "and go with it");
      }, ['share_fs = "None"', `bundle_disk_dir = "${images}"`]);
    } finally {
      await Deno.remove(images, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name:
    "crictl + vmm: the pod's hostname and DNS in its containers' /etc, and one /dev/shm they share",
  ...skip,
  fn: () =>
    withVmm(async (e) => {
      // containerd makes these files for its own sandboxes only: the guest makes them here.
      const pc = {
        ...podConfig(e),
        dns_config: {
          servers: ["10.96.0.10"],
          searches: ["default.svc.cluster.local"],
          options: ["ndots:5"],
        },
      };
      const podJson = await e.ctd.writeJson(`${pc.metadata.name}.json`, pc);
      const pod = await e.ctd.crictlOk(["runp", "--runtime", e.stream, podJson]);
      const run = async (name: string, script: string) => {
        const json = await e.ctd.writeJson(
          `${pc.metadata.name}-${name}.json`,
          containerConfig(name, ["sh", "-c", script]),
        );
        const cid = await e.ctd.crictlOk(["create", pod, json, podJson]);
        await e.ctd.crictlOk(["start", cid]);
        await waitState(e, cid, "CONTAINER_EXITED", 60_000);
        return await logsOf(e, cid, /end\n/);
      };
      const first = await run(
        "a",
        "cat /etc/hostname /etc/resolv.conf; grep -c localhost /etc/hosts; " +
          "echo shared > /dev/shm/x; echo end",
      );
      assert.equal(
        first,
        `${pc.hostname}\nsearch default.svc.cluster.local\nnameserver 10.96.0.10\n` +
          "options ndots:5\n2\nend\n",
      );
      assert.equal(await run("b", "cat /dev/shm/x; echo end"), "shared\nend\n");
      await assertAllPodsRemoved(e, [pod]);
    }),
});
