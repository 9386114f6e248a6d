/**
 * The vmm sandboxer's pods on a real VMM (QEMU, TCG here; KUASAR_TEST_VMM), driven like containerd
 * does (Controller + Task API, host FIFOs, overlay rootfs, bind volumes):
 * containers run by the guest's runc on the guest's kernel; exec, pty,
 * stats; a SIGKILL of the sandboxer loses nothing; a dead VM takes its
 * containers with it; Stop ends the VM; nothing is left after Shutdown.
 */
import * as cgroup1 from "../../src/gen/cgroups/cgroup1/stats/metrics.ts";
import { GUEST_OVERHEAD_MIB } from "../../src/domain/vm_size.ts";
import * as cgroup2 from "../../src/gen/cgroups/cgroup2/stats/metrics.ts";
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  K8S_NS,
  mkfifo,
  readFifo,
  startVmmDaemon,
  taskClient,
  type TestDaemon,
  withDaemon,
} from "../support/daemon.ts";
import { execRequest, writeBundle } from "../support/oci.ts";
import { withEventsSink } from "../support/events.ts";
import { TaskOOM } from "../../src/gen/containerd/events/task.ts";
import { SandboxServiceDefinition } from "../../src/gen/kuasar/sandbox.ts";
import { TtrpcClient } from "../../src/adapters/ttrpc/client.ts";
import { unaryClient } from "../../src/adapters/ttrpc/typed.ts";
import {
  qemuOnly,
  sharedDirectoryOnly,
  skipUnless,
  TEST_BUNDLES_ON_DISKS,
  TEST_VMM,
  vmmAlive,
  vmUnavailable,
} from "../support/env.ts";
import { assertShutdownLeavesNothing, leftovers } from "../support/leaks.ts";
import {
  createContainer,
  createTask,
  prepareContainer,
  randomId,
  runToExit,
  startPod,
  tasksUpdate,
  type TestPod,
} from "../support/pod.ts";
import { GUEST_SHARED_DIR } from "../../src/ports/agent_protocol.ts";
import { ensureBusyboxRootfs, overlayRootfs } from "../support/rootfs.ts";
import {
  BLOCK_IO_OUTPUT,
  BLOCK_IO_SCRIPT,
  blockFixtures,
  blockToolsMissing,
  ext4Image,
} from "../support/block.ts";
import { catThroughStreams } from "../support/streams.ts";

function unavailable(): string | undefined {
  return Deno.uid() !== 0 ? "needs root" : vmUnavailable();
}

const MAIN = fileURLToPath(new URL("../../src/main.ts", import.meta.url));

/** `kuasar ctl` against the test daemon, with `stdin` when given. */
async function ctl(d: TestDaemon, ...args: string[]) {
  return await ctlWithInput(d, undefined, ...args);
}

async function ctlWithInput(d: TestDaemon, stdin: string | undefined, ...args: string[]) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, "ctl", "-k", "vmm", "-l", d.listen, "-d", d.dir, ...args],
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    // A console that never answers fails its test rather than holding up the suite.
    signal: AbortSignal.timeout(180_000),
  }).spawn();
  if (stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
  }
  const r = await child.output();
  const td = new TextDecoder();
  return { code: r.code, stdout: td.decode(r.stdout), stderr: td.decode(r.stderr) };
}

Deno.test({
  name:
    "vmm: containers in VM pods (guest kernel, volume, exec, pty), recovery, crash, no leftovers",
  ...skipUnless(
    unavailable() ?? sharedDirectoryOnly("a host volume the guest writes to"),
    `vmm sandboxer on ${TEST_VMM}`,
  ),
  fn: () =>
    withDaemon(async (d) => {
      // A pod boots: its pid is QEMU's, its console shows the agent as PID 1.
      const a = await startPod(d, { cgroupParent: d.cgroupParent, hostname: "vm-pod-a" });
      assert.ok(vmmAlive(a.pid), "the pod's pid is its VMM's process");
      assert.equal((await d.controller.status(a.id)).state, "SANDBOX_READY");
      const guestLog = await Deno.readTextFile(join(d.dir, a.id, "console.log"));
      assert.match(guestLog, /kuasar-agent ready","pid":1/);
      // `kuasar ctl exec` runs a command in the guest (through the pod's task socket, as the
      // daemon holds the VM's only serial connection), as Kuasar's kuasar-ctl: the pod by an id
      // prefix, the output (stderr merged) and the command's exit code; --timeout; stdin.
      const uname = await ctl(d, "exec", a.id.slice(0, 8), "--", "uname", "-r");
      assert.equal(uname.code, 0, uname.stderr);
      assert.match(uname.stdout, /cloud-amd64/);
      const failing = await ctl(
        d,
        "exec",
        a.id,
        "--",
        "sh",
        "-c",
        "'echo partial; echo oops >&2; exit 4'",
      );
      assert.equal(failing.code, 4, failing.stderr);
      assert.equal(failing.stdout, "partial\noops\n");
      const slow = await ctl(d, "exec", "--timeout", "2", a.id, "--", "sleep", "30");
      assert.equal(slow.code, 124, slow.stderr);
      // The debug console is opt-in: this sandboxer's VMs have none.
      const noShell = await ctl(d, "shell", a.id);
      assert.equal(noShell.code, 1);
      assert.match(noShell.stderr, /no debug console: set \[hypervisor\.task\] debug = true/);
      // QEMU runs in the pod's own cgroup, under the pod's cgroup parent.
      assert.match(
        await Deno.readTextFile(`/proc/${a.pid}/cgroup`),
        new RegExp(`${d.cgroupParent}/${a.id}`),
      );
      const metrics = await d.controller.metrics(a.id);
      assert.match(
        metrics.metrics?.data?.typeUrl ?? "",
        /^io\.containerd\.cgroups\.v[12]\.Metrics$/,
      );

      // A container prints through its stdout FIFO and exits 42: it runs on the guest's
      // kernel, with the pod's hostname, and writes to a host volume.
      const vol = join(d.base, "vol");
      await Deno.mkdir(vol);
      const volume = { destination: "/data", type: "bind", source: vol, options: ["rbind", "rw"] };
      const out1 = join(d.base, "c1-out");
      await mkfifo(out1);
      const o1 = readFifo(out1);
      const c1 = await createContainer(d, a, {
        args: ["sh", "-c", "uname -r; hostname; echo from-vm > /data/out.txt; echo hello; exit 42"],
        stdout: out1,
        mounts: [volume],
      });
      const t = await taskClient(a.address);
      try {
        assert.equal((await t.task.state({ id: c1.id, execId: "" }, K8S_NS)).status, 1); // CREATED
        const w1 = t.task.wait({ id: c1.id, execId: "" }, K8S_NS);
        await t.task.start({ id: c1.id, execId: "" }, K8S_NS);
        assert.equal((await w1).exitStatus, 42);
        const [release, hostname, hello] = (await o1.text).trim().split("\n");
        assert.match(release, /cloud-amd64/);
        assert.notEqual(release, Deno.osRelease(), "the guest's kernel, not the host's");
        assert.equal(hostname, "vm-pod-a");
        assert.equal(hello, "hello");
        assert.equal(await Deno.readTextFile(join(vol, "out.txt")), "from-vm\n");
        assert.equal((await t.task.delete({ id: c1.id, execId: "" }, K8S_NS)).exitStatus, 42);
        await assert.rejects(t.task.state({ id: c1.id, execId: "" }, K8S_NS), /not found/);

        // Announced in extensions.tasks (iSulad, Kuasar's containerd): shared into the guest
        // before Task.Create, which then uses that share.
        const x1 = randomId();
        const announced = join(d.base, "announced", x1);
        await writeBundle(announced, x1, {
          args: ["sh", "-c", "exit 0"],
          sandboxPid: a.pid,
          sandboxId: a.id,
          cgroupParent: d.cgroupParent,
        });
        const spec = JSON.parse(await Deno.readTextFile(join(announced, "config.json")));
        const rootfs = await overlayRootfs(join(d.base, "snap-x1"));
        await d.controller.update(tasksUpdate(a.id, { tasks: [{ task_id: x1, spec, rootfs }] }));
        const share = join(d.dir, a.id, "shared", x1);
        assert.ok((await Deno.stat(join(share, "rootfs", "bin", "sh"))).isFile, "rootfs shared");
        const guestView = JSON.parse(await Deno.readTextFile(join(share, "config.json")));
        assert.equal(guestView.root.path, "rootfs");
        await createContainer(d, a, { args: ["sh", "-c", "exit 0"] }, x1);
        const wx = t.task.wait({ id: x1, execId: "" }, K8S_NS);
        await t.task.start({ id: x1, execId: "" }, K8S_NS);
        assert.equal((await wx).exitStatus, 0);
        await t.task.delete({ id: x1, execId: "" }, K8S_NS);
        await assert.rejects(Deno.stat(share), /No such file/, "Delete removes the share");

        // A long-running container: exec, pids, stats, a pty; it exits when the host
        // drops a file into its volume.
        const c2 = await createContainer(d, a, {
          args: ["sh", "-c", "while [ ! -f /data/stop ]; do sleep 0.2; done; exit 7"],
          mounts: [volume],
        });
        await t.task.start({ id: c2.id, execId: "" }, K8S_NS);
        const execOut = join(d.base, "e1-out");
        await mkfifo(execOut);
        const eo = readFifo(execOut);
        await t.task.exec(
          execRequest(c2.id, "e1", ["sh", "-c", "echo exec-out; exit 3"], execOut),
          K8S_NS,
        );
        const ew = t.task.wait({ id: c2.id, execId: "e1" }, K8S_NS);
        assert.ok((await t.task.start({ id: c2.id, execId: "e1" }, K8S_NS)).pid > 0);
        assert.equal((await ew).exitStatus, 3);
        assert.equal(await eo.text, "exec-out\n");
        await t.task.delete({ id: c2.id, execId: "e1" }, K8S_NS);
        const pids = await t.task.pids({ id: c2.id }, K8S_NS);
        assert.ok(pids.processes.length >= 1);
        // The guest is cgroup v2: v3 (containerd ≥ 2.1) gets that; v2 (iSulad, which reads
        // only v1) gets the same numbers as v1 metrics.
        const stats = await t.task.stats({ id: c2.id }, K8S_NS);
        assert.equal(stats.stats?.typeUrl, "io.containerd.cgroups.v2.Metrics");
        const onV3 = cgroup2.Metrics.decode(stats.stats!.value);
        const tv2 = await taskClient(a.address, 2);
        try {
          const old = (await tv2.task.stats({ id: c2.id }, K8S_NS)).stats;
          assert.equal(old?.typeUrl, "io.containerd.cgroups.v1.Metrics");
          const onV2 = cgroup1.Metrics.decode(old!.value);
          assert.ok(onV2.memory!.usage!.usage > 0n && onV2.cpu!.usage!.total > 0n);
          assert.equal(onV2.pids!.limit, onV3.pids!.limit);
        } finally {
          tv2.close();
        }
        const ptyOut = join(d.base, "pty-out");
        await mkfifo(ptyOut);
        const po = readFifo(ptyOut);
        await t.task.exec(execRequest(c2.id, "tty", ["tty"], ptyOut, true), K8S_NS);
        const pw = t.task.wait({ id: c2.id, execId: "tty" }, K8S_NS);
        await t.task.start({ id: c2.id, execId: "tty" }, K8S_NS);
        assert.equal((await pw).exitStatus, 0);
        assert.match(await po.text, /\/dev\/pts\/\d+/);
        await t.task.delete({ id: c2.id, execId: "tty" }, K8S_NS);
        // Streamed stdin (crictl exec -i): CloseIO right behind the input loses none of it.
        for (let i = 0; i < 3; i++) {
          assert.equal(
            await catThroughStreams(t, a.address, c2.id, `in-vm ${i}\n`),
            `in-vm ${i}\n`,
          );
        }
        t.close();

        // SIGKILL of the sandboxer: the VM and its container keep running, and the
        // container's later exit is reported by the new daemon with its true code.
        await d.kill9();
        await d.spawn();
        assert.equal((await d.controller.status(a.id)).state, "SANDBOX_READY");
        assert.ok(vmmAlive(a.pid));
        const t2 = await taskClient(a.address);
        try {
          assert.equal((await t2.task.state({ id: c2.id, execId: "" }, K8S_NS)).status, 2); // RUNNING
          const w2 = t2.task.wait({ id: c2.id, execId: "" }, K8S_NS);
          await Deno.writeTextFile(join(vol, "stop"), "");
          assert.equal((await w2).exitStatus, 7);
          await t2.task.delete({ id: c2.id, execId: "" }, K8S_NS);
        } finally {
          t2.close();
        }
      } finally {
        t.close();
      }
      // Stop: the VM ends (QEMU quits cleanly).
      await d.controller.stop(a.id, 10);
      assert.ok(!vmmAlive(a.pid), "Stop ended the VM");
      assert.equal((await d.controller.wait(a.id)).exitStatus, 0, "the VMM quit cleanly");
      await d.controller.shutdown(a.id);

      // A VM that dies takes its containers with it: their Wait returns 137, as does the pod's.
      const b = await startPod(d, { cgroupParent: d.cgroupParent });
      const c3 = await createContainer(d, b, { args: ["sleep", "1000"] });
      const t3 = await taskClient(b.address);
      try {
        await t3.task.start({ id: c3.id, execId: "" }, K8S_NS);
        const w3 = t3.task.wait({ id: c3.id, execId: "" }, K8S_NS);
        const waiting = d.controller.wait(b.id);
        Deno.kill(b.pid, "SIGKILL");
        assert.equal((await waiting).exitStatus, 137);
        assert.equal((await w3).exitStatus, 137);
        assert.equal((await d.controller.status(b.id)).state, "SANDBOX_NOTREADY");
      } finally {
        t3.close();
      }
      await d.controller.shutdown(b.id);
      assert.deepEqual(await leftovers(d, [a.id, b.id]), []);
    }, startVmmDaemon),
});

Deno.test({
  name:
    "vmm: a pod's CNI interfaces are mirrored into the VM (tap + tc redirect), one added after start hot-plugged, and their IPs answer",
  ...skipUnless(unavailable(), `vmm sandboxer on ${TEST_VMM}`),
  async fn() {
    const tag = crypto.randomUUID().slice(0, 6);
    const ns = `kuasar-vm-${tag}`, hostIf = `vh${tag}`, lateIf = `vl${tag}`;
    const net = 10 + Math.floor(Math.random() * 240);
    const ip = async (...args: string[]) => {
      const r = await new Deno.Command("ip", { args, stderr: "piped" }).output();
      assert.ok(r.success, `ip ${args.join(" ")}: ${new TextDecoder().decode(r.stderr)}`);
    };
    // What a CNI bridge/ptp plugin leaves: eth0 with the pod IP and a default route.
    await ip("netns", "add", ns);
    const d = await startVmmDaemon();
    try {
      await ip("link", "add", hostIf, "type", "veth", "peer", "name", "eth0", "netns", ns);
      await ip("addr", "add", `10.233.${net}.1/24`, "dev", hostIf);
      await ip("link", "set", hostIf, "up");
      await ip("-n", ns, "addr", "add", `10.233.${net}.2/24`, "dev", "eth0");
      await ip("-n", ns, "link", "set", "eth0", "up");
      await ip("-n", ns, "link", "set", "lo", "up");
      await ip("-n", ns, "route", "add", "default", "via", `10.233.${net}.1`);

      // Two CPUs: the VM has 2 vCPUs and its NIC a queue pair per vCPU (multi-queue tap).
      const pod = await startPod(d, {
        netnsPath: `/var/run/netns/${ns}`,
        hostname: "vm-net",
        resources: { cpuPeriod: 100_000, cpuQuota: 200_000 },
      });
      // A second interface, set up after the pod started (an engine doing CNI late): the
      // next container's Create finds it, and the VM gets a hot-plugged NIC for it.
      await ip("link", "add", lateIf, "type", "veth", "peer", "name", "eth1", "netns", ns);
      await ip("addr", "add", `10.234.${net}.1/24`, "dev", lateIf);
      await ip("link", "set", lateIf, "up");
      await ip("-n", ns, "addr", "add", `10.234.${net}.2/24`, "dev", "eth1");
      await ip("-n", ns, "link", "set", "eth1", "up");
      // Containers share the VM's network: the mirrored interfaces and routes, and a server.
      const netOut = join(d.base, "net-out");
      await mkfifo(netOut);
      const no = readFifo(netOut);
      const probe = await createContainer(d, pod, {
        args: [
          "sh",
          "-c",
          "ip addr show eth0; ip addr show eth1; ip route; ls /sys/class/net/eth0/queues; " +
          "echo late; ls /sys/class/net/eth1/queues",
        ],
        stdout: netOut,
      });
      const t = await taskClient(pod.address);
      try {
        const pw = t.task.wait({ id: probe.id, execId: "" }, K8S_NS);
        await t.task.start({ id: probe.id, execId: "" }, K8S_NS);
        assert.equal((await pw).exitStatus, 0);
        const text = await no.text;
        assert.match(text, new RegExp(`10\\.233\\.${net}\\.2/24`));
        assert.match(text, new RegExp(`10\\.234\\.${net}\\.2/24`), "the late interface");
        assert.match(text, new RegExp(`default via 10\\.233\\.${net}\\.1`));
        const [boot, late] = text.split("late\n");
        assert.deepEqual(boot.match(/\brx-\d+\b/g), ["rx-0", "rx-1"], text);
        assert.deepEqual(late.match(/\brx-\d+\b/g), ["rx-0", "rx-1"], "hot-plugged: as many");
        const web = await createContainer(d, pod, {
          args: [
            "sh",
            "-c",
            "mkdir -p /tmp/www && echo vm-page > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www",
          ],
        });
        await t.task.start({ id: web.id, execId: "" }, K8S_NS);
      } finally {
        t.close();
      }
      let body = "";
      for (let i = 0; i < 100 && !body; i++) {
        body = await fetch(`http://10.233.${net}.2:8080/`, { signal: AbortSignal.timeout(2000) })
          .then((r) => r.text(), () => "");
        if (!body) await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(body, "vm-page\n", "the pod IP answers from the host, served inside the VM");
      const late = await fetch(`http://10.234.${net}.2:8080/`, {
        signal: AbortSignal.timeout(5000),
      })
        .then((r) => r.text(), (e) => String(e));
      assert.equal(late, "vm-page\n", "and so does the late interface's");
      await assertShutdownLeavesNothing(d, [pod.id]);
      const links = await new Deno.Command("ip", { args: ["-n", ns, "-o", "link"] }).output();
      assert.doesNotMatch(new TextDecoder().decode(links.stdout), /tap\d+_kuasar/, "taps removed");
    } catch (e) {
      console.error((await d.logs()).split("\n").slice(-40).join("\n"));
      throw e;
    } finally {
      await d.cleanup();
      await new Deno.Command("ip", { args: ["link", "del", hostIf] }).output();
      await new Deno.Command("ip", { args: ["link", "del", lateIf] }).output();
      await new Deno.Command("ip", { args: ["netns", "del", ns] }).output();
    }
  },
});

Deno.test({
  name: "vmm: an out-of-memory kill in the guest reaches containerd as /tasks/oom",
  ...skipUnless(unavailable(), `vmm sandboxer on ${TEST_VMM}`),
  async fn() {
    await withEventsSink((sink) =>
      withDaemon(async (d) => {
        const pod = await startPod(d, { cgroupParent: d.cgroupParent });
        // A shell string of 64 MiB in a container limited to 16 MiB.
        const c = await createContainer(d, pod, {
          args: ["sh", "-c", "x=$(head -c 67108864 /dev/zero | tr '\\0' a); echo survived"],
          memoryLimit: 16 * 1024 * 1024,
        });
        const t = await taskClient(pod.address);
        try {
          const w = t.task.wait({ id: c.id, execId: "" }, K8S_NS);
          await t.task.start({ id: c.id, execId: "" }, K8S_NS);
          assert.equal((await w).exitStatus, 137);
          await sink.until((e) => e.some((x) => x.topic === "/tasks/oom"), 10_000);
          const oom = sink.events.find((x) => x.topic === "/tasks/oom");
          assert.ok(oom, `no /tasks/oom among ${sink.events.map((x) => x.topic)}`);
          assert.equal(TaskOOM.decode(oom.value).containerId, c.id);
          await t.task.delete({ id: c.id, execId: "" }, K8S_NS);
        } finally {
          t.close();
        }
        await assertShutdownLeavesNothing(d, [pod.id]);
      }, () => startVmmDaemon(["--containerd-address", sink.address]))
    );
  },
});

Deno.test({
  name: "vmm: a pod's CPU quota and memory limit size its VM; the host's cpuset is not the guest's",
  ...skipUnless(unavailable(), `vmm sandboxer on ${TEST_VMM}`),
  fn: () =>
    withDaemon(async (d) => {
      // The config's VMs have 1 vCPU and 512 MiB (startVmmDaemon); this pod asks for 2 CPUs and
      // 768 MiB, so its VM has 2 vCPUs and 768 + GUEST_OVERHEAD_MIB.
      const pod = await startPod(d, {
        cgroupParent: d.cgroupParent,
        resources: { cpuPeriod: 100_000, cpuQuota: 200_000, memoryLimitInBytes: 768 << 20 },
      });
      const out = join(d.base, "size-out");
      await mkfifo(out);
      const o = readFifo(out);
      // Pinned as a static CPU manager pins it on the host: CPUs the guest does not have.
      const c = await createContainer(d, pod, {
        args: ["sh", "-c", "nproc; awk '/MemTotal/ { print int($2 / 1024) }' /proc/meminfo"],
        stdout: out,
        cpuset: "12-15",
      });
      const t = await taskClient(pod.address);
      try {
        const w = t.task.wait({ id: c.id, execId: "" }, K8S_NS);
        await t.task.start({ id: c.id, execId: "" }, K8S_NS);
        assert.equal((await w).exitStatus, 0);
        const [cpus, memMiB] = (await o.text).trim().split("\n").map(Number);
        assert.equal(cpus, 2);
        // MemTotal is the VM's memory less what the kernel keeps for itself.
        const vm = 768 + GUEST_OVERHEAD_MIB;
        assert.ok(memMiB > vm - 160 && memMiB <= vm, `MemTotal ${memMiB} MiB in a ${vm} MiB VM`);
        await t.task.delete({ id: c.id, execId: "" }, K8S_NS);
      } finally {
        t.close();
      }
      await assertShutdownLeavesNothing(d, [pod.id]);
    }, () => startVmmDaemon()),
});

Deno.test({
  name: "vmm: a guest's clock is set again every interval, and when a restarted daemon finds it",
  ...skipUnless(unavailable(), `vmm sandboxer on ${TEST_VMM}`),
  fn: () =>
    withDaemon(async (d) => {
      const pod = await startPod(d, { cgroupParent: d.cgroupParent });
      const path = pod.address.replace(/^ttrpc\+unix:\/\//, "");
      const vmShell = async (command: string) => {
        const c = await TtrpcClient.connectUnix(path);
        try {
          const r = await unaryClient(c, SandboxServiceDefinition)
            .execVMProcess({ command, stdin: new Uint8Array() }, { timeoutMs: 20_000 });
          return r.out.trim();
        } finally {
          c.close();
        }
      };
      const skew = async () => Math.abs(Number(await vmShell("date +%s")) - Date.now() / 1000);
      const waitSynced = async (ms: number) => {
        const deadline = Date.now() + ms;
        while (await skew() > 5) {
          if (Date.now() > deadline) return false;
          await new Promise((r) => setTimeout(r, 500));
        }
        return true;
      };
      // An NTP step or a suspend, as the guest sees it: its clock in 2001.
      await vmShell("date -s @1000000000 >/dev/null");
      assert.ok(await skew() > 1e8, "the guest's clock was moved");
      assert.ok(await waitSynced(20_000), "set again within the 10 s interval");

      // Moved while no sandboxer runs: the restarted one sets it when it finds the VM, before
      // its own first interval.
      await d.kill9();
      await vmShell("date -s @1000000000 >/dev/null").catch(() => {});
      await d.spawn();
      const skewed = await skew();
      assert.ok(skewed < 5 || await waitSynced(5_000), `guest clock off by ${skewed} s`);
      await assertShutdownLeavesNothing(d, [pod.id]);
    }, () => startVmmDaemon([], [], ["clock_sync_interval_secs = 10"])),
});

Deno.test({
  name: "vmm: a guest booted again behind the sandboxer's back (a new boot id) ends its pod",
  ...skipUnless(unavailable(), `vmm sandboxer on ${TEST_VMM}`),
  fn: () =>
    withDaemon(async (d) => {
      const pod = await startPod(d, { cgroupParent: d.cgroupParent });
      const path = pod.address.replace(/^ttrpc\+unix:\/\//, "");
      const c = await TtrpcClient.connectUnix(path);
      const guestBoot = await unaryClient(c, SandboxServiceDefinition)
        .execVMProcess({ command: "cat /proc/sys/kernel/random/boot_id", stdin: new Uint8Array() })
        .then((r) => r.out.trim())
        .finally(() => c.close());
      const recordPath = join(d.dir, pod.id, "sandbox.json");
      const file = JSON.parse(await Deno.readTextFile(recordPath));
      assert.equal(file.record.backend.guestBootId, guestBoot, "the boot id is in the record");
      // As a VMM that restarts a rebooting guest would leave it (Cloud Hypervisor, StratoVirt):
      // the VM runs, its guest is another boot. QEMU exits instead, so the record says it here.
      await d.kill9();
      file.record.backend.guestBootId = "00000000-0000-0000-0000-000000000000";
      await Deno.writeTextFile(recordPath, JSON.stringify(file));
      await d.spawn();
      const w = await d.controller.wait(pod.id);
      assert.equal(w.exitStatus, 137, "ended as a crash");
      assert.ok(!vmmAlive(pod.pid), "the VM is gone");
      await assertShutdownLeavesNothing(d, [pod.id]);
    }, () => startVmmDaemon()),
});

Deno.test({
  name: "vmm: OCI hooks the guest has run there; one naming a host-only program is dropped",
  ...skipUnless(
    unavailable() ?? sharedDirectoryOnly("hooks writing where the host reads"),
    `vmm sandboxer on ${TEST_VMM}`,
  ),
  fn: () =>
    withDaemon(async (d) => {
      const pod = await startPod(d, { cgroupParent: d.cgroupParent });
      const req = await prepareContainer(d, pod, { args: ["sh", "-c", "echo ran > /hook-seen"] });
      const inGuest = `${GUEST_SHARED_DIR}/${req.id}`;
      const hook = (stage: string) => ({
        path: "/bin/sh",
        args: ["sh", "-c", `cat > ${inGuest}/${stage}.json`], // the container state, on stdin
      });
      const config = join(req.bundle, "config.json");
      const spec = JSON.parse(await Deno.readTextFile(config));
      spec.hooks = {
        createRuntime: [hook("createRuntime")],
        poststart: [hook("poststart")],
        prestart: [{ path: "/usr/local/bin/host-only-gpu-hook" }],
      };
      await Deno.writeTextFile(config, JSON.stringify(spec));
      await createTask(pod, req);
      const t = await taskClient(pod.address);
      try {
        const w = t.task.wait({ id: req.id, execId: "" }, K8S_NS);
        await t.task.start({ id: req.id, execId: "" }, K8S_NS);
        assert.equal((await w).exitStatus, 0);
        const share = join(d.dir, pod.id, "shared", req.id);
        for (const stage of ["createRuntime", "poststart"]) {
          const state = JSON.parse(await Deno.readTextFile(join(share, `${stage}.json`)));
          assert.equal(state.id, req.id, stage);
        }
        // The guest agent says so on the VM's console.
        const console = await Deno.readTextFile(join(d.dir, pod.id, "console.log"));
        assert.match(console, /hooks not in the guest are not run.*host-only-gpu-hook/);
        await t.task.delete({ id: req.id, execId: "" }, K8S_NS);
      } finally {
        t.close();
      }
      await assertShutdownLeavesNothing(d, [pod.id]);
    }, () => startVmmDaemon()),
});

Deno.test({
  name: "vmm: containers of a pod sharing its pid namespace see each other's processes",
  ...skipUnless(unavailable(), `vmm sandboxer on ${TEST_VMM}`),
  fn: () =>
    withDaemon(async (d) => {
      const ps = async (pod: TestPod, sharePid: boolean) => {
        const sleeper = await createContainer(d, pod, { args: ["sleep", "1000"], sharePid });
        const out = join(d.base, `ps-${sleeper.id}`);
        await mkfifo(out);
        const o = readFifo(out);
        const t = await taskClient(pod.address);
        try {
          await t.task.start({ id: sleeper.id, execId: "" }, K8S_NS);
          const c = await createContainer(d, pod, {
            args: ["ps", "-o", "args"],
            stdout: out,
            sharePid,
          });
          const w = t.task.wait({ id: c.id, execId: "" }, K8S_NS);
          await t.task.start({ id: c.id, execId: "" }, K8S_NS);
          assert.equal((await w).exitStatus, 0);
          await t.task.kill({ id: sleeper.id, execId: "", signal: 9, all: false }, K8S_NS);
          await t.task.wait({ id: sleeper.id, execId: "" }, K8S_NS);
          for (const id of [c.id, sleeper.id]) await t.task.delete({ id, execId: "" }, K8S_NS);
          return await o.text;
        } finally {
          t.close();
        }
      };
      const shared = await startPod(d, { cgroupParent: d.cgroupParent, sharePid: true });
      assert.match(await ps(shared, true), /sleep 1000/);
      const apart = await startPod(d, { cgroupParent: d.cgroupParent });
      assert.doesNotMatch(await ps(apart, false), /sleep 1000/);
      await assertShutdownLeavesNothing(d, [shared.id, apart.id]);
    }, () => startVmmDaemon()),
});

Deno.test({
  name: "vmm: a memory emptyDir is a tmpfs in the guest, shared by the pod's containers",
  ...skipUnless(unavailable(), `vmm sandboxer on ${TEST_VMM}`),
  fn: () =>
    withDaemon(async (d) => {
      // As kubelet makes an emptyDir with medium: Memory: a tmpfs at its volume path.
      const vol = join(d.base, "pods/u1/volumes/kubernetes.io~empty-dir/cache");
      await Deno.mkdir(vol, { recursive: true });
      const m = await new Deno.Command("mount", { args: ["-t", "tmpfs", "tmpfs", vol] }).output();
      assert.ok(m.success, "mount tmpfs");
      try {
        const pod = await startPod(d, { cgroupParent: d.cgroupParent });
        const mounts = [{
          destination: "/cache",
          type: "bind",
          source: vol,
          options: ["rbind", "rw"],
        }];
        const run = async (script: string) => {
          const out = join(d.base, `out-${randomId().slice(0, 8)}`);
          await mkfifo(out);
          const o = readFifo(out);
          const c = await createContainer(d, pod, {
            args: ["sh", "-c", script],
            stdout: out,
            mounts,
          });
          assert.equal(await runToExit(pod, c.id), 0);
          return (await o.text).trim();
        };
        assert.match(
          await run("grep ' /cache ' /proc/mounts; echo kept > /cache/f"),
          /^tmpfs \/cache tmpfs /,
        );
        assert.equal(await run("cat /cache/f"), "kept", "the next container of the pod sees it");
        assert.deepEqual([...Deno.readDirSync(vol)], [], "in the guest's memory, not the host's");
        await new Deno.Command("umount", { args: ["-l", vol] }).output();
        await assertShutdownLeavesNothing(d, [pod.id]);
      } finally {
        await new Deno.Command("umount", { args: ["-l", vol] }).output();
      }
    }, () => startVmmDaemon()),
});

Deno.test({
  name:
    "vmm: block volumes are disks of the VM: a file system on a host device, a raw device, a rootfs image",
  ...skipUnless(unavailable() ?? blockToolsMissing(), `vmm sandboxer on ${TEST_VMM}, e2fsprogs`),
  fn: () =>
    withDaemon(async (d) => {
      // A volume with a file system (as a CSI block volume mounted by path), a raw device
      // (Kubernetes volumeDevices: linux.devices), and a rootfs that is an ext4 image file.
      const f = await blockFixtures(d.base);
      const vol = f.vol, rawDev = f.rawDev;
      const root = join(d.base, "root-files");
      await new Deno.Command("cp", { args: ["-a", await ensureBusyboxRootfs(), root] }).output();
      await Deno.writeTextFile(join(root, "marker"), "rootfs-on-a-disk\n");
      const rootImage = await ext4Image(join(d.base, "root.img"), 32, root);
      try {
        const pod = await startPod(d, { cgroupParent: d.cgroupParent });
        const disksFile = join(d.dir, pod.id, "disks.json");
        const run = async (
          script: string,
          o: { devices?: boolean; rootfsImage?: boolean } = {},
        ) => {
          const out = join(d.base, `out-${randomId().slice(0, 8)}`);
          await mkfifo(out);
          const text = readFifo(out);
          const req = await prepareContainer(d, pod, {
            args: ["sh", "-c", script],
            stdout: out,
            mounts: [{
              destination: "/data",
              type: "bind",
              source: vol.path,
              options: ["rbind", "rw"],
            }],
          });
          const config = join(req.bundle, "config.json");
          const spec = JSON.parse(await Deno.readTextFile(config));
          if (o.devices) {
            const dev = { type: "b", major: rawDev.major, minor: rawDev.minor };
            spec.linux.devices = [{ path: "/dev/xvdb", ...dev, fileMode: 0o660, uid: 0, gid: 0 }];
            spec.linux.resources.devices = [
              ...(spec.linux.resources.devices ?? []),
              { allow: true, ...dev, access: "rwm" },
            ];
          }
          await Deno.writeTextFile(config, JSON.stringify(spec));
          const c = await createTask(
            pod,
            o.rootfsImage
              ? { ...req, rootfs: [{ type: "ext4", source: rootImage, target: "", options: [] }] }
              : req,
          );
          const t = await taskClient(pod.address);
          try {
            const w = t.task.wait({ id: c.id, execId: "" }, K8S_NS);
            await t.task.start({ id: c.id, execId: "" }, K8S_NS);
            const status = (await w).exitStatus;
            const inUse = JSON.parse(await Deno.readTextFile(disksFile)).disks.length;
            await t.task.delete({ id: c.id, execId: "" }, K8S_NS);
            return { status, out: (await text.text).trim(), inUse };
          } finally {
            t.close();
          }
        };
        const first = await run(
          `grep ' /data ' /proc/mounts | cut -d' ' -f1,3; ${BLOCK_IO_SCRIPT}`,
          { devices: true },
        );
        assert.equal(first.status, 0, first.out);
        const [mount, ...rest] = first.out.split("\n");
        assert.match(mount, /^\S+ ext4$/, "the guest's kernel mounts the disk's ext4");
        assert.doesNotMatch(mount, /virtiofs/);
        assert.equal(`${rest.join("\n")}\n`, BLOCK_IO_OUTPUT, "volume and raw device read");
        // Besides the container's own bundle disk, without a shared directory.
        assert.equal(
          first.inUse,
          TEST_BUNDLES_ON_DISKS ? 3 : 2,
          "two disks attached while the container ran",
        );
        // The next container of the pod finds the first one's write; its rootfs is a disk.
        const second = await run("cat /marker /data/out.txt; grep ' / ' /proc/mounts", {
          rootfsImage: true,
        });
        assert.equal(second.status, 0, second.out);
        assert.match(second.out, /^rootfs-on-a-disk\nwritten-in-the-vm\n/);
        assert.match(second.out, /\/run\/kuasar\/disks\/\S+ \/ ext4|\/ ext4/);
        // Detached once unused: the guest lets the devices go (PCIe takes seconds).
        const deadline = Date.now() + 60_000;
        while (JSON.parse(await Deno.readTextFile(disksFile)).disks.length) {
          assert.ok(Date.now() < deadline, "disks detached after their containers went");
          await new Promise((r) => setTimeout(r, 500));
        }
        const blocks = await ctl(d, "exec", pod.id, "--", "ls", "/sys/block");
        assert.doesNotMatch(blocks.stdout, /vd/, "no disk left in the guest");
        await assertShutdownLeavesNothing(d, [pod.id]);
      } finally {
        await f.release();
      }
      // What the VM wrote is on the host's devices.
      await f.assertWritten();
    }, () => startVmmDaemon()),
});

Deno.test({
  name: "vmm: the opt-in debug console: `kuasar ctl shell` gets a shell on a pty in the guest",
  ...skipUnless(
    unavailable() ?? qemuOnly("the debug console (a virtio-serial port)"),
    `vmm sandboxer on ${TEST_VMM}`,
  ),
  fn: () =>
    withDaemon(async (d) => {
      const pod = await startPod(d, { cgroupParent: d.cgroupParent });
      // A shell with a terminal (job control, a pty), its output and its exit status.
      const first = await ctlWithInput(
        d,
        "tty; echo $((6 * 7)); cat /proc/1/comm; exit 3\n",
        "shell",
        pod.id.slice(0, 10),
      );
      assert.equal(first.code, 3, first.stderr);
      assert.match(first.stdout, /\/dev\/pts\/\d+/);
      assert.match(first.stdout, /\b42\b/);
      assert.match(first.stdout, /deno/, "the guest's PID 1 is the agent");
      assert.doesNotMatch(first.stdout, /kuasar-shell-exit/, "the trailer is not output");
      // Each connection gets a new shell, even one that comes at once.
      const second = await ctlWithInput(d, "echo again\nexit\n", "shell", pod.id);
      assert.equal(second.code, 0, second.stderr);
      assert.match(second.stdout, /again/);
      const third = await ctlWithInput(d, "exit 5\n", "shell", pod.id);
      assert.equal(third.code, 5, third.stderr);
      await assertShutdownLeavesNothing(d, [pod.id]);
    }, () => startVmmDaemon([], [], ["task = { debug = true }"])),
});

Deno.test({
  name:
    'vmm: share_fs = "None": each container\'s bundle is a disk image of its own; its files copies, its writes its own, nothing left',
  ...skipUnless(unavailable() ?? blockToolsMissing(), `vmm sandboxer on ${TEST_VMM}, e2fsprogs`),
  fn: async () => {
    const images = await Deno.makeTempDir({ prefix: "k-bd-" });
    try {
      await withDaemon(async (d) => {
        // A host file and a host directory bound in, as kubelet binds /etc/hosts and volumes.
        const hostFile = join(d.base, "hosts");
        await Deno.writeTextFile(hostFile, "10.0.0.7 from-the-host\n");
        const vol = join(d.base, "vol");
        await Deno.mkdir(vol);
        await Deno.writeTextFile(join(vol, "seed"), "seeded\n");
        const pod = await startPod(d, { cgroupParent: d.cgroupParent });
        const mounts = [
          { destination: "/etc/hosts", type: "bind", source: hostFile, options: ["rbind", "ro"] },
          { destination: "/vol", type: "bind", source: vol, options: ["rbind", "rw"] },
        ];
        const t = await taskClient(pod.address);
        try {
          const run = async (script: string, exec?: string[]) => {
            const out = join(d.base, `out-${randomId().slice(0, 8)}`);
            await mkfifo(out);
            const o = readFifo(out);
            const c = await createContainer(d, pod, {
              args: ["sh", "-c", script],
              stdout: out,
              mounts,
            });
            const image = join(images, pod.id, `${c.id}.img`);
            assert.ok((await Deno.stat(image)).isFile, "the container's image, on the host");
            const w = t.task.wait({ id: c.id, execId: "" }, K8S_NS);
            await t.task.start({ id: c.id, execId: "" }, K8S_NS);
            let execOut: string | undefined;
            if (exec) {
              const eo = join(d.base, `exec-${randomId().slice(0, 8)}`);
              await mkfifo(eo);
              const text = readFifo(eo);
              await t.task.exec(execRequest(c.id, "e1", exec, eo), K8S_NS);
              const ew = t.task.wait({ id: c.id, execId: "e1" }, K8S_NS);
              await t.task.start({ id: c.id, execId: "e1" }, K8S_NS);
              assert.equal((await ew).exitStatus, 0);
              execOut = await text.text;
              await t.task.delete({ id: c.id, execId: "e1" }, K8S_NS);
              await t.task.kill({ id: c.id, execId: "", signal: 9, all: false }, K8S_NS);
            }
            const status = (await w).exitStatus;
            await t.task.delete({ id: c.id, execId: "" }, K8S_NS);
            await assert.rejects(Deno.stat(image), "the image goes with its container");
            return { status, out: (await o.text).trim(), execOut };
          };
          const first = await run(
            "cat /etc/hosts /vol/seed; echo mine > /vol/new; echo scratch > /scratch; " +
              "grep ' / ' /proc/mounts | cut -d' ' -f3",
          );
          assert.equal(first.status, 0, first.out);
          assert.equal(first.out, "10.0.0.7 from-the-host\nseeded\next4");
          // Copies: what the container wrote stays in its image, not in the host's directory.
          assert.deepEqual([...Deno.readDirSync(vol)].map((e) => e.name), ["seed"]);
          // The next container has an image of its own; exec runs in it.
          const second = await run("test ! -e /scratch && test ! -e /vol/new && sleep 60", [
            "cat",
            "/vol/seed",
          ]);
          assert.equal(second.execOut, "seeded\n");
          assert.equal(second.status, 137, second.out);
          const fs = await ctl(d, "exec", pod.id, "--", "cat", "/proc/mounts");
          assert.equal(fs.code, 0, fs.stderr);
          assert.doesNotMatch(fs.stdout, /virtiofs/, "no shared directory in this VM");
        } finally {
          t.close();
        }
        await assertShutdownLeavesNothing(d, [pod.id]);
        await assert.rejects(Deno.stat(join(images, pod.id)), "the pod's image directory goes");
      }, () => startVmmDaemon([], [], ['share_fs = "None"', `bundle_disk_dir = "${images}"`]));
    } finally {
      await Deno.remove(images, { recursive: true }).catch(() => {});
    }
  },
});
