/**
 * The daemon as an operator meets it: flags, sockets, a second instance,
 * systemd notification, Kuasar's binary names, `kuasar ctl`, and task events
 * forwarded to containerd's Events service.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { TaskExit } from "../../src/gen/containerd/events/task.ts";
import { withEventsDaemon } from "../support/events.ts";
import { K8S_NS, taskClient, TestDaemon } from "../support/daemon.ts";
import { createContainer, startPod } from "../support/pod.ts";
import { has, runcUnavailable, skipUnless } from "../support/env.ts";

const MAIN = fileURLToPath(new URL("../../src/main.ts", import.meta.url));
const skip = skipUnless(runcUnavailable(), "daemon CLI");

async function kuasar(args: string[], opts: { argv0?: string; env?: Record<string, string> } = {}) {
  const bin = opts.argv0 ?? Deno.execPath();
  const r = await new Deno.Command(bin, { args: ["run", "-A", MAIN, ...args], env: opts.env })
    .output();
  const td = new TextDecoder();
  return { code: r.code, stdout: td.decode(r.stdout), stderr: td.decode(r.stderr) };
}

Deno.test({
  name: "daemon: sockets are 0600, a second instance refuses, a stale socket is replaced",
  ...skip,
  async fn() {
    const d = await TestDaemon.start();
    try {
      assert.equal((await Deno.stat(d.listen)).mode! & 0o777, 0o600);
      const pod = await startPod(d);
      assert.equal(
        (await Deno.stat(pod.address.replace("ttrpc+unix://", ""))).mode! & 0o777,
        0o600,
      );
      const second = await kuasar(["runc", "--listen", d.listen, "--dir", join(d.base, "other")]);
      assert.equal(second.code, 1);
      assert.match(second.stderr, /already listening on/);
      await d.controller.shutdown(pod.id);
      // A stale socket (daemon killed) is replaced by the next start.
      await d.kill9();
      assert.ok((await Deno.lstat(d.listen)).isSocket);
      await d.spawn();
      assert.equal((await Deno.stat(d.listen)).mode! & 0o777, 0o600);
    } finally {
      await d.cleanup();
    }
  },
});

Deno.test({
  name: "daemon: --version, bad flags and a broken config give Kuasar-style output and exit codes",
  async fn() {
    const v = await kuasar(["runc", "--version"]);
    assert.equal(v.code, 0);
    assert.match(v.stdout, /^Version: .+\nBuild Time: .+\n$/);
    assert.equal((await kuasar(["--version"])).code, 0);
    assert.equal((await kuasar(["runc", "--no-such-flag"])).code, 2);
    const dir = await Deno.makeTempDir();
    try {
      const cfg = join(dir, "c.toml");
      await Deno.writeTextFile(cfg, "[sandbox]\nlog_level = 'loud'\n");
      let r = await kuasar([
        "runc",
        "--config",
        cfg,
        "--listen",
        join(dir, "s"),
        "--dir",
        join(dir, "d"),
      ]);
      assert.equal(r.code, 2);
      assert.match(r.stderr, /sandbox\.log_level/);
      await Deno.writeTextFile(cfg, "[runc]\nbinray = 'runc'\n");
      r = await kuasar([
        "runc",
        "--config",
        cfg,
        "--listen",
        join(dir, "s"),
        "--dir",
        join(dir, "d"),
      ]);
      assert.equal(r.code, 2);
      assert.match(r.stderr, /binray/);
      await Deno.writeTextFile(cfg, "not = [toml");
      r = await kuasar(["runc", "--config", cfg]);
      assert.equal(r.code, 2);
      assert.match(r.stderr, /Cannot parse/);
      r = await kuasar(["runc", "--config", join(dir, "missing.toml")]);
      assert.equal(r.code, 2);
      // A kind's own table is checked too, values and the binaries it names.
      const gvisor = [
        "gvisor",
        "--config",
        cfg,
        "--listen",
        join(dir, "s"),
        "--dir",
        join(dir, "d"),
      ];
      await Deno.writeTextFile(cfg, "[gvisor]\nplatform = 'xen'\n");
      r = await kuasar(gvisor);
      assert.equal(r.code, 2);
      assert.match(r.stderr, /gvisor\.platform/);
      await Deno.writeTextFile(cfg, "[gvisor]\nbinary = '/nonexistent/runsc'\n");
      r = await kuasar(gvisor);
      assert.equal(r.code, 2);
      assert.match(r.stderr, /gvisor\.binary: "\/nonexistent\/runsc" is not an executable/);
      // vmm reads Kuasar's [hypervisor] table; unknown keys and a missing guest image are errors.
      const vmm = ["vmm", "--config", cfg, "--listen", join(dir, "s"), "--dir", join(dir, "d")];
      await Deno.writeTextFile(cfg, "[hypervisor]\nvcpus = 1\nbogus_key = 1\n");
      r = await kuasar(vmm);
      assert.equal(r.code, 2);
      assert.match(r.stderr, /bogus_key/);
      await Deno.writeTextFile(cfg, "[hypervisor]\ninitrd_path = '/nonexistent/initrd'\n");
      r = await kuasar(vmm);
      assert.equal(r.code, 2);
      assert.match(r.stderr, /hypervisor\.(kernel|initrd)_path: .* does not exist/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "daemon: answers to runc-sandboxer through a symlink and sends READY=1 to NOTIFY_SOCKET",
  ...skipUnless(
    runcUnavailable() ?? (has("socat") ? undefined : "socat is not installed"),
    "sd_notify",
  ),
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "k-" });
    const link = join(dir, "runc-sandboxer");
    await Deno.symlink(Deno.execPath(), link);
    const notify = join(dir, "notify.sock");
    const receiver = new Deno.Command("socat", {
      args: ["-u", `UNIX-RECV:${notify}`, "STDOUT"],
      stdout: "piped",
    })
      .spawn();
    for (let i = 0; i < 50; i++) {
      try {
        await Deno.stat(notify);
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    const listen = join(dir, "s.sock");
    const daemon = new Deno.Command(link, {
      args: [
        "run",
        "-A",
        MAIN,
        "--listen",
        listen,
        "--dir",
        join(dir, "d"),
        "--helper-dir",
        join(dir, "bin"),
        "--containerd-address",
        "",
      ],
      env: { NOTIFY_SOCKET: notify },
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      const reader = receiver.stdout.getReader();
      const { value } = await reader.read();
      const msg = new TextDecoder().decode(value);
      assert.match(msg, /READY=1/);
      assert.match(msg, new RegExp(`MAINPID=${daemon.pid}`));
      reader.releaseLock();
      assert.ok((await Deno.lstat(listen)).isSocket, "listening under the runc-sandboxer name");
    } finally {
      daemon.kill("SIGTERM");
      assert.equal((await daemon.status).code, 0, "SIGTERM is a clean stop");
      receiver.kill();
      await receiver.status;
      await receiver.stdout.cancel().catch(() => {});
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("daemon: every one of Kuasar's binary names, through a symlink, is its command", async () => {
  const dir = await Deno.makeTempDir({ prefix: "k-" });
  try {
    const names: [string, string][] = [
      ["runc-sandboxer", "runc"],
      ["vmm-sandboxer", "vmm"],
      ["wasm-sandboxer", "wasm"],
      ["quark-sandboxer", "quark"],
      ["gvisor-sandboxer", "gvisor"],
      ["kuasar-ctl", "ctl"],
    ];
    for (const [name, command] of names) {
      const link = join(dir, name);
      await Deno.symlink(Deno.execPath(), link);
      const out = await new Deno.Command(link, { args: ["run", "-A", MAIN, "--help"] }).output();
      assert.ok(out.success, name);
      const usage = new TextDecoder().decode(out.stdout);
      assert.match(usage, new RegExp(`^Usage: kuasar ${command} `), `${name}: ${usage}`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "kuasar ctl lists, inspects, stops, waits for and shuts down sandboxes",
  ...skip,
  async fn() {
    const d = await TestDaemon.start();
    try {
      const pod = await startPod(d);
      const ctl = (...a: string[]) => kuasar(["ctl", "-l", d.listen, "-d", d.dir, ...a]);
      let r = await ctl("list");
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`${pod.id}\\tSANDBOX_READY\\t${pod.pid}`));
      r = await ctl("status", pod.id, "--verbose");
      assert.equal(JSON.parse(r.stdout).state, "SANDBOX_READY");
      r = await ctl("stop", pod.id, "-t", "2");
      assert.equal(r.code, 0, r.stderr);
      r = await ctl("wait", pod.id);
      assert.match(r.stdout, /^0\t\d{4}-/);
      r = await ctl("shutdown", pod.id);
      assert.equal(r.code, 0);
      r = await ctl("status", pod.id);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /not found/);
      r = await ctl("status", "../x");
      assert.equal(r.code, 2);
    } finally {
      await d.cleanup();
    }
  },
});

Deno.test({
  name: "task events are forwarded to containerd's Events service in order",
  ...skip,
  fn: () =>
    withEventsDaemon(async (d, sink) => {
      const events = sink.events;
      const pod = await startPod(d);
      const c = await createContainer(d, pod, { args: ["sh", "-c", "exit 9"] });
      const t = await taskClient(pod.address);
      const w = t.task.wait({ id: c.id, execId: "" }, K8S_NS);
      await t.task.start({ id: c.id, execId: "" }, K8S_NS);
      await w;
      await t.task.delete({ id: c.id, execId: "" }, K8S_NS);
      t.close();
      await sink.until((e) => e.length >= 4);
      assert.deepEqual(events.map((e) => e.topic), [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
      ]);
      assert.ok(events.every((e) => e.namespace === "k8s.io"));
      assert.equal(events[2].typeUrl, "containerd.events.TaskExit");
      const exit = TaskExit.decode(events[2].value);
      assert.equal(exit.containerId, c.id);
      assert.equal(exit.exitStatus, 9);
      await d.controller.shutdown(pod.id);
    }),
});

Deno.test({
  name: "daemon: a --dir other users could write into (or a symlink) is refused with exit 2",
  async fn() {
    const base = await Deno.makeTempDir();
    try {
      const open = join(base, "open");
      await Deno.mkdir(open);
      await Deno.chmod(open, 0o777);
      const link = join(base, "link");
      await Deno.symlink(base, link);
      const listen = join(base, "s.sock");
      for (const [dir, why] of [[open, /mode 0777/], [link, /symbolic link/]] as const) {
        const child = new Deno.Command(Deno.execPath(), {
          args: ["run", "-A", MAIN, "runc", "--listen", listen, "--dir", dir],
          stdout: "null",
          stderr: "piped",
        }).spawn();
        const stderr = new Response(child.stderr).text();
        // Either it exits, or it serves (the bug): then it is stopped and the test fails.
        let served = false;
        let exited = false;
        child.status.then(() => (exited = true));
        while (!exited && !served) {
          served = await Deno.connect({ transport: "unix", path: listen }).then(
            (c) => (c.close(), true),
            () => false,
          );
          await new Promise((r) => setTimeout(r, 50));
        }
        if (served) child.kill("SIGTERM");
        const st = await child.status;
        const text = await stderr;
        assert.ok(!served, `the daemon served on --dir ${dir}`);
        assert.equal(st.code, 2, text);
        assert.match(text, /Refusing --dir/);
        assert.match(text, why);
      }
      assert.equal(
        (await Deno.stat(open)).mode! & 0o777,
        0o777,
        "left for the operator to look at",
      );
    } finally {
      await Deno.remove(base, { recursive: true });
    }
  },
});
