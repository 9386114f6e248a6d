/**
 * Unit tests of gVisor's containers (runsc subcontainers) against the
 * recording Supervisor: what is declared, how Create rewrites the spec and
 * runs runsc, how execs are signalled inside the sandbox, how `runsc ps` is
 * read, and how runsc's failures become error classes. Nothing runs on the
 * host: containers have no rootfs mounts and no streamed stdio.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { FailedPreconditionError, InternalError, NotFoundError } from "../../domain/errors.ts";
import type { OciSpec } from "../../domain/oci.ts";
import type { SandboxRecord } from "../../domain/sandbox.ts";
import type { ContainerRecord, ExecRecord, Io } from "../../domain/task.ts";
import { now } from "../../domain/time.ts";
import type { CommandResult } from "../../ports/supervisor.ts";
import { RecordingSupervisor } from "../../../tests/fakes/recording_supervisor.ts";
import { OciRuntimeCli } from "../oci/runtime_cli.ts";
import { StateLayout } from "../os/state_layout.ts";
import { StreamHub } from "../task/streaming.ts";
import { CONTAINER_TYPE, SANDBOX_ID } from "./gvisor_sandbox_backend.ts";
import { GvisorContainerRuntime, type GvisorProcessState } from "./gvisor_container_runtime.ts";
import { sandboxRecord } from "../../../tests/fakes/records.ts";

const RUNSC = "/opt/gvisor/runsc";
const OK: CommandResult = { code: 0, stdout: "", stderr: "" };
const fail = (stderr: string): CommandResult => ({ code: 1, stdout: "", stderr });

type C = ContainerRecord<GvisorProcessState>;
type E = ExecRecord<GvisorProcessState>;

interface Setup {
  readonly dir: string;
  readonly root: string;
  readonly sup: RecordingSupervisor;
  readonly runtime: GvisorContainerRuntime;
  readonly sb: SandboxRecord;
}

async function withRuntime(fn: (s: Setup) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "kuasar-gvisor-ctr-unit-" });
  try {
    const sup = new RecordingSupervisor();
    const layout = new StateLayout(dir);
    const root = layout.path("runscRoot");
    const cli = new OciRuntimeCli(
      { binary: RUNSC, root, systemdCgroup: false, detached: true },
      sup,
    );
    const runtime = new GvisorContainerRuntime({
      dir,
      layout,
      supervisor: sup,
      cli,
      streams: new StreamHub(),
    });
    const sb = sandboxRecord("pod1", {
      kind: "gvisor",
      pid: 0,
      netnsPath: "/var/run/netns/cni-1",
      taskApiVersion: 2,
    });
    await fn({ dir, root, sup, runtime, sb });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const noIo = (terminal = false): Io => ({ stdin: "", stdout: "", stderr: "", terminal });

/** A container whose bundle holds `spec`. */
async function container(dir: string, id: string, spec: OciSpec, io = noIo()): Promise<C> {
  const bundle = join(dir, "bundles", id);
  await Deno.mkdir(bundle, { recursive: true });
  await Deno.writeTextFile(join(bundle, "config.json"), JSON.stringify(spec));
  return {
    id,
    sandboxId: "pod1",
    namespace: "k8s.io",
    bundle,
    rootfs: [],
    createdAt: now(),
    io,
    state: "created",
    pid: 0,
    backend: {},
    execs: {},
  };
}

function exec(id: string, over: Partial<E> = {}): E {
  return {
    id,
    io: noIo(),
    state: "created",
    pid: 0,
    backend: {},
    spec: { args: ["sh"], cwd: "/" },
    ...over,
  };
}

/** A container spec as containerd writes it for a pod's container. */
function containerdSpec(): OciSpec {
  return {
    ociVersion: "1.1.0",
    process: { args: ["/app"], cwd: "/" },
    root: { path: "rootfs" },
    mounts: [{ destination: "/proc", type: "proc", source: "proc" }],
    annotations: { "io.kubernetes.cri.container-name": "app" },
    linux: {
      namespaces: [
        { type: "pid" },
        { type: "network", path: "/proc/4242/ns/net" },
        { type: "ipc", path: "/proc/4242/ns/ipc" },
        { type: "mount" },
      ],
    },
  };
}

Deno.test("gVisor runtime: exec, pause and stats declared; update lacking, with its reason", async () => {
  await withRuntime(({ runtime }) => {
    assert.equal(runtime.capabilities.exec, runtime);
    assert.equal(runtime.capabilities.pause, runtime);
    assert.equal(runtime.capabilities.stats, runtime);
    assert.equal(runtime.capabilities.update, undefined);
    assert.match(runtime.lacking.update, /gVisor cannot change a running container's resources/);
    return Promise.resolve();
  });
});

Deno.test("gVisor runtime: Create makes a subcontainer with runsc create, its pid from the pid file", async () => {
  await withRuntime(async ({ dir, root, sup, runtime, sb }) => {
    const c = await container(dir, "ctr1", containerdSpec());
    const state = join(dir, "pod1", "c", "ctr1");
    let specAtCreate: OciSpec | undefined;
    sup.answer = async (argv) => {
      specAtCreate = JSON.parse(await Deno.readTextFile(join(c.bundle, "config.json")));
      // runsc writes the pid of the container's process (a sandbox pid seen from the host).
      await Deno.writeTextFile(join(state, "init.pid"), "31337\n");
      return argv.includes("create") ? OK : fail("unexpected");
    };
    const r = await runtime.create(sb, c);
    assert.deepEqual(r, { pid: 31337 });
    assert.equal(sup.monitored.length, 0, "no monitor before Start: the stdio comes with start");
    assert.equal(sup.runs.length, 1);
    assert.deepEqual(sup.runs[0].argv, [
      RUNSC,
      "--root",
      root,
      "--log",
      join(state, "create.log.json"),
      "--log-format",
      "json",
      "create",
      "--bundle",
      c.bundle,
      "--pid-file",
      join(state, "init.pid"),
      "ctr1",
    ]);
    assert.deepEqual(sup.runs[0].opts, { timeoutMs: 60_000, discardOutput: true, detached: true });

    // The spec runsc read: a subcontainer of pod1, no host namespace paths, the pod's files.
    const spec = specAtCreate!;
    assert.deepEqual(spec.annotations, {
      "io.kubernetes.cri.container-name": "app",
      [CONTAINER_TYPE]: "container",
      [SANDBOX_ID]: "pod1",
    });
    assert.deepEqual(spec.linux?.namespaces, [
      { type: "pid" },
      { type: "network" },
      { type: "ipc" },
      { type: "mount" },
    ]);
    const files = join(dir, "pod1", "files");
    assert.deepEqual(
      spec.mounts?.filter((m) => m.destination.startsWith("/etc/")).map((m) => [
        m.destination,
        m.source,
      ]),
      [
        ["/etc/hostname", join(files, "hostname")],
        ["/etc/hosts", join(files, "hosts")],
        ["/etc/resolv.conf", join(files, "resolv.conf")],
      ],
    );
    assert.equal(c.backend.helperPid, undefined);
  });
});

Deno.test("gVisor runtime: a create that leaves no pid is INTERNAL and the container is deleted", async () => {
  await withRuntime(async ({ dir, sup, runtime, sb }) => {
    const c = await container(dir, "ctr1", containerdSpec());
    await assert.rejects(runtime.create(sb, c), /wrote no pid/);
    assert.deepEqual(sup.runs.map((r) => r.argv.slice(-3)), [
      ["--pid-file", join(dir, "pod1", "c", "ctr1", "init.pid"), "ctr1"],
      ["delete", "--force", "ctr1"],
    ]);
  });
});

Deno.test("gVisor runtime: a failing create is runsc's logged reason, classified", async () => {
  await withRuntime(async ({ dir, sup, runtime, sb }) => {
    const c = await container(dir, "ctr1", containerdSpec());
    const log = join(dir, "pod1", "c", "ctr1", "create.log.json");
    sup.answer = async () => {
      await Deno.writeTextFile(
        log,
        JSON.stringify({ level: "error", msg: 'sandbox "pod1" not found' }) + "\n",
      );
      return { code: 1, stdout: "", stderr: "" };
    };
    await assert.rejects(runtime.create(sb, c), (e: Error) =>
      e instanceof NotFoundError &&
      e.message === 'Cannot create container "ctr1": sandbox "pod1" not found');
  });
});

Deno.test("gVisor runtime: a terminal container's monitor runs runsc create with the console socket", async () => {
  await withRuntime(async ({ dir, root, sup, runtime, sb }) => {
    const c = await container(dir, "tty1", containerdSpec(), noIo(true));
    const state = join(dir, "pod1", "c", "tty1");
    const r = await runtime.create(sb, c);
    assert.equal(sup.runs.length, 0, "create runs under the monitor");
    const m = sup.monitored[0];
    assert.equal(m.token, "c@tty1");
    assert.equal(m.pidFile, join(state, "init.pid"));
    const console = m.stdioArgs![m.stdioArgs!.indexOf("--console-socket") + 1];
    assert.ok(console.startsWith(join(dir, ".s")), console);
    assert.deepEqual(m.argv.slice(7), [
      "create",
      "--bundle",
      c.bundle,
      "--pid-file",
      join(state, "init.pid"),
      "--console-socket",
      console,
      "tty1",
    ]);
    assert.deepEqual(m.waitArgv, [
      sup.binary,
      "sandbox-wait",
      root,
      sb.id,
      "tty1",
      "--",
      RUNSC,
      "--root",
      root,
      "wait",
      "tty1",
    ], "the sandbox is asked; runsc wait is the fallback");
    assert.equal(r.pid, sup.started[0].pid);
    assert.equal(c.backend.helperPid, sup.started[0].helperPid);
    // Start then only starts it: the monitor owns the pty already.
    await runtime.start(sb, c);
    assert.deepEqual(sup.runs.map((x) => x.argv.slice(3)), [["start", "tty1"]]);
    assert.equal(sup.monitored.length, 1);
  });
});

Deno.test("gVisor runtime: Start runs runsc start under a monitor that waits for the exit", async () => {
  await withRuntime(async ({ dir, root, sup, runtime, sb }) => {
    const c = await container(dir, "ctr1", containerdSpec());
    const state = join(dir, "pod1", "c", "ctr1");
    await runtime.start(sb, c);
    const m = sup.monitored[0];
    assert.equal(m.token, "c@ctr1");
    assert.deepEqual(m.argv, [
      RUNSC,
      "--root",
      root,
      "--log",
      join(state, "start.log.json"),
      "--log-format",
      "json",
      "start",
      "ctr1",
    ]);
    assert.deepEqual(m.waitArgv, [
      sup.binary,
      "sandbox-wait",
      root,
      sb.id,
      "ctr1",
      "--",
      RUNSC,
      "--root",
      root,
      "wait",
      "ctr1",
    ], "the sandbox is asked; runsc wait is the fallback");
    assert.ok(c.backend.helperPid);
    assert.equal(sup.exits.watches.get("c@ctr1")?.helperPid, c.backend.helperPid);

    // A start runsc refuses: its logged reason.
    const d = await container(dir, "ctr2", containerdSpec());
    await Deno.mkdir(runtime.stateDir("pod1", "ctr2"), { recursive: true }); // Create made it
    sup.failNextMonitored = 1;
    sup.onMonitored = async () => {
      await Deno.writeTextFile(
        join(dir, "pod1", "c", "ctr2", "start.log.json"),
        JSON.stringify({ level: "error", msg: "starting container: EACCES" }) + "\n",
      );
    };
    await assert.rejects(
      runtime.start(sb, d),
      (e: Error) =>
        e instanceof InternalError &&
        e.message === 'runsc failed in sandbox "pod1": starting container: EACCES',
    );
    assert.equal(d.backend.helperPid, undefined);
  });
});

Deno.test("gVisor runtime: an exec records its pid inside the sandbox and is signalled with runsc kill --pid", async () => {
  await withRuntime(async ({ dir, sup, runtime, sb }) => {
    const c = await container(dir, "ctr1", containerdSpec());
    await Deno.mkdir(runtime.stateDir("pod1", "ctr1"), { recursive: true });
    const e = exec("e1");
    c.execs.e1 = e;
    const innerFile = join(runtime.stateDir("pod1", "ctr1"), "exec-e1.inner-pid");
    sup.onMonitored = async (m) => {
      // runsc exec writes the pid the process has in the sandbox.
      assert.deepEqual(m.argv.slice(-3), ["--internal-pid-file", innerFile, "ctr1"]);
      await Deno.writeTextFile(innerFile, "7\n");
    };
    e.pid = (await runtime.startExec(sb, c, e)).pid;
    assert.equal(e.backend.innerPid, 7);
    assert.equal(sup.monitored[0].token, "e@ctr1@e1");
    assert.equal(sup.monitored[0].waitArgv, undefined, "the monitor waits for runsc exec itself");

    await runtime.kill(sb, c, e, 15, false);
    assert.deepEqual(sup.runs.map((r) => r.argv.slice(3)), [["kill", "--pid", "7", "ctr1", "15"]]);
    assert.equal(sup.runs[0].opts.detached, true);

    // It ended between the check and the signal: fine. Any other failure is not.
    sup.answer = () => fail("no such process");
    await runtime.kill(sb, c, e, 9, false);
    sup.answer = () => fail("permission denied");
    await assert.rejects(runtime.kill(sb, c, e, 9, false), InternalError);

    // Exited (its monitor gone): nothing to signal.
    const before = sup.runs.length;
    sup.exits.running.delete("e@ctr1@e1");
    await runtime.kill(sb, c, e, 9, false);
    assert.equal(sup.runs.length, before);
  });
});

Deno.test("gVisor runtime: an exec without a pid in the sandbox cannot be signalled", async () => {
  await withRuntime(async ({ dir, sup, runtime, sb }) => {
    const c = await container(dir, "ctr1", containerdSpec());
    const e = exec("e1", { pid: 4_300_001, backend: { helperPid: 4_300_000 } });
    sup.exits.running.add("e@ctr1@e1");
    await assert.rejects(runtime.kill(sb, c, e, 15, false), FailedPreconditionError);
    const unstarted = exec("e2");
    await assert.rejects(runtime.kill(sb, c, unstarted, 15, false), /it was not started/);
    assert.equal(sup.runs.length, 0);
    // The container's own init: runsc kill of the container.
    await runtime.kill(sb, c, undefined, 9, true);
    assert.deepEqual(sup.runs[0].argv.slice(3), ["kill", "--all", "ctr1", "9"]);
  });
});

Deno.test("gVisor runtime: pids are runsc ps's sandbox pids, execs named by their inner pid", async () => {
  await withRuntime(async ({ dir, sup, runtime, sb }) => {
    const c = await container(dir, "ctr1", containerdSpec());
    c.execs.e1 = exec("e1", { backend: { innerPid: 7 } });
    c.execs.e2 = exec("e2"); // not started: no inner pid
    sup.answer = () => ({
      code: 0,
      stdout: JSON.stringify([
        { ID: "ctr1", PID: 1, PPID: 0, Cmd: "app" },
        { ID: "ctr1", PID: 7, PPID: 0, Cmd: "sh" },
        { pid: 9 },
        12,
        { PID: 0 },
        { PID: "x" },
        null,
      ]),
      stderr: "",
    });
    assert.deepEqual(await runtime.pids(sb, c), [
      { pid: 1, execId: undefined },
      { pid: 7, execId: "e1" },
      { pid: 9, execId: undefined },
      { pid: 12, execId: undefined },
    ]);
    assert.deepEqual(sup.runs[0].argv.slice(3), ["ps", "--format", "json", "ctr1"]);
    sup.answer = () => ({ code: 0, stdout: "", stderr: "" });
    assert.deepEqual(await runtime.pids(sb, c), []);
    sup.answer = () => ({ code: 0, stdout: "{}", stderr: "" });
    assert.deepEqual(await runtime.pids(sb, c), []);
  });
});

Deno.test("gVisor runtime: runsc's failures become error classes", async () => {
  await withRuntime(async ({ dir, sup, runtime, sb }) => {
    const c = await container(dir, "ctr1", containerdSpec());
    sup.answer = () => fail('time="2026" level=error msg="container \\"ctr1\\" does not exist"');
    await assert.rejects(runtime.pause(sb, c), NotFoundError);
    await assert.rejects(runtime.pids(sb, c), NotFoundError);
    sup.answer = () => fail("container not paused");
    await assert.rejects(runtime.resume(sb, c), FailedPreconditionError);
    sup.answer = () => fail("container is not running");
    // Signalling an init that already ended is NOT_FOUND (containerd then treats it as stopped).
    await assert.rejects(runtime.kill(sb, c, undefined, 15, false), NotFoundError);
    sup.answer = () => fail("exec format error");
    await assert.rejects(
      runtime.pause(sb, c),
      (e: Error) => e instanceof InternalError && /Cannot pause container "ctr1"/.test(e.message),
    );
    // Stats are the sandbox's: a sandbox with no process has none.
    await assert.rejects(runtime.stats(sb, c), FailedPreconditionError);
  });
});

Deno.test("gVisor runtime: recovery keeps a created container that has no monitor yet", async () => {
  await withRuntime(async ({ dir, sup, runtime, sb }) => {
    const c = await container(dir, "ctr1", containerdSpec());
    sup.answer = () => ({ code: 0, stdout: '{"status":"created","pid":31337}', stderr: "" });
    assert.equal(await runtime.recover(sb, c, undefined), undefined, "still startable");
    sup.answer = () => ({ code: 0, stdout: '{"status":"stopped","pid":0}', stderr: "" });
    assert.equal((await runtime.recover(sb, c, undefined))?.status, 255);
    assert.deepEqual(sup.runs.map((r) => r.argv.slice(3)), [["state", "ctr1"], ["state", "ctr1"]]);
  });
});
