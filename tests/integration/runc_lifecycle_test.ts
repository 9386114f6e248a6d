/**
 * The runC sandboxer end to end: the real daemon, real runc, a busybox
 * rootfs, our own gRPC and ttrpc clients.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { K8S_NS, mkfifo, readFifo, taskClient, TestDaemon, withDaemon } from "../support/daemon.ts";
import { execRequest, processSpec } from "../support/oci.ts";
import { createContainer, runToExit, startPod, type TestPod } from "../support/pod.ts";
import { runcUnavailable, skipUnless } from "../support/env.ts";
import { decodeMetrics, memoryLimit } from "../support/cgroups.ts";

const skip = skipUnless(runcUnavailable(), "runC lifecycle");

/** Command lines of `pid`'s child processes. */
async function childrenOf(pid: number): Promise<string[]> {
  const out: string[] = [];
  for await (const t of Deno.readDir(`/proc/${pid}/task`)) {
    const kids = await Deno.readTextFile(`/proc/${pid}/task/${t.name}/children`).catch(() => "");
    for (const k of kids.split(" ").filter(Boolean)) {
      const cmd = await Deno.readTextFile(`/proc/${k}/cmdline`).catch(() => "");
      out.push(cmd.replaceAll("\0", " "));
    }
  }
  return out;
}

/** Prints the tty, then the terminal's size once it is set (not 0 0), within 10 s. */
const WAIT_FOR_PTY_SIZE = "tty; for i in $(seq 100); do s=$(stty size 2>/dev/null); " +
  '[ -n "$s" ] && [ "$s" != "0 0" ] && break; sleep 0.1; done; echo "$s"';

Deno.test({
  name: "runC: a container prints hello to its stdout FIFO and Wait returns 42",
  ...skip,
  fn: () =>
    withDaemon(async (d) => {
      const pod = await startPod(d);
      assert.match(pod.address, /^ttrpc\+unix:\/\/.*\/task\.sock$/);
      assert.ok(pod.pid > 0);
      const st = await d.controller.status(pod.id, true);
      assert.equal(st.state, "SANDBOX_READY");
      assert.equal(st.pid, pod.pid);
      assert.equal(st.info.kind, "runc");
      assert.ok(st.createdAt && st.createdAt.seconds > 0n);
      assert.equal(st.exitedAt, undefined);

      const fifo = join(d.base, "stdout");
      await mkfifo(fifo);
      const out = readFifo(fifo);
      const c = await createContainer(d, pod, {
        args: ["sh", "-c", "echo hello; exit 42"],
        stdout: fifo,
      });
      // The pod's holder and the container's monitor left the daemon once ready: it keeps
      // no child (and no pidfd, pipes or wait) for them.
      const helpers = (await childrenOf(d.pid)).filter((c) => / (hold|monitor) /.test(c));
      assert.deepEqual(helpers, []);
      const t = await taskClient(pod.address);
      try {
        const state = await t.task.state({ id: c.id, execId: "" }, K8S_NS);
        assert.equal(state.status, 1); // CREATED
        assert.equal(state.pid, c.pid);
        const waiting = t.task.wait({ id: c.id, execId: "" }, K8S_NS);
        await t.task.start({ id: c.id, execId: "" }, K8S_NS);
        const w = await waiting;
        assert.equal(w.exitStatus, 42);
        assert.ok(w.exitedAt && w.exitedAt.seconds > 0n);
        assert.equal(await out.text, "hello\n");
        const after = await t.task.state({ id: c.id, execId: "" }, K8S_NS);
        assert.equal(after.status, 3); // STOPPED
        assert.equal(after.exitStatus, 42);
        const del = await t.task.delete({ id: c.id, execId: "" }, K8S_NS);
        assert.equal(del.exitStatus, 42);
        await assert.rejects(t.task.state({ id: c.id, execId: "" }, K8S_NS), /not found/);
      } finally {
        t.close();
      }
      await d.controller.stop(pod.id, 5);
      const w = await d.controller.wait(pod.id);
      assert.ok(w.exitedAt);
      const stopped = await d.controller.status(pod.id);
      assert.equal(stopped.state, "SANDBOX_NOTREADY");
      assert.deepEqual(stopped.exitedAt, w.exitedAt);
      await d.controller.shutdown(pod.id);
      await assert.rejects(d.controller.status(pod.id), /not found/);
    }),
});

Deno.test({
  name: "runC: exec, kill, pids, stats, update and a pty",
  ...skip,
  fn: () =>
    withDaemon(async (d) => {
      const pod = await startPod(d, { hostname: "mypod" });
      const c = await createContainer(d, pod, { args: ["sleep", "1000"] });
      const t = await taskClient(pod.address);
      try {
        await t.task.start({ id: c.id, execId: "" }, K8S_NS);

        // exec: hostname comes from the pod's uts namespace
        const execOut = join(d.base, "exec-out");
        await mkfifo(execOut);
        const eo = readFifo(execOut);
        await t.task.exec(
          execRequest(c.id, "e1", ["sh", "-c", "hostname; exit 3"], execOut),
          K8S_NS,
        );
        const ew = t.task.wait({ id: c.id, execId: "e1" }, K8S_NS);
        const started = await t.task.start({ id: c.id, execId: "e1" }, K8S_NS);
        assert.ok(started.pid > 0);
        assert.equal((await ew).exitStatus, 3);
        assert.equal(await eo.text, "mypod\n");
        await t.task.delete({ id: c.id, execId: "e1" }, K8S_NS);

        // pids
        const pids = await t.task.pids({ id: c.id }, K8S_NS);
        assert.ok(pids.processes.some((p) => p.pid === c.pid));

        // stats: the container's cgroup metrics, as containerd decodes them
        const stats = await t.task.stats({ id: c.id }, K8S_NS);
        const m = decodeMetrics(stats.stats);
        assert.ok(m.memoryUsage > 0, "memory usage");
        assert.ok(m.pids >= 1, "pids");

        // update: a memory limit lands in the container's cgroup
        const res = new TextEncoder().encode(
          JSON.stringify({ memory: { limit: 64 * 1024 * 1024 } }),
        );
        await t.task.update(
          { id: c.id, resources: { typeUrl: "x", value: res }, annotations: {} },
          K8S_NS,
        );
        assert.equal(await memoryLimit(`${d.cgroupParent}/${c.id}`), 64 * 1024 * 1024);

        // a pty exec: output arrives through the monitor's pty copy
        const ptyOut = join(d.base, "pty-out");
        await mkfifo(ptyOut);
        const po = readFifo(ptyOut);
        await t.task.exec({
          id: c.id,
          execId: "tty",
          terminal: true,
          stdin: "",
          stdout: ptyOut,
          stderr: "",
          spec: {
            typeUrl: "x",
            value: new TextEncoder().encode(
              // The size comes with ResizePty after Start: the script waits for it (a fixed
              // sleep was too short in a VM under emulation).
              JSON.stringify(processSpec(["sh", "-c", WAIT_FOR_PTY_SIZE], true)),
            ),
          },
        }, K8S_NS);
        const tw = t.task.wait({ id: c.id, execId: "tty" }, K8S_NS);
        await t.task.start({ id: c.id, execId: "tty" }, K8S_NS);
        await t.task.resizePty({ id: c.id, execId: "tty", width: 100, height: 40 }, K8S_NS);
        assert.equal((await tw).exitStatus, 0);
        const ptyText = await po.text;
        assert.match(ptyText, /\/dev\/pts\/\d+/);
        assert.match(ptyText, /40 100/);

        // kill: SIGTERM to sleep as PID 1 of its pid namespace is ignored; SIGKILL is 137
        const w = t.task.wait({ id: c.id, execId: "" }, K8S_NS);
        await t.task.kill({ id: c.id, execId: "", signal: 9, all: false }, K8S_NS);
        assert.equal((await w).exitStatus, 137);
        await assert.rejects(
          t.task.kill({ id: c.id, execId: "", signal: 9, all: false }, K8S_NS),
          /already exited/,
        );
        await t.task.delete({ id: c.id, execId: "" }, K8S_NS);
      } finally {
        t.close();
      }
      await d.controller.shutdown(pod.id);
    }),
});

Deno.test({
  name: "runC: containers of a pod share its network, ipc and uts namespaces",
  ...skip,
  async fn() {
    const d = await TestDaemon.start();
    try {
      const pod = await startPod(d, { hostname: "shared" });
      const a = await createContainer(d, pod, { args: ["sleep", "1000"] });
      const t = await taskClient(pod.address);
      try {
        await t.task.start({ id: a.id, execId: "" }, K8S_NS);
        for (const ns of ["net", "ipc", "uts"]) {
          const want = await Deno.readLink(`/proc/${pod.pid}/ns/${ns}`);
          assert.equal(await Deno.readLink(`/proc/${a.pid}/ns/${ns}`), want, `${ns} namespace`);
        }
        assert.notEqual(
          await Deno.readLink(`/proc/${a.pid}/ns/pid`),
          await Deno.readLink(`/proc/${pod.pid}/ns/pid`),
        );
      } finally {
        t.close();
      }
      await d.controller.shutdown(pod.id);
    } finally {
      await d.cleanup();
    }
  },
});

/** Why `ip netns` cannot make a named netns here (busybox's ip, in a VM), or undefined. */
function ipNetnsUnavailable(): string | undefined {
  try {
    const r = new Deno.Command("ip", { args: ["netns", "list"], stdout: "null", stderr: "null" })
      .outputSync();
    return r.success ? undefined : "this ip has no netns command (busybox's)";
  } catch {
    return "ip (iproute2) is not installed";
  }
}

Deno.test({
  name: "runC: a pod joins the CNI netns it is given, and its holder reaps orphans",
  ...skipUnless(runcUnavailable() ?? ipNetnsUnavailable(), "runC pod in a named netns"),
  async fn() {
    const name = `kuasar-it-${crypto.randomUUID().slice(0, 8)}`;
    const add = await new Deno.Command("ip", { args: ["netns", "add", name] }).output();
    assert.ok(add.success, "ip netns add");
    const d = await TestDaemon.start();
    try {
      const netns = `/var/run/netns/${name}`;
      const pod = await startPod(d, { netnsPath: netns, sharePid: true });
      const want = (await Deno.stat(netns)).ino;
      const holderNet = await Deno.readLink(`/proc/${pod.pid}/ns/net`);
      assert.equal(holderNet, `net:[${want}]`);
      // A container in the shared pid namespace leaves an orphan behind when
      // its init exits; the pod's init (the holder) must reap it.
      const c = await createContainer(d, pod, {
        args: ["sh", "-c", "(sleep 0.3; exit 0) & exit 0"],
        sharePid: true,
      });
      const t = await taskClient(pod.address);
      const w = t.task.wait({ id: c.id, execId: "" }, K8S_NS);
      await t.task.start({ id: c.id, execId: "" }, K8S_NS);
      assert.equal((await w).exitStatus, 0);
      t.close();
      await new Promise((r) => setTimeout(r, 800));
      const zombies: string[] = [];
      for await (const e of Deno.readDir("/proc")) {
        if (!/^\d+$/.test(e.name)) continue;
        try {
          const st = await Deno.readTextFile(`/proc/${e.name}/stat`);
          const fields = st.slice(st.lastIndexOf(")") + 2).split(" ");
          if (fields[0] === "Z" && Number(fields[1]) === pod.pid) zombies.push(e.name);
        } catch { /* gone */ }
      }
      assert.deepEqual(zombies, [], "no zombie children of the pod's init");
      await d.controller.shutdown(pod.id);
    } catch (e) {
      console.error(await d.logs());
      throw e;
    } finally {
      await d.cleanup();
      await new Deno.Command("ip", { args: ["netns", "delete", name] }).output();
    }
  },
});

/** Runs `script` in a new container of `pod` to its end; its stdout. */
async function runInPod(d: TestDaemon, pod: TestPod, script: string): Promise<string> {
  const fifo = join(d.base, `out-${crypto.randomUUID()}`);
  await mkfifo(fifo);
  const out = readFifo(fifo);
  const c = await createContainer(d, pod, { args: ["sh", "-c", script], stdout: fifo });
  assert.equal(await runToExit(pod, c.id), 0);
  return await out.text;
}

Deno.test({
  name: "runC: a pod's containers share one 64 MiB /dev/shm, held by the pod (not in the node's " +
    "mount table where the kernel allows) and gone with it",
  ...skip,
  fn: () =>
    withDaemon(async (d) => {
      const nodeMounts = async () =>
        (await Deno.readTextFile("/proc/self/mountinfo")).split("\n")
          .filter((l) => l.includes(join(d.dir, pod.id)));
      const pod = await startPod(d);
      const a = await runInPod(
        d,
        pod,
        "echo shared > /dev/shm/x && grep ' /dev/shm ' /proc/self/mountinfo",
      );
      // One tmpfs of the pod's, with containerd's options for a pod's shm.
      assert.match(
        a,
        /^\S+ \S+ \S+ \/ \/dev\/shm rw,nosuid,nodev,noexec\S* .*- tmpfs \S+ rw.*size=65536k/,
      );
      assert.equal(await runInPod(d, pod, "cat /dev/shm/x"), "shared\n");
      const detached = (await d.logs()).includes("pods' /dev/shm: a tmpfs in no mount table");
      const mounted = (await d.logs()).includes("pods' /dev/shm: a tmpfs mounted on the node");
      assert.ok(detached !== mounted, "the daemon says which way it took, once");
      // The kernel here decides which; each way is what it says.
      assert.equal((await nodeMounts()).length, detached ? 0 : 1);
      await d.controller.stop(pod.id, 5);
      await d.controller.shutdown(pod.id);
      assert.deepEqual(await nodeMounts(), []);
      // A second pod gets a /dev/shm of its own.
      const other = await startPod(d);
      assert.equal(await runInPod(d, other, "ls /dev/shm; echo end"), "end\n");
      await d.controller.stop(other.id, 5);
      await d.controller.shutdown(other.id);
    }),
});
