import assert from "node:assert/strict";
import { join } from "node:path";
import { InternalError } from "../../domain/errors.ts";
import type { SandboxRecord } from "../../domain/sandbox.ts";
import type { ContainerRecord, ExecRecord, ProcessExit } from "../../domain/task.ts";
import { RecordingSupervisor } from "../../../tests/fakes/recording_supervisor.ts";
import { OciRuntimeCli } from "../oci/runtime_cli.ts";
import { StateLayout } from "../os/state_layout.ts";
import { StreamHub } from "../task/streaming.ts";
import { RuncContainerRuntime, type RuncProcessState } from "./runc_container_runtime.ts";
import { containerRecord, sandboxRecord } from "../../../tests/fakes/records.ts";

const NO_IO = { stdin: "", stdout: "", stderr: "", terminal: false };

interface Fixture {
  dir: string;
  sup: RecordingSupervisor;
  runtime: RuncContainerRuntime;
  sb: SandboxRecord;
  exits: { containerId: string; execId?: string; exit: ProcessExit }[];
  container(id: string, spec?: Record<string, unknown>): Promise<ContainerRecord<RuncProcessState>>;
  close(): Promise<void>;
}

async function fixture(): Promise<Fixture> {
  const dir = await Deno.makeTempDir({ prefix: "kuasar-runc-unit-" });
  const sup = new RecordingSupervisor();
  const cli = new OciRuntimeCli(
    { binary: "runc", root: join(dir, ".runc"), systemdCgroup: false },
    sup,
  );
  const runtime = new RuncContainerRuntime({
    dir,
    layout: new StateLayout(dir),
    supervisor: sup,
    cli,
    streams: new StreamHub(),
  });
  const exits: Fixture["exits"] = [];
  runtime.setExitListener({
    processExited: (_sb, containerId, execId, exit) => exits.push({ containerId, execId, exit }),
  });
  const sb = sandboxRecord("sb1", { kind: "runc", pid: 4_300_001 });
  return {
    dir,
    sup,
    runtime,
    sb,
    exits,
    async container(id, spec = {}) {
      const bundle = join(dir, "bundles", id);
      await Deno.mkdir(join(bundle, "rootfs"), { recursive: true });
      await Deno.writeTextFile(
        join(bundle, "config.json"),
        JSON.stringify({
          ociVersion: "1.0.2",
          process: { args: ["sh"], cwd: "/" },
          root: { path: "rootfs" },
          linux: { namespaces: [{ type: "pid" }, { type: "network" }, { type: "mount" }] },
          ...spec,
        }),
      );
      return containerRecord<RuncProcessState>(id, { bundle, state: "created", pid: 0 });
    },
    async close() {
      await runtime.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

Deno.test("runc runtime: every capability is declared", async () => {
  const f = await fixture();
  try {
    const caps = f.runtime.capabilities;
    assert.ok(caps.exec && caps.pause && caps.update && caps.stats);
  } finally {
    await f.close();
  }
});

Deno.test("runc runtime: create runs `runc create` under a monitor, joined to the pod's namespaces", async () => {
  const f = await fixture();
  try {
    const c = await f.container("c1");
    const { pid } = await f.runtime.create(f.sb, c);
    assert.equal(f.sup.monitored.length, 1);
    const m = f.sup.monitored[0];
    assert.equal(m.token, "c@c1");
    const state = f.runtime.stateDir("sb1", "c1");
    assert.equal(m.pidFile, join(state, "init.pid"));
    assert.deepEqual(m.argv, [
      "runc",
      "--root",
      join(f.dir, ".runc"),
      "--log",
      join(c.bundle, "log.json"),
      "--log-format",
      "json",
      "create",
      "--bundle",
      c.bundle,
      "--pid-file",
      join(state, "init.pid"),
      "c1",
    ]);
    // The container's pid is the runtime's process, the monitor's is kept for recovery.
    assert.equal(pid, f.sup.started[0].pid);
    assert.equal(c.backend.helperPid, f.sup.started[0].helperPid);
    assert.equal(c.backend.ownPidNs, true, "a container pid namespace of its own (CRI's default)");
    const spec = JSON.parse(await Deno.readTextFile(join(c.bundle, "config.json")));
    const paths = Object.fromEntries(
      spec.linux.namespaces.map((n: { type: string; path?: string }) => [n.type, n.path]),
    );
    assert.equal(paths.network, "/proc/4300001/ns/net");
    assert.equal(paths.pid, undefined);
    assert.equal(paths.mount, undefined, "its own mount namespace stays its own");
    assert.ok(
      spec.mounts.some((x: { destination: string }) => x.destination === "/etc/hosts"),
      "the pod's files are mounted in",
    );
  } finally {
    await f.close();
  }
});

Deno.test("runc runtime: the init's exit is reported, and what shares its pid namespace is killed", async () => {
  const f = await fixture();
  try {
    // shareProcessNamespace: containerd's placeholder path means "the pod's".
    const c = await f.container("c1", {
      linux: { namespaces: [{ type: "pid", path: "/proc/0/ns/pid" }, { type: "mount" }] },
    });
    await f.runtime.create(f.sb, c);
    const spec = JSON.parse(await Deno.readTextFile(join(c.bundle, "config.json")));
    assert.equal(spec.linux.namespaces[0].path, "/proc/4300001/ns/pid");
    assert.equal(c.backend.ownPidNs, false);
    await f.sup.exits.exit("c@c1", 137);
    assert.deepEqual(f.exits.map((e) => [e.containerId, e.execId, e.exit.status]), [
      ["c1", undefined, 137],
    ]);
    // No pid namespace of its own: `runc kill --all` takes the rest down, as the shim does.
    assert.deepEqual(f.sup.runs.map((r) => r.argv.slice(3)), [["kill", "--all", "c1", "9"]]);
  } finally {
    await f.close();
  }
});

Deno.test("runc runtime: a failing `runc create` is an error with runc's own reason", async () => {
  const f = await fixture();
  try {
    const c = await f.container("c1");
    f.sup.failNextMonitored = 1;
    f.sup.onMonitored = async () => {
      await Deno.writeTextFile(
        join(c.bundle, "log.json"),
        '{"level":"error","msg":"exec: \\"sh\\": executable file not found in $PATH"}\n',
      );
    };
    await assert.rejects(f.runtime.create(f.sb, c), (e) => {
      assert.ok(e instanceof InternalError);
      assert.match(
        e.message,
        /^runc failed in sandbox "sb1": exec: "sh": executable file not found/,
      );
      return true;
    });
  } finally {
    await f.close();
  }
});

Deno.test("runc runtime: an exec runs `runc exec --detach` with its process spec, and its exit is its own", async () => {
  const f = await fixture();
  try {
    const c = await f.container("c1");
    await f.runtime.create(f.sb, c);
    const e: ExecRecord<RuncProcessState> = {
      id: "e1",
      io: { ...NO_IO, terminal: true },
      state: "created",
      pid: 0,
      spec: { args: ["ls"], cwd: "/" },
      backend: {},
    };
    const { pid } = await f.runtime.startExec(f.sb, c, e);
    assert.equal(pid, f.sup.started[1].pid);
    assert.equal(e.backend.helperPid, f.sup.started[1].helperPid);
    e.pid = pid; // the Task service records what the runtime produced
    const m = f.sup.monitored[1];
    assert.equal(m.token, "e@c1@e1");
    const state = f.runtime.stateDir("sb1", "c1");
    assert.deepEqual(m.argv.slice(7), [
      "exec",
      "--detach",
      "--process",
      join(state, "exec-e1.json"),
      "--pid-file",
      join(state, "exec-e1.pid"),
      "--console-socket",
      m.argv.at(-2)!,
      "c1",
    ]);
    // A terminal: runc sends the pty master to the monitor's console socket.
    assert.match(m.argv.at(-2)!, /\.console$/);
    assert.ok(m.stdioArgs?.includes(m.argv.at(-2)!));
    const spec = JSON.parse(await Deno.readTextFile(join(state, "exec-e1.json")));
    assert.deepEqual(spec, { args: ["ls"], cwd: "/", terminal: true });
    await f.sup.exits.exit("e@c1@e1", 2);
    assert.deepEqual(f.exits.map((x) => [x.containerId, x.execId, x.exit.status]), [
      ["c1", "e1", 2],
    ]);
    // An exec that already ended is not signalled (its pid may be reused).
    await f.runtime.kill(f.sb, c, e, 15, false);
    assert.equal(f.sup.runs.length, 0);
  } finally {
    await f.close();
  }
});

Deno.test("runc runtime: recovery reads the exit recorded while the daemon was away, or follows the live one", async () => {
  const f = await fixture();
  try {
    const done = await f.container("done");
    done.backend.helperPid = 4_300_100;
    await f.sup.exits.exit("c@done", 3);
    assert.equal((await f.runtime.recover(f.sb, done, undefined))?.status, 3);

    const live = await f.container("live");
    live.backend.helperPid = 4_300_200;
    f.sup.exits.running.add("c@live");
    assert.equal(await f.runtime.recover(f.sb, live, undefined), undefined);
    await f.sup.exits.exit("c@live", 0);
    assert.deepEqual(f.exits.map((x) => [x.containerId, x.exit.status]), [["live", 0]]);

    // No record and no monitor, and runc says it stopped: the exit is unknown.
    const lost = await f.container("lost");
    lost.backend.helperPid = 4_300_300;
    f.sup.answer = (argv) =>
      argv.includes("state")
        ? { code: 0, stdout: '{"status":"stopped","pid":0}', stderr: "" }
        : { code: 0, stdout: "", stderr: "" };
    assert.equal((await f.runtime.recover(f.sb, lost, undefined))?.status, 255);
  } finally {
    await f.close();
  }
});
