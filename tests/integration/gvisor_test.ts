/**
 * The gVisor sandboxer end to end with the real runsc (ptrace platform, as
 * KVM is not usable here): a pod is a runsc sandbox, containers are its
 * subcontainers; the runC scenarios, and proof that the kernel is gVisor's.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  K8S_NS,
  mkfifo,
  readFifo,
  startGvisorDaemon,
  taskClient,
  type TestDaemon,
  withDaemon,
} from "../support/daemon.ts";
import { execRequest } from "../support/oci.ts";
import { createContainer, randomId, startPod, type TestPod } from "../support/pod.ts";
import { RUNSC_BEFORE_2023, runscUnavailable, skipUnless } from "../support/env.ts";
import { assertShutdownLeavesNothing } from "../support/leaks.ts";

const skip = skipUnless(runscUnavailable(), "gVisor sandboxer");

/** Runs a container to its end; resolves with its exit status and stdout. */
async function runToEnd(
  d: TestDaemon,
  pod: TestPod,
  args: string[],
  name: string,
  terminal = false,
) {
  const fifo = join(d.base, name);
  await mkfifo(fifo);
  const out = readFifo(fifo);
  const c = await createContainer(d, pod, { args, stdout: fifo, terminal });
  const t = await taskClient(pod.address);
  try {
    const w = t.task.wait({ id: c.id, execId: "" }, K8S_NS);
    await t.task.start({ id: c.id, execId: "" }, K8S_NS);
    const status = (await w).exitStatus;
    const text = await out.text;
    await t.task.delete({ id: c.id, execId: "" }, K8S_NS);
    return { status, text };
  } finally {
    t.close();
  }
}

/** `runsc … wait` processes of the daemon's pods (their command lines). */
async function runscWaits(d: TestDaemon): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    const argv = await Deno.readTextFile(`/proc/${e.name}/cmdline`).then(
      (t) => t.split("\0"),
      (): string[] => [],
    );
    if (/runsc$/.test(argv[0] ?? "") && argv.includes("wait") && argv.join(" ").includes(d.dir)) {
      out.push(argv.join(" "));
    }
  }
  return out;
}

Deno.test({
  name: "gVisor: hello and exit 42 in a runsc sandbox whose kernel is gVisor's; nothing left after",
  ...skip,
  fn: () =>
    withDaemon(async (d) => {
      const pod = await startPod(d, { hostname: "gv-pod", cgroupParent: d.cgroupParent });
      assert.ok(pod.pid > 0);
      assert.equal((await d.controller.status(pod.id)).state, "SANDBOX_READY");
      // The pod is a runsc sandbox: its process is runsc's, not a host namespace holder.
      const comm = (await Deno.readTextFile(`/proc/${pod.pid}/cmdline`)).replaceAll("\0", " ");
      assert.match(comm, /runsc/);

      const r = await runToEnd(
        d,
        pod,
        ["sh", "-c", "echo hello; hostname; dmesg | head -n 3; exit 42"],
        "out1",
      );
      assert.equal(r.status, 42);
      const lines = r.text.split("\n");
      assert.equal(lines[0], "hello");
      assert.equal(lines[1], "gv-pod");
      // gVisor's sentry prints its own boot lines; a host kernel would not.
      assert.match(r.text, /Starting gVisor/);

      await d.controller.stop(pod.id, 5);
      assert.ok((await d.controller.wait(pod.id)).exitedAt);
      await assertShutdownLeavesNothing(d, [pod.id]);
    }, startGvisorDaemon),
});

Deno.test({
  name: "gVisor: a pod stopped with its container still running leaves nothing, cgroups included",
  ...skip,
  fn: () =>
    withDaemon(async (d) => {
      const pod = await startPod(d, { cgroupParent: d.cgroupParent });
      const c = await createContainer(d, pod, { args: ["sleep", "1000"] });
      const t = await taskClient(pod.address);
      try {
        await t.task.start({ id: c.id, execId: "" }, K8S_NS);
      } finally {
        t.close();
      }
      // runsc removes a subcontainer's cgroup through the sandbox, gone by the time the
      // container is deleted with the pod: the sandboxer removes it.
      await d.controller.stop(pod.id, 5);
      await assertShutdownLeavesNothing(d, [pod.id]);
    }, startGvisorDaemon),
});

Deno.test({
  name: "gVisor: exec, kill, pids, stats and a pty; two containers share the pod's network",
  ...skip,
  fn: () =>
    withDaemon(async (d) => {
      const pod = await startPod(d, { hostname: "gv-exec", cgroupParent: d.cgroupParent });
      const c = await createContainer(d, pod, {
        args: ["sh", "-c", "echo from-a | nc -l -p 7777; sleep 1000"],
      });
      const t = await taskClient(pod.address);
      try {
        await t.task.start({ id: c.id, execId: "" }, K8S_NS);
        assert.equal((await t.task.state({ id: c.id, execId: "" }, K8S_NS)).status, 2);
        // Exits are asked of the sandbox by the helper, not by a Go `runsc wait` per container.
        if (!RUNSC_BEFORE_2023) assert.deepEqual(await runscWaits(d), []);

        // exec with an exit code and the pod's hostname
        const eoPath = join(d.base, "exec-out");
        await mkfifo(eoPath);
        const eo = readFifo(eoPath);
        await t.task.exec(
          execRequest(c.id, "e1", ["sh", "-c", "hostname; exit 3"], eoPath),
          K8S_NS,
        );
        const ew = t.task.wait({ id: c.id, execId: "e1" }, K8S_NS);
        assert.ok((await t.task.start({ id: c.id, execId: "e1" }, K8S_NS)).pid > 0);
        assert.equal((await ew).exitStatus, 3);
        assert.equal(await eo.text, "gv-exec\n");
        await t.task.delete({ id: c.id, execId: "e1" }, K8S_NS);

        // kill of an exec: SIGTERM reaches the process inside the sandbox
        await t.task.exec(execRequest(c.id, "e2", ["sleep", "1000"], ""), K8S_NS);
        const kw = t.task.wait({ id: c.id, execId: "e2" }, K8S_NS);
        await t.task.start({ id: c.id, execId: "e2" }, K8S_NS);
        const pids = await t.task.pids({ id: c.id }, K8S_NS);
        assert.ok(pids.processes.length >= 2, JSON.stringify(pids));
        await t.task.kill({ id: c.id, execId: "e2", signal: 15, all: false }, K8S_NS);
        assert.equal((await kw).exitStatus, 143);
        await t.task.delete({ id: c.id, execId: "e2" }, K8S_NS);

        // stats: the sandbox's cgroup
        const stats = await t.task.stats({ id: c.id }, K8S_NS);
        assert.match(stats.stats?.typeUrl ?? "", /^io\.containerd\.cgroups\.v[12]\.Metrics$/);

        // a pty exec
        const ptyPath = join(d.base, "pty-out");
        await mkfifo(ptyPath);
        const po = readFifo(ptyPath);
        await t.task.exec(
          execRequest(c.id, "tty", ["sh", "-c", "sleep 0.5; echo via-pty"], ptyPath, true),
          K8S_NS,
        );
        const tw = t.task.wait({ id: c.id, execId: "tty" }, K8S_NS);
        await t.task.start({ id: c.id, execId: "tty" }, K8S_NS);
        await t.task.resizePty({ id: c.id, execId: "tty", width: 100, height: 40 }, K8S_NS);
        assert.equal((await tw).exitStatus, 0);
        // Through the pty (CRLF line ends). This runsc build (Debian's 2022
        // release) gives the process the pty's slave without TTY semantics
        // inside the sandbox (`tty` says "not a tty"), so only the data path is checked.
        assert.equal(await po.text, "via-pty\r\n");

        // a second container of the pod reaches the first over the pod's loopback
        // (stdin held open, so the client does not leave before the reply)
        const b = await runToEnd(d, pod, [
          "sh",
          "-c",
          "sleep 1 | nc 127.0.0.1 7777",
        ], "out-b");
        assert.equal(b.text.trim(), "from-a");

        // a container with a terminal (runsc hands its pty out at create)
        const tc = await runToEnd(d, pod, ["sh", "-c", "echo tty-ctr; exit 4"], "out-t", true);
        assert.deepEqual(tc, { status: 4, text: "tty-ctr\r\n" });

        // SIGKILL of the init: 137
        const w = t.task.wait({ id: c.id, execId: "" }, K8S_NS);
        await t.task.kill({ id: c.id, execId: "", signal: 9, all: false }, K8S_NS);
        assert.equal((await w).exitStatus, 137);
        await t.task.delete({ id: c.id, execId: "" }, K8S_NS);
      } finally {
        t.close();
      }
      await assertShutdownLeavesNothing(d, [pod.id]);
    }, startGvisorDaemon),
});

Deno.test({
  name: "gVisor: SIGKILL of the sandboxer loses no pod, container or exit code",
  ...skip,
  fn: () =>
    withDaemon(async (d) => {
      const pod = await startPod(d, { cgroupParent: d.cgroupParent });
      const goPath = "/tmp/go";
      const running = await createContainer(d, pod, {
        args: ["sh", "-c", `while [ ! -e ${goPath} ]; do sleep 0.1; done; exit 7`],
      });
      const created = await createContainer(d, pod, { args: ["sh", "-c", "exit 5"] });
      let t = await taskClient(pod.address);
      await t.task.start({ id: running.id, execId: "" }, K8S_NS);
      t.close();

      await d.kill9();
      await d.spawn();
      assert.equal((await d.controller.status(pod.id)).state, "SANDBOX_READY");
      t = await taskClient(pod.address);
      try {
        assert.equal((await t.task.state({ id: running.id, execId: "" }, K8S_NS)).status, 2);
        assert.equal((await t.task.state({ id: created.id, execId: "" }, K8S_NS)).status, 1);
        // The exit of a container that ends after the restart is exact.
        const w = t.task.wait({ id: running.id, execId: "" }, K8S_NS);
        const e = execRequest(running.id, "go", ["touch", goPath], "");
        await t.task.exec(e, K8S_NS);
        await t.task.start({ id: running.id, execId: "go" }, K8S_NS);
        assert.equal((await w).exitStatus, 7);
        // A container created before the restart still starts.
        const w2 = t.task.wait({ id: created.id, execId: "" }, K8S_NS);
        await t.task.start({ id: created.id, execId: "" }, K8S_NS);
        assert.equal((await w2).exitStatus, 5);
        for (const id of [running.id, created.id]) {
          await t.task.delete({ id, execId: "" }, K8S_NS);
        }
      } finally {
        t.close();
      }
      await assertShutdownLeavesNothing(d, [pod.id]);
    }, startGvisorDaemon),
});

/** The hierarchies (v1 controllers, or v2) in which cgroup `path` exists. */
async function cgroupsAt(path: string): Promise<string[]> {
  const found: string[] = [];
  for (
    const h of [
      "",
      ...(await Array.fromAsync(Deno.readDir("/sys/fs/cgroup"))).map((e) => e.name),
    ]
  ) {
    const dir = join("/sys/fs/cgroup", h, path);
    if (await Deno.stat(dir).then((s) => s.isDirectory, () => false)) found.push(dir);
  }
  return found;
}

/** Starts pods that fail to start, then asserts Shutdown leaves nothing of them, cgroups included. */
async function failedStartsLeaveNothing(d: TestDaemon, netnsPath: string, pods: number) {
  // Under the test's cgroup parent, then the default /kuasar-gvisor.
  const ids = Array.from({ length: pods }, () => randomId());
  for (const [i, id] of ids.entries()) {
    const cgroupParent = i === ids.length - 1 ? "" : d.cgroupParent;
    await assert.rejects(startPod(d, { id, netnsPath, cgroupParent }));
    assert.equal((await d.controller.status(id)).state, "SANDBOX_NOTREADY");
  }
  await assertShutdownLeavesNothing(d, ids);
  for (const id of ids) assert.deepEqual(await cgroupsAt(join("kuasar-gvisor", id)), []);
}

Deno.test({
  name: "gVisor: pods whose Start fails in runsc start leave nothing after Shutdown",
  ...skip,
  async fn() {
    // runsc's netstack in a pod's netns: Debian's runsc (2022) refuses it on
    // kernels >= 5.x ("cannot run with network enabled in root network
    // namespace"), so `runsc start` fails after `runsc create` made the sandbox.
    const name = `kuasar-it-${crypto.randomUUID().slice(0, 8)}`;
    const add = await new Deno.Command("ip", { args: ["netns", "add", name] }).output();
    assert.ok(add.success, "ip netns add");
    try {
      await withDaemon(async (d) => {
        const netnsPath = `/var/run/netns/${name}`;
        const probe = randomId();
        if (await startPod(d, { id: probe, netnsPath }).then(() => true, () => false)) {
          console.log("this runsc starts pods in a netns: no Start failure to test here");
          return await assertShutdownLeavesNothing(d, [probe]);
        }
        await d.controller.shutdown(probe);
        await failedStartsLeaveNothing(d, netnsPath, 2);
      }, () => startGvisorDaemon('platform = "ptrace"\nnetwork = "sandbox"'));
    } finally {
      await new Deno.Command("ip", { args: ["netns", "delete", name] }).output();
    }
  },
});

/** Why runsc's KVM platform cannot fail here as the next test needs, or undefined. */
function kvmCannotFail(): string | undefined {
  try {
    Deno.statSync("/dev/kvm");
  } catch {
    return "no /dev/kvm";
  }
  const cpu = Deno.readTextFileSync("/proc/cpuinfo");
  return /\b(vmx|svm)\b/.test(cpu) ? "KVM works here" : runscUnavailable();
}

Deno.test({
  name:
    "gVisor: a pod whose runsc create fails (KVM platform without VT-x) leaves nothing after Shutdown",
  ...skipUnless(kvmCannotFail(), "gVisor on a broken KVM"),
  // runsc create hangs until the daemon's 60 s deadline for it.
  fn: () =>
    withDaemon(
      (d) => failedStartsLeaveNothing(d, "", 1),
      () => startGvisorDaemon('platform = "kvm"'),
    ),
});
