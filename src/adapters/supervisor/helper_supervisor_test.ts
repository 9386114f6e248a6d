/**
 * The helper's command lines, as HelperSupervisor writes them, against a
 * stand-in helper that records its argv and answers as the real one does
 * ("ready <pid>" or "failed <status>"). No root, no real helper.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { ProcessStartError } from "../../ports/supervisor.ts";
import { ExitWatcher } from "./exit_watcher.ts";
import { HelperSupervisor } from "./helper_supervisor.ts";

async function withHelper(
  answer: string,
  fn: (sup: HelperSupervisor, calls: () => Promise<string[][]>, dir: string) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "kuasar-helper-argv-" });
  try {
    const log = join(dir, "calls");
    const helper = join(dir, "helper");
    // One line per call, arguments separated by \x1f.
    await Deno.writeTextFile(
      helper,
      `#!/bin/sh\nprintf '%s\\037' "$@" >> '${log}'\nprintf '\\n' >> '${log}'\necho "${answer}"\n`,
    );
    await Deno.chmod(helper, 0o755);
    const calls = async () => {
      const t = await Deno.readTextFile(log).catch(() => "");
      await Deno.writeTextFile(log, "");
      return t.split("\n").filter((l) => l).map((l) => l.split("\x1f").slice(0, -1));
    };
    await fn(new HelperSupervisor(helper, new ExitWatcher(join(dir, "exits"))), calls, dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("helper supervisor: hold's flags, in the helper's order", async () => {
  await withHelper("ready 4242", async (sup, calls, dir) => {
    const exit = join(dir, "exits", "s@p");
    const p = await sup.hold("s@p", {
      netnsPath: "/var/run/netns/cni-1",
      hostname: "web-0",
      sysctls: [["net.ipv4.ip_unprivileged_port_start", "0"], ["kernel.shm_rmid_forced", "1"]],
    });
    assert.equal(p.pid, 4242);
    await sup.hold("s@p", { hostNetwork: true, hostUts: true, hostIpc: true, hostname: "x" });
    await sup.hold("s@p", { hostIpc: true });
    assert.deepEqual(await calls(), [
      [
        "hold",
        "--exit-file",
        exit,
        "--netns",
        "/var/run/netns/cni-1",
        "--hostname",
        "web-0",
        "--sysctl",
        "net.ipv4.ip_unprivileged_port_start=0",
        "--sysctl",
        "kernel.shm_rmid_forced=1",
      ],
      // A host-UTS pod keeps the node's hostname: its own is not set.
      ["hold", "--exit-file", exit, "--host-netns", "--host-uts", "--host-ipc"],
      ["hold", "--exit-file", exit, "--new-netns", "--host-ipc"],
    ]);
  });
});

Deno.test("helper supervisor: monitor's flags, then the runtime's argv", async () => {
  await withHelper("ready 4242", async (sup, calls, dir) => {
    const h = await sup.startMonitored({
      token: "c@x",
      pidFile: "/p/init.pid",
      monitorLog: "/p/monitor.log",
      argv: (console) => ["runsc", "start", String(console), "x"],
      waitArgv: ["runsc", "wait", "x"],
      cgroupProcs: ["/sys/fs/cgroup/a/cgroup.procs", "/sys/fs/cgroup/b/cgroup.procs"],
      rootfsMounts: [
        { target: "/b/rootfs", source: "overlay", type: "overlay", options: ["lowerdir=/l", "ro"] },
        { target: "/b/rootfs", source: "/v", type: "", options: ["rbind", "nosuid"] },
      ],
      logFile: "/p/log.json",
    }, {
      monitorArgs: () =>
        Promise.resolve({ args: ["--stdout", "/f/out"], consoleSocket: "/c.sock" }),
    });
    assert.equal(h.pid, 4242);
    assert.ok(h.helperPid > 0 && h.helperPid !== 4242, "the helper's own pid, not the process's");
    const [call] = await calls();
    // Without Task API stdio the StdioSource is not asked.
    assert.deepEqual(call, [
      "monitor",
      "--exit-file",
      join(dir, "exits", "c@x"),
      "--pid-file",
      "/p/init.pid",
      "--log",
      "/p/monitor.log",
      "--wait",
      "3",
      "runsc",
      "wait",
      "x",
      "--cgroup",
      "/sys/fs/cgroup/a/cgroup.procs",
      "--cgroup",
      "/sys/fs/cgroup/b/cgroup.procs",
      // Flags as mount(2) takes them (MS_RDONLY; MS_BIND | MS_REC | MS_NOSUID), data apart.
      "--rootfs-mount",
      "/b/rootfs",
      "overlay",
      "overlay",
      "1",
      "lowerdir=/l",
      "--rootfs-mount",
      "/b/rootfs",
      "/v",
      "",
      String(0x1000 | 0x4000 | 0x2),
      "",
      "--runtime-log",
      "/p/log.json",
      "--",
      "runsc",
      "start",
      "undefined",
      "x",
    ]);
    await sup.startMonitored({
      token: "e@x@1",
      io: { stdin: "", stdout: "/f/out", stderr: "", terminal: true },
      monitorLog: "/m.log",
      argv: (console) => ["runc", "exec", "--console-socket", String(console), "x"],
    }, {
      monitorArgs: () =>
        Promise.resolve({ args: ["--console", "/c.sock"], consoleSocket: "/c.sock" }),
    });
    assert.deepEqual((await calls())[0].slice(3), [
      "--console",
      "/c.sock",
      "--log",
      "/m.log",
      "--",
      "runc",
      "exec",
      "--console-socket",
      "/c.sock",
      "x",
    ]);
  });
});

Deno.test("helper supervisor: a helper that left its parent is known by the pid it names", async () => {
  await withHelper("pid 777\nready 4242", async (sup) => {
    const p = await sup.hold("s@p", {});
    assert.deepEqual(p, { helperPid: 777, pid: 4242 });
  });
});

Deno.test("helper supervisor: a helper that names pid 1 is not believed (kill(-1) would hit all)", async () => {
  await withHelper("pid 1\nready 4242", async (sup) => {
    const p = await sup.hold("s@p", {});
    assert.equal(p.pid, 4242);
    assert.ok(p.helperPid > 1);
  });
});

Deno.test("helper supervisor: a runtime that fails is a ProcessStartError with its status", async () => {
  await withHelper("failed 3", async (sup) => {
    // The helper is unref'd (it outlives the daemon): something else must keep the test running.
    const keepAlive = setInterval(() => {}, 1000);
    await assert.rejects(
      sup.startMonitored({ token: "c@y", monitorLog: "/m.log", argv: () => ["runc", "create"] }),
      (e) => e instanceof ProcessStartError && e.status === 3,
    ).finally(() => clearInterval(keepAlive));
  });
});

Deno.test("helper supervisor: detached commands run through `helper exec --`, others as they are", async () => {
  await withHelper("ready 4242", async (sup, calls) => {
    const r = await sup.run(["/bin/echo", "hi"], { detached: true });
    assert.equal(r.code, 0);
    assert.deepEqual(await calls(), [["exec", "--", "/bin/echo", "hi"]]);
    assert.equal((await sup.run(["/bin/echo", "plain"])).stdout, "plain\n");
    assert.deepEqual(await calls(), []);
    await sup.detach(["/usr/bin/host", "--control", "/c"], "/host.log");
    assert.deepEqual(await calls(), [[
      "detach",
      "--log",
      "/host.log",
      "--",
      "/usr/bin/host",
      "--control",
      "/c",
    ]]);
  });
});

Deno.test("helper supervisor: killOrphans kills what carries the token's exit file, nothing else", async () => {
  await withHelper("ready 4242", async (sup, _calls, dir) => {
    const spawn = (arg0: string) =>
      new Deno.Command("sh", { args: ["-c", "sleep 30", arg0], stdout: "null" }).spawn();
    const orphan = spawn(join(dir, "exits", "s@p"));
    const other = spawn(join(dir, "exits", "s@p2"));
    try {
      for (let i = 0; i < 100; i++) {
        const cmd = await Deno.readTextFile(`/proc/${orphan.pid}/cmdline`).catch(() => "");
        if (cmd.includes("exits/s@p")) break;
        await new Promise((r) => setTimeout(r, 10));
      }
      assert.equal(await sup.killOrphans("s@p"), 1);
      // Dead (a zombie until reaped) by the time killOrphans returns: cleanup may follow at once.
      const stat = await Deno.readTextFile(`/proc/${orphan.pid}/stat`).catch(() => ") Z");
      assert.match(stat.slice(stat.lastIndexOf(")")), /^\) [ZX]/);
      assert.equal((await orphan.status).signal, "SIGKILL");
    } finally {
      for (const c of [orphan, other]) {
        try {
          c.kill("SIGKILL");
        } catch { /* gone */ }
        await c.status;
      }
    }
  });
});
