import assert from "node:assert/strict";
import {
  AlreadyExistsError,
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  InvalidTransitionError,
  NotFoundError,
  UnimplementedError,
} from "../domain/errors.ts";
import { now } from "../domain/time.ts";
import type { TaskEvent } from "../ports/event_publisher.ts";
import type { MemorySandboxStore } from "../../tests/fakes/memory_sandbox_store.ts";
import {
  type Harness,
  io,
  makeHarness,
  runningContainer,
  runningSandbox,
  sandboxInput,
  taskInput,
} from "../../tests/fakes/harness.ts";

/** Lets every queued microtask and one macrotask turn run. */
function settle(): Promise<void> {
  return new Promise((r) => setTimeout(r, 0));
}

/** Whether `p` settled after the queued work ran. */
async function isSettled(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  p.then(() => (done = true), () => (done = true));
  await settle();
  return done;
}

/** A harness with running sandbox "sb1". */
async function withSandbox(): Promise<Harness> {
  const h = makeHarness();
  await runningSandbox(h, "sb1");
  return h;
}

/** A harness with running sandbox "sb1" and running container "c1". */
async function withContainer(): Promise<Harness> {
  const h = await withSandbox();
  await runningContainer(h, "sb1", "c1");
  return h;
}

/** A harness with container "c1" running exec process "e1". */
async function withExec(): Promise<Harness> {
  const h = await withContainer();
  await h.tasks.exec("sb1", "c1", "e1", io(), { args: ["sleep", "1000"] });
  await h.tasks.start("sb1", "c1", "e1");
  return h;
}

const SPEC = { args: ["sh", "-c", "true"], cwd: "/" };

// ------------------------------------------------------------------ Create

Deno.test("Task.Create makes a created container, returns its pid and publishes /tasks/create", async () => {
  const h = await withSandbox();
  h.runtime.nextPid = 555;
  const input = taskInput("c1");
  const pid = await h.tasks.create("sb1", "ns1", input);
  assert.equal(pid, 555);
  assert.deepEqual(h.runtime.calls.map((c) => c.op), ["create"]);
  assert.deepEqual(h.events.published, [{
    namespace: "ns1",
    event: {
      topic: "/tasks/create",
      containerId: "c1",
      bundle: input.bundle,
      rootfs: input.rootfs,
      io: input.io,
      pid: 555,
    },
  }]);
  const st = h.tasks.state("sb1", "c1", "");
  assert.deepEqual(st, {
    id: "c1",
    execId: "",
    bundle: input.bundle,
    pid: 555,
    state: "created",
    io: input.io,
    exitStatus: 0,
    exitedAt: undefined,
  });
  const saved = h.store.load("sb1")!.containers.c1;
  assert.equal(saved.state, "created");
  assert.equal(saved.pending, undefined, "the record is no longer marked pending");
  assert.equal(saved.namespace, "ns1");
  assert.equal((saved.backend as { token?: string }).token, "tok-c1");
  assert.equal(h.registry.sandboxOfContainer("c1"), "sb1");
  assert.deepEqual(h.tasks.connect("sb1", "c1"), { taskPid: 555 });
});

Deno.test("Task.Create validates the id and the bundle path before anything else", async () => {
  const h = await withSandbox();
  for (const id of ["", "../c", "a/b", "c 1"]) {
    await assert.rejects(
      async () => await h.tasks.create("sb1", "k8s.io", taskInput(id)),
      InvalidArgumentError,
    );
  }
  await assert.rejects(
    async () => await h.tasks.create("sb1", "k8s.io", taskInput("c1", { bundle: "rel/bundle" })),
    InvalidArgumentError,
  );
  assert.deepEqual(h.runtime.calls, []);
  assert.deepEqual(h.events.published, []);
});

Deno.test("Task.Create in a sandbox that is not running is FAILED_PRECONDITION", async () => {
  const h = makeHarness();
  await h.sandboxes.create(sandboxInput("sb1"));
  await assert.rejects(h.tasks.create("sb1", "k8s.io", taskInput("c1")), FailedPreconditionError);
  await h.sandboxes.start("sb1");
  await h.sandboxes.stop("sb1", 0);
  await assert.rejects(h.tasks.create("sb1", "k8s.io", taskInput("c1")), FailedPreconditionError);
  assert.deepEqual(h.runtime.calls, []);
});

Deno.test("Task.Create in an unknown sandbox is NOT_FOUND", async () => {
  const h = makeHarness();
  await assert.rejects(h.tasks.create("nope", "k8s.io", taskInput("c1")), NotFoundError);
});

Deno.test("Task.Create of an existing container id is ALREADY_EXISTS, in any sandbox", async () => {
  const h = await withContainer();
  await runningSandbox(h, "sb2");
  await assert.rejects(h.tasks.create("sb1", "k8s.io", taskInput("c1")), AlreadyExistsError);
  await assert.rejects(h.tasks.create("sb2", "k8s.io", taskInput("c1")), AlreadyExistsError);
  assert.equal(h.runtime.callsOf("create").length, 1);
});

Deno.test("a runtime create failure deletes what it left and forgets the container", async () => {
  const h = await withSandbox();
  h.runtime.failures.create = new InternalError("runc create failed");
  await assert.rejects(h.tasks.create("sb1", "k8s.io", taskInput("c1")), /runc create failed/);
  assert.deepEqual(h.runtime.calls.map((c) => c.op), ["create", "delete"]);
  assert.deepEqual(h.events.published, []);
  assert.deepEqual(h.store.load("sb1")!.containers, {});
  assert.equal(h.registry.sandboxOfContainer("c1"), undefined);
  assert.throws(() => h.tasks.state("sb1", "c1", ""), NotFoundError);
  delete h.runtime.failures.create;
  await h.tasks.create("sb1", "k8s.io", taskInput("c1"));
});

Deno.test("a failing cleanup after a failed create still reports the create error", async () => {
  const h = await withSandbox();
  h.runtime.failures.create = new InternalError("create failed");
  h.runtime.failures.delete = new InternalError("delete failed too");
  await assert.rejects(h.tasks.create("sb1", "k8s.io", taskInput("c1")), /create failed/);
  assert.deepEqual(h.store.load("sb1")!.containers, {});
});

// ------------------------------------------------------------------ Start

Deno.test("Task.Start runs the init process and publishes /tasks/start with its pid", async () => {
  const h = await withSandbox();
  const pid = await h.tasks.create("sb1", "k8s.io", taskInput("c1"));
  assert.equal(await h.tasks.start("sb1", "c1", ""), pid);
  assert.equal(h.tasks.state("sb1", "c1", "").state, "running");
  assert.deepEqual(h.events.published.at(-1), {
    namespace: "k8s.io",
    event: { topic: "/tasks/start", containerId: "c1", pid },
  });
  assert.equal(h.store.load("sb1")!.containers.c1.state, "running");
});

Deno.test("a second Task.Start is FAILED_PRECONDITION", async () => {
  const h = await withContainer();
  await assert.rejects(h.tasks.start("sb1", "c1", ""), InvalidTransitionError);
  assert.equal(h.runtime.callsOf("start").length, 1);
});

Deno.test("Task.Start of an unknown container or exec is NOT_FOUND", async () => {
  const h = await withContainer();
  await assert.rejects(h.tasks.start("sb1", "nope", ""), NotFoundError);
  await assert.rejects(h.tasks.start("sb1", "c1", "nope"), NotFoundError);
  await assert.rejects(h.tasks.start("nope", "c1", ""), NotFoundError);
});

Deno.test("a container is only visible through its own sandbox", async () => {
  const h = await withContainer();
  await runningSandbox(h, "sb2");
  assert.throws(() => h.tasks.state("sb2", "c1", ""), NotFoundError);
  await assert.rejects(h.tasks.kill("sb2", "c1", "", 9, false), NotFoundError);
  await assert.rejects(h.tasks.delete("sb2", "c1", ""), NotFoundError);
});

Deno.test("an exit reported during Task.Start keeps the container stopped", async () => {
  const h = await withSandbox();
  await h.tasks.create("sb1", "k8s.io", taskInput("c1"));
  h.runtime.hooks.start = (c) => void h.runtime.exit(c.sandboxId, c.containerId, undefined, 3);
  const pid = await h.tasks.start("sb1", "c1", "");
  const st = h.tasks.state("sb1", "c1", "");
  assert.equal(st.state, "stopped");
  assert.equal(st.exitStatus, 3);
  assert.deepEqual(await h.tasks.wait("sb1", "c1", ""), {
    pid,
    exitStatus: 3,
    exitedAt: st.exitedAt,
  });
  await h.registry.flushSaves("sb1");
  assert.equal(h.store.load("sb1")!.containers.c1.state, "stopped");
  assert.deepEqual(h.events.topics().sort(), ["/tasks/create", "/tasks/exit", "/tasks/start"]);
  // It can be deleted right away.
  assert.equal((await h.tasks.delete("sb1", "c1", "")).exitStatus, 3);
});

Deno.test({
  name: "an exit reported during Task.Start is published after /tasks/start",
  fn: async () => {
    const h = await withSandbox();
    await h.tasks.create("sb1", "k8s.io", taskInput("c1"));
    h.runtime.hooks.start = (c) => void h.runtime.exit(c.sandboxId, c.containerId, undefined, 0);
    await h.tasks.start("sb1", "c1", "");
    assert.deepEqual(h.events.topics(), ["/tasks/create", "/tasks/start", "/tasks/exit"]);
  },
});

Deno.test("a runtime start failure leaves the container created", async () => {
  const h = await withSandbox();
  await h.tasks.create("sb1", "k8s.io", taskInput("c1"));
  h.runtime.failures.start = new InternalError("exec format error");
  await assert.rejects(h.tasks.start("sb1", "c1", ""), /exec format error/);
  assert.equal(h.tasks.state("sb1", "c1", "").state, "created");
  assert.deepEqual(h.events.topics(), ["/tasks/create"]);
  await h.tasks.delete("sb1", "c1", "");
});

// ------------------------------------------------------------------ Exec

Deno.test("Task.Exec registers a created exec and publishes /tasks/exec-added", async () => {
  const h = await withContainer();
  const eio = io(true);
  await h.tasks.exec("sb1", "c1", "e1", eio, SPEC);
  assert.deepEqual(h.events.published.at(-1), {
    namespace: "k8s.io",
    event: { topic: "/tasks/exec-added", containerId: "c1", execId: "e1" },
  });
  const st = h.tasks.state("sb1", "c1", "e1");
  assert.equal(st.state, "created");
  assert.equal(st.execId, "e1");
  assert.equal(st.pid, 0);
  assert.deepEqual(st.io, eio);
  assert.deepEqual(h.store.load("sb1")!.containers.c1.execs.e1.spec, SPEC);
  assert.equal(h.runtime.callsOf("startExec").length, 0, "Exec does not start anything");
});

Deno.test("Task.Exec validates the exec id and the spec", async () => {
  const h = await withContainer();
  for (const id of ["", "e/1", "..", "e 1"]) {
    await assert.rejects(
      async () => await h.tasks.exec("sb1", "c1", id, io(), SPEC),
      InvalidArgumentError,
    );
  }
  // No command: it could only fail at Start.
  for (const spec of [undefined, null, "sh", 42, {}, { args: [] }, { args: "sh" }, { args: [1] }]) {
    await assert.rejects(
      async () => await h.tasks.exec("sb1", "c1", "e1", io(), spec),
      InvalidArgumentError,
    );
  }
});

Deno.test("Task.Exec in a container that is not running is FAILED_PRECONDITION", async () => {
  const h = await withSandbox();
  await h.tasks.create("sb1", "k8s.io", taskInput("c1"));
  await assert.rejects(h.tasks.exec("sb1", "c1", "e1", io(), SPEC), FailedPreconditionError);
  await h.tasks.start("sb1", "c1", "");
  h.runtime.exit("sb1", "c1", undefined, 0);
  await assert.rejects(h.tasks.exec("sb1", "c1", "e1", io(), SPEC), FailedPreconditionError);
});

Deno.test("a duplicate exec id is ALREADY_EXISTS", async () => {
  const h = await withContainer();
  await h.tasks.exec("sb1", "c1", "e1", io(), SPEC);
  await assert.rejects(h.tasks.exec("sb1", "c1", "e1", io(), SPEC), AlreadyExistsError);
  assert.equal(h.events.ofTopic("/tasks/exec-added").length, 1);
});

Deno.test("Task.Start of an exec runs it and publishes /tasks/exec-started with its pid", async () => {
  const h = await withContainer();
  await h.tasks.exec("sb1", "c1", "e1", io(), SPEC);
  h.runtime.nextPid = 900;
  assert.equal(await h.tasks.start("sb1", "c1", "e1"), 900);
  assert.deepEqual(h.events.published.at(-1), {
    namespace: "k8s.io",
    event: { topic: "/tasks/exec-started", containerId: "c1", execId: "e1", pid: 900 },
  });
  const st = h.tasks.state("sb1", "c1", "e1");
  assert.equal(st.state, "running");
  assert.equal(st.pid, 900);
  const saved = h.store.load("sb1")!.containers.c1.execs.e1;
  assert.equal(saved.state, "running");
  assert.equal(saved.pending, undefined);
  await assert.rejects(h.tasks.start("sb1", "c1", "e1"), FailedPreconditionError);
});

Deno.test("Task.Start of an exec in a stopped container is FAILED_PRECONDITION", async () => {
  const h = await withContainer();
  await h.tasks.exec("sb1", "c1", "e1", io(), SPEC);
  h.runtime.exit("sb1", "c1", undefined, 0);
  await assert.rejects(h.tasks.start("sb1", "c1", "e1"), FailedPreconditionError);
  assert.equal(h.runtime.callsOf("startExec").length, 0);
});

Deno.test("a failed exec start clears the pending mark and keeps the exec created", async () => {
  const h = await withContainer();
  await h.tasks.exec("sb1", "c1", "e1", io(), SPEC);
  h.runtime.failures.startExec = new InternalError("no such binary");
  await assert.rejects(h.tasks.start("sb1", "c1", "e1"), /no such binary/);
  const saved = h.store.load("sb1")!.containers.c1.execs.e1;
  assert.equal(saved.pending, undefined);
  assert.equal(saved.state, "created");
  assert.equal(h.events.ofTopic("/tasks/exec-started").length, 0);
  await h.tasks.delete("sb1", "c1", "e1");
});

Deno.test("an exec exit reported during its Start keeps it stopped", async () => {
  const h = await withContainer();
  await h.tasks.exec("sb1", "c1", "e1", io(), SPEC);
  h.runtime.hooks.startExec = (c) => void h.runtime.exit(c.sandboxId, c.containerId, c.execId, 1);
  await h.tasks.start("sb1", "c1", "e1");
  assert.equal(h.tasks.state("sb1", "c1", "e1").state, "stopped");
  assert.equal((await h.tasks.wait("sb1", "c1", "e1")).exitStatus, 1);
});

// ------------------------------------------------------------------ Kill

Deno.test("Task.Kill passes signal, process and all to the runtime", async () => {
  const h = await withExec();
  await h.tasks.kill("sb1", "c1", "", 15, false);
  await h.tasks.kill("sb1", "c1", "", 2, true);
  await h.tasks.kill("sb1", "c1", "e1", 10, false);
  assert.deepEqual(
    h.runtime.callsOf("kill").map((k) => [k.containerId, k.execId, k.signal, k.all]),
    [["c1", undefined, 15, false], ["c1", undefined, 2, true], ["c1", "e1", 10, false]],
  );
  assert.equal(h.tasks.state("sb1", "c1", "").state, "running");
});

Deno.test("Task.Kill rejects signals outside 0..64 with INVALID_ARGUMENT", async () => {
  const h = await withContainer();
  for (const s of [-1, 65, 1.5, NaN, Infinity]) {
    await assert.rejects(
      async () => await h.tasks.kill("sb1", "c1", "", s, false),
      InvalidArgumentError,
    );
  }
  await h.tasks.kill("sb1", "c1", "", 64, false);
  await h.tasks.kill("sb1", "c1", "", 1, false);
});

Deno.test("Task.Kill with signal 0 probes liveness (iSulad): OK while it runs, NOT_FOUND after", async () => {
  const h = await withExec(); // its container runs
  await h.tasks.kill("sb1", "c1", "", 0, false);
  h.runtime.exit("sb1", "c1", undefined, 0);
  await assert.rejects(h.tasks.kill("sb1", "c1", "", 0, false), NotFoundError);
  assert.equal(h.runtime.callsOf("kill").length, 0, "nothing is signalled");
});

Deno.test("Task.Kill of an exited process is NOT_FOUND", async () => {
  const h = await withExec();
  h.runtime.exit("sb1", "c1", "e1", 0);
  await assert.rejects(h.tasks.kill("sb1", "c1", "e1", 9, false), NotFoundError);
  await assert.rejects(h.tasks.kill("sb1", "c1", "e1", 9, true), NotFoundError);
  h.runtime.exit("sb1", "c1", undefined, 0);
  await assert.rejects(h.tasks.kill("sb1", "c1", "", 15, false), NotFoundError);
  assert.equal(h.runtime.callsOf("kill").length, 0);
  // Killing all processes of an exited init is still allowed (its children may live on).
  await h.tasks.kill("sb1", "c1", "", 9, true);
  assert.equal(h.runtime.callsOf("kill").length, 1);
});

Deno.test("Task.Kill with SIGKILL makes Wait resolve with 128 + 9", async () => {
  const h = await withContainer();
  const w = h.tasks.wait("sb1", "c1", "");
  assert.equal(await isSettled(w), false);
  await h.tasks.kill("sb1", "c1", "", 9, false);
  const exit = await w;
  assert.equal(exit.exitStatus, 137);
  assert.ok(exit.exitedAt);
});

// ------------------------------------------------------------------ Wait

Deno.test("Task.Wait resolves with the pid and exit of the init or exec process", async () => {
  const h = await withExec();
  const wInit = h.tasks.wait("sb1", "c1", "");
  const wExec = h.tasks.wait("sb1", "c1", "e1");
  const execExit = h.runtime.exit("sb1", "c1", "e1", 7);
  assert.deepEqual(await wExec, {
    pid: h.tasks.state("sb1", "c1", "e1").pid,
    exitStatus: 7,
    exitedAt: execExit.at,
  });
  assert.equal(await isSettled(wInit), false, "the init process still runs");
  const initExit = h.runtime.exit("sb1", "c1", undefined, 0);
  assert.deepEqual(await wInit, {
    pid: h.tasks.state("sb1", "c1", "").pid,
    exitStatus: 0,
    exitedAt: initExit.at,
  });
});

Deno.test("Task.Wait of unknown processes is NOT_FOUND; an aborted Wait rejects", async () => {
  const h = await withContainer();
  await assert.rejects(h.tasks.wait("sb1", "nope", ""), NotFoundError);
  await assert.rejects(h.tasks.wait("sb1", "c1", "nope"), NotFoundError);
  await assert.rejects(h.tasks.wait("nope", "c1", ""), NotFoundError);
  const ac = new AbortController();
  const w = h.tasks.wait("sb1", "c1", "", ac.signal);
  ac.abort(new Error("client cancelled"));
  await assert.rejects(w, /client cancelled/);
});

Deno.test("only the first exit of a process counts", async () => {
  const h = await withContainer();
  const first = h.runtime.exit("sb1", "c1", undefined, 1);
  h.runtime.exit("sb1", "c1", undefined, 2);
  assert.equal(h.events.ofTopic("/tasks/exit").length, 1);
  const w = await h.tasks.wait("sb1", "c1", "");
  assert.equal(w.exitStatus, 1);
  assert.deepEqual(w.exitedAt, first.at);
});

Deno.test("exits of unknown sandboxes, containers or execs are ignored", async () => {
  const h = await withContainer();
  const n = h.events.published.length;
  h.runtime.exit("nope", "c1", undefined, 1);
  h.runtime.exit("sb1", "nope", undefined, 1);
  h.runtime.exit("sb1", "c1", "nope", 1);
  assert.equal(h.events.published.length, n);
  assert.equal(h.tasks.state("sb1", "c1", "").state, "running");
});

Deno.test("an exit publishes /tasks/exit with pid, status and time and is persisted", async () => {
  const h = await withExec();
  const pid = h.tasks.state("sb1", "c1", "e1").pid;
  const exit = h.runtime.exit("sb1", "c1", "e1", 42);
  assert.deepEqual(h.events.published.at(-1), {
    namespace: "k8s.io",
    event: {
      topic: "/tasks/exit",
      containerId: "c1",
      id: "e1",
      pid,
      exitStatus: 42,
      exitedAt: exit.at,
    },
  });
  await h.registry.flushSaves("sb1");
  assert.deepEqual(h.store.load("sb1")!.containers.c1.execs.e1.exit, exit);
  assert.equal(h.store.load("sb1")!.containers.c1.execs.e1.state, "stopped");
});

// ------------------------------------------------------------------ Delete

Deno.test("Task.Delete of a running or paused container is FAILED_PRECONDITION", async () => {
  const h = await withContainer();
  await assert.rejects(h.tasks.delete("sb1", "c1", ""), FailedPreconditionError);
  await h.tasks.pause("sb1", "c1");
  await assert.rejects(h.tasks.delete("sb1", "c1", ""), FailedPreconditionError);
  assert.equal(h.runtime.callsOf("delete").length, 0);
});

Deno.test("Task.Delete of a running exec is FAILED_PRECONDITION", async () => {
  const h = await withExec();
  await assert.rejects(h.tasks.delete("sb1", "c1", "e1"), FailedPreconditionError);
  assert.equal(h.runtime.callsOf("deleteExec").length, 0);
});

Deno.test("Task.Delete of a stopped container removes it, reports its exit and publishes /tasks/delete", async () => {
  const h = await withContainer();
  const pid = h.tasks.state("sb1", "c1", "").pid;
  const exit = h.runtime.exit("sb1", "c1", undefined, 2);
  const r = await h.tasks.delete("sb1", "c1", "");
  assert.deepEqual(r, { pid, exitStatus: 2, exitedAt: exit.at });
  assert.deepEqual(h.events.published.at(-1), {
    namespace: "k8s.io",
    event: {
      topic: "/tasks/delete",
      containerId: "c1",
      id: "c1",
      pid,
      exitStatus: 2,
      exitedAt: exit.at,
    },
  });
  assert.deepEqual(h.runtime.callsOf("delete").map((c) => c.containerId), ["c1"]);
  assert.deepEqual(h.store.load("sb1")!.containers, {});
  assert.equal(h.registry.sandboxOfContainer("c1"), undefined);
  assert.throws(() => h.tasks.state("sb1", "c1", ""), NotFoundError);
  await assert.rejects(h.tasks.delete("sb1", "c1", ""), NotFoundError);
  // The id is free again.
  await h.tasks.create("sb1", "k8s.io", taskInput("c1"));
});

Deno.test("Task.Delete of a created (never started) container is allowed", async () => {
  const h = await withSandbox();
  const pid = await h.tasks.create("sb1", "k8s.io", taskInput("c1"));
  const r = await h.tasks.delete("sb1", "c1", "");
  assert.deepEqual(r, { pid, exitStatus: 0, exitedAt: undefined });
  const ev = h.events.ofTopic("/tasks/delete")[0];
  assert.equal(ev.exitStatus, 0);
  assert.ok(ev.exitedAt.seconds > 0, "the event carries a time even without an exit");
});

Deno.test("Task.Delete of an exec removes it without a /tasks/delete event", async () => {
  const h = await withExec();
  const pid = h.tasks.state("sb1", "c1", "e1").pid;
  const exit = h.runtime.exit("sb1", "c1", "e1", 5);
  const r = await h.tasks.delete("sb1", "c1", "e1");
  assert.deepEqual(r, { pid, exitStatus: 5, exitedAt: exit.at });
  assert.deepEqual(
    h.runtime.callsOf("deleteExec").map((c) => [c.containerId, c.execId]),
    [["c1", "e1"]],
  );
  assert.equal(h.events.ofTopic("/tasks/delete").length, 0);
  assert.throws(() => h.tasks.state("sb1", "c1", "e1"), NotFoundError);
  assert.equal(h.store.load("sb1")!.containers.c1.execs.e1, undefined);
  await assert.rejects(h.tasks.wait("sb1", "c1", "e1"), NotFoundError);
  // The exec id can be reused.
  await h.tasks.exec("sb1", "c1", "e1", io(), SPEC);
});

Deno.test("Task.Delete of a stopped container kills and releases exec processes still running", async () => {
  const h = await withExec();
  await h.tasks.exec("sb1", "c1", "e2", io(), SPEC);
  h.runtime.exit("sb1", "c1", undefined, 0);
  await h.tasks.delete("sb1", "c1", "");
  assert.deepEqual(
    h.runtime.calls.filter((c) => ["kill", "deleteExec", "delete"].includes(c.op)).map((
      c,
    ) => [c.op, c.execId, c.signal]),
    [
      ["kill", "e1", 9],
      ["deleteExec", "e1", undefined],
      ["deleteExec", "e2", undefined],
      ["delete", undefined, undefined],
    ],
  );
});

Deno.test("a runtime delete failure keeps the container", async () => {
  const h = await withContainer();
  h.runtime.exit("sb1", "c1", undefined, 0);
  h.runtime.failures.delete = new InternalError("device busy");
  await assert.rejects(h.tasks.delete("sb1", "c1", ""), /device busy/);
  assert.equal(h.tasks.state("sb1", "c1", "").state, "stopped");
  assert.equal(h.events.ofTopic("/tasks/delete").length, 0);
  delete h.runtime.failures.delete;
  await h.tasks.delete("sb1", "c1", "");
});

// ------------------------------------------------------------------ the whole flow

Deno.test("a full container lifecycle publishes its events in order, in its namespace", async () => {
  const h = await withSandbox();
  await h.tasks.create("sb1", "team-a", taskInput("c1"));
  await h.tasks.start("sb1", "c1", "");
  await h.tasks.exec("sb1", "c1", "e1", io(), SPEC);
  await h.tasks.start("sb1", "c1", "e1");
  h.runtime.exit("sb1", "c1", "e1", 0);
  await h.tasks.delete("sb1", "c1", "e1");
  await h.tasks.kill("sb1", "c1", "", 9, false);
  await h.tasks.wait("sb1", "c1", "");
  await h.tasks.delete("sb1", "c1", "");
  assert.deepEqual(h.events.topics(), [
    "/tasks/create",
    "/tasks/start",
    "/tasks/exec-added",
    "/tasks/exec-started",
    "/tasks/exit",
    "/tasks/exit",
    "/tasks/delete",
  ]);
  assert.ok(h.events.published.every((p) => p.namespace === "team-a"));
  const exits = h.events.ofTopic("/tasks/exit");
  assert.deepEqual(exits.map((e) => [e.id, e.exitStatus]), [["e1", 0], ["c1", 137]]);
  const ids = h.events.published.map((p) =>
    (p.event as TaskEvent & { containerId: string }).containerId
  );
  assert.ok(ids.every((id) => id === "c1"));
  assert.deepEqual(h.store.load("sb1")!.containers, {});
});

// ------------------------------------------------------------------ Pause, Resume, other calls

Deno.test("Task.Pause and Task.Resume move the state and publish /tasks/paused and /tasks/resumed", async () => {
  const h = await withContainer();
  await h.tasks.pause("sb1", "c1");
  assert.equal(h.tasks.state("sb1", "c1", "").state, "paused");
  assert.equal(h.store.load("sb1")!.containers.c1.state, "paused");
  await assert.rejects(h.tasks.pause("sb1", "c1"), FailedPreconditionError);
  await h.tasks.resume("sb1", "c1");
  assert.equal(h.tasks.state("sb1", "c1", "").state, "running");
  await assert.rejects(h.tasks.resume("sb1", "c1"), FailedPreconditionError);
  assert.deepEqual(h.events.topics().slice(-2), ["/tasks/paused", "/tasks/resumed"]);
  assert.deepEqual(h.runtime.calls.map((c) => c.op).slice(-2), ["pause", "resume"]);
});

Deno.test({
  name: "a container that exits while being paused stays stopped",
  fn: async () => {
    const h = await withContainer();
    h.runtime.hooks.pause = (c) => void h.runtime.exit(c.sandboxId, c.containerId, undefined, 9);
    await h.tasks.pause("sb1", "c1");
    assert.equal(h.tasks.state("sb1", "c1", "").state, "stopped");
    await h.tasks.delete("sb1", "c1", "");
  },
});

Deno.test({
  name: "Task.Start of a paused container is FAILED_PRECONDITION",
  fn: async () => {
    const h = await withContainer();
    await h.tasks.pause("sb1", "c1");
    await assert.rejects(h.tasks.start("sb1", "c1", ""), FailedPreconditionError);
    assert.equal(h.runtime.callsOf("start").length, 1);
    assert.equal(h.events.ofTopic("/tasks/start").length, 1);
  },
});

Deno.test({
  name: "Task.Wait on a created container is released when the container is deleted",
  fn: async () => {
    const h = await withSandbox();
    await h.tasks.create("sb1", "k8s.io", taskInput("c1"));
    const w = h.tasks.wait("sb1", "c1", "");
    await h.tasks.delete("sb1", "c1", "");
    assert.equal(await isSettled(w), true);
  },
});

Deno.test("Task.Pause of a created or stopped container is FAILED_PRECONDITION", async () => {
  const h = await withSandbox();
  await h.tasks.create("sb1", "k8s.io", taskInput("c1"));
  await assert.rejects(h.tasks.pause("sb1", "c1"), FailedPreconditionError);
  await h.tasks.start("sb1", "c1", "");
  h.runtime.exit("sb1", "c1", undefined, 0);
  await assert.rejects(h.tasks.pause("sb1", "c1"), FailedPreconditionError);
  assert.equal(h.runtime.callsOf("pause").length, 0);
});

Deno.test("a paused container that exits while resuming stays stopped", async () => {
  const h = await withContainer();
  await h.tasks.pause("sb1", "c1");
  h.runtime.hooks.resume = (c) => void h.runtime.exit(c.sandboxId, c.containerId, undefined, 9);
  await h.tasks.resume("sb1", "c1");
  assert.equal(h.tasks.state("sb1", "c1", "").state, "stopped");
});

Deno.test("Task.Update parses LinuxResources JSON and rejects anything else", async () => {
  const h = await withContainer();
  const enc = (s: string) => new TextEncoder().encode(s);
  await h.tasks.update("sb1", "c1", enc(`{"memory":{"limit":1048576}}`));
  await h.tasks.update("sb1", "c1", undefined);
  await h.tasks.update("sb1", "c1", new Uint8Array());
  assert.deepEqual(h.runtime.callsOf("update").map((c) => c.resources), [
    { memory: { limit: 1048576 } },
    {},
    {},
  ]);
  for (const bad of ["{", "[]", "null", "3", `"x"`]) {
    await assert.rejects(
      async () => await h.tasks.update("sb1", "c1", enc(bad)),
      InvalidArgumentError,
    );
  }
  h.runtime.exit("sb1", "c1", undefined, 0);
  await assert.rejects(h.tasks.update("sb1", "c1", enc("{}")), FailedPreconditionError);
  assert.equal(h.runtime.callsOf("update").length, 3);
});

Deno.test("Task.ResizePty needs a terminal and is skipped for exited processes", async () => {
  const h = await withContainer();
  await assert.rejects(h.tasks.resizePty("sb1", "c1", "", 80, 24), FailedPreconditionError);
  await h.tasks.exec("sb1", "c1", "tty", io(true), SPEC);
  await h.tasks.start("sb1", "c1", "tty");
  await h.tasks.resizePty("sb1", "c1", "tty", 120, 40);
  assert.deepEqual(h.runtime.callsOf("resizePty").map((c) => [c.execId, c.size]), [
    ["tty", { width: 120, height: 40 }],
  ]);
  h.runtime.exit("sb1", "c1", "tty", 0);
  await h.tasks.resizePty("sb1", "c1", "tty", 1, 1);
  assert.equal(h.runtime.callsOf("resizePty").length, 1);
});

Deno.test("Task.CloseIO closes stdin of live processes only", async () => {
  const h = await withExec();
  await h.tasks.closeIo("sb1", "c1", "", false);
  await h.tasks.closeIo("sb1", "c1", "", true);
  await h.tasks.closeIo("sb1", "c1", "e1", true);
  h.runtime.exit("sb1", "c1", "e1", 0);
  await h.tasks.closeIo("sb1", "c1", "e1", true);
  assert.deepEqual(h.runtime.callsOf("closeStdin").map((c) => c.execId), [undefined, "e1"]);
});

Deno.test("Task.Pids, Stats and Connect answer from the runtime and the record", async () => {
  const h = await withExec();
  const cpid = h.tasks.state("sb1", "c1", "").pid;
  const epid = h.tasks.state("sb1", "c1", "e1").pid;
  assert.deepEqual(await h.tasks.pids("sb1", "c1"), [{ pid: cpid }, { pid: epid, execId: "e1" }]);
  const stats = await h.tasks.stats("sb1", "c1");
  assert.equal(stats.typeUrl, "fake.Stats");
  assert.deepEqual(h.tasks.connect("sb1", "c1"), { taskPid: cpid });
  // Not created yet (containerd 1.7 connects first): task pid 0, as the runc shim answers.
  assert.deepEqual(h.tasks.connect("sb1", "nope"), { taskPid: 0 });
  await assert.rejects(h.tasks.pids("sb1", "nope"), NotFoundError);
});

Deno.test("Task.Checkpoint is UNIMPLEMENTED for existing containers, NOT_FOUND otherwise", async () => {
  const h = await withContainer();
  assert.throws(() => h.tasks.checkpoint("sb1", "c1"), UnimplementedError);
  assert.throws(() => h.tasks.checkpoint("sb1", "nope"), NotFoundError);
});

Deno.test("an OOM reported by the runtime publishes /tasks/oom for known containers", async () => {
  const h = await withContainer();
  h.runtime.listener!.processOom!("sb1", "c1");
  h.runtime.listener!.processOom!("sb1", "nope");
  assert.deepEqual(h.events.published.at(-1), {
    namespace: "k8s.io",
    event: { topic: "/tasks/oom", containerId: "c1" },
  });
  assert.equal(h.events.ofTopic("/tasks/oom").length, 1);
});

// ------------------------------------------------------------------ recovery

/** The store as it is while `op` of the runtime runs (a crash in the middle of it). */
function crashDuring(h: Harness, op: "create" | "startExec"): () => MemorySandboxStore {
  let snapshot: MemorySandboxStore | undefined;
  h.runtime.hooks[op] = () => {
    snapshot = h.store.crashClone();
  };
  return () => {
    assert.ok(snapshot, `no crash during ${op}`);
    return snapshot;
  };
}

Deno.test("recover deletes a container whose Create never finished and drops it", async () => {
  const h1 = await withSandbox();
  const crashed = crashDuring(h1, "create");
  await h1.tasks.create("sb1", "k8s.io", taskInput("c1"));
  const store = crashed();
  assert.equal(store.load("sb1")!.containers.c1.pending, "create");
  const h2 = makeHarness({ store });
  await h2.sandboxes.recover();
  assert.deepEqual(h2.runtime.calls.map((c) => [c.op, c.containerId]), [["delete", "c1"]]);
  assert.deepEqual(h2.registry.get("sb1").containers, {});
  assert.deepEqual(h2.store.load("sb1")!.containers, {});
  assert.equal(h2.registry.sandboxOfContainer("c1"), undefined);
  assert.deepEqual(h2.events.published, []);
  // The id is free again.
  await h2.tasks.create("sb1", "k8s.io", taskInput("c1"));
});

Deno.test("recover marks a running container stopped when the runtime reports its exit", async () => {
  const h1 = await withContainer();
  const pid = h1.tasks.state("sb1", "c1", "").pid;
  const h2 = makeHarness({ store: h1.store.crashClone() });
  const exit = { status: 3, at: now() };
  h2.runtime.recoverResults.set("c1", exit);
  await h2.sandboxes.recover();
  assert.deepEqual(h2.runtime.calls.map((c) => [c.op, c.containerId, c.execId]), [
    ["recover", "c1", undefined],
  ]);
  assert.equal(h2.tasks.state("sb1", "c1", "").state, "stopped");
  assert.deepEqual(h2.events.published, [{
    namespace: "k8s.io",
    event: {
      topic: "/tasks/exit",
      containerId: "c1",
      id: "c1",
      pid,
      exitStatus: 3,
      exitedAt: exit.at,
    },
  }]);
  assert.deepEqual(await h2.tasks.wait("sb1", "c1", ""), { pid, exitStatus: 3, exitedAt: exit.at });
  await h2.registry.flushSaves("sb1");
  assert.equal(h2.store.load("sb1")!.containers.c1.state, "stopped");
  assert.ok(h2.endpoint.serving.has("sb1"));
});

Deno.test("recover adopts a container that still runs; its later exit is reported", async () => {
  const h1 = await withContainer();
  const h2 = makeHarness({ store: h1.store.crashClone() });
  await h2.sandboxes.recover();
  assert.equal(h2.tasks.state("sb1", "c1", "").state, "running");
  assert.deepEqual(h2.events.published, []);
  const w = h2.tasks.wait("sb1", "c1", "");
  assert.equal(await isSettled(w), false);
  h2.runtime.exit("sb1", "c1", undefined, 0);
  assert.equal((await w).exitStatus, 0);
  assert.deepEqual(h2.events.topics(), ["/tasks/exit"]);
});

Deno.test("recover marks a process stopped with 255 when the runtime cannot reattach", async () => {
  const h1 = await withExec();
  const h2 = makeHarness({ store: h1.store.crashClone() });
  h2.runtime.recoverResults.set("c1/e1", new Error("token file gone"));
  await h2.sandboxes.recover();
  assert.equal(h2.tasks.state("sb1", "c1", "e1").exitStatus, 255);
  assert.equal(h2.tasks.state("sb1", "c1", "e1").state, "stopped");
  assert.equal(h2.tasks.state("sb1", "c1", "").state, "running");
});

Deno.test("recover skips stopped processes and exec processes never started", async () => {
  const h1 = await withExec();
  await h1.tasks.exec("sb1", "c1", "idle", io(), SPEC);
  h1.runtime.exit("sb1", "c1", "e1", 0);
  await runningContainer(h1, "sb1", "c2");
  h1.runtime.exit("sb1", "c2", undefined, 1);
  await h1.registry.flushSaves("sb1");
  const h2 = makeHarness({ store: h1.store.crashClone() });
  await h2.sandboxes.recover();
  assert.deepEqual(h2.runtime.calls.map((c) => [c.op, c.containerId, c.execId]), [
    ["recover", "c1", undefined],
  ]);
  // Exits recorded before the crash are still there for Wait.
  assert.equal((await h2.tasks.wait("sb1", "c2", "")).exitStatus, 1);
  assert.equal((await h2.tasks.wait("sb1", "c1", "e1")).exitStatus, 0);
  assert.equal(h2.tasks.state("sb1", "c1", "idle").state, "created");
});

Deno.test("recover kills an exec whose Start never returned before reattaching", async () => {
  const h1 = await withContainer();
  await h1.tasks.exec("sb1", "c1", "e1", io(), SPEC);
  const crashed = crashDuring(h1, "startExec");
  await h1.tasks.start("sb1", "c1", "e1");
  const store = crashed();
  assert.equal(store.load("sb1")!.containers.c1.execs.e1.pending, "start");
  const h2 = makeHarness({ store });
  await h2.sandboxes.recover();
  assert.deepEqual(h2.runtime.calls.map((c) => [c.op, c.execId, c.signal]), [
    ["kill", "e1", 9],
    ["recover", "e1", undefined],
    ["recover", undefined, undefined],
  ]);
  assert.equal(h2.tasks.state("sb1", "c1", "e1").state, "stopped");
  await h2.registry.flushSaves("sb1");
  assert.equal(h2.store.load("sb1")!.containers.c1.execs.e1.pending, undefined);
});

Deno.test({
  name: "recover of a dead sandbox does not leave its containers running",
  fn: async () => {
    const h1 = await withContainer();
    const h2 = makeHarness({ store: h1.store.crashClone() });
    h2.backend.recoverResults.set("sb1", { alive: false, exit: { status: 137, at: now() } });
    await h2.sandboxes.recover();
    assert.equal(h2.sandboxes.status("sb1", false).state, "SANDBOX_NOTREADY");
    const w = h2.tasks.wait("sb1", "c1", "");
    await h2.sandboxes.stop("sb1", 0);
    assert.equal(await isSettled(w), true, "the container of the dead pod was stopped");
    assert.equal(h2.tasks.state("sb1", "c1", "").state, "stopped");
  },
});

Deno.test("recover of a dead sandbox records exits the runtime reports for its containers", async () => {
  const h1 = await withContainer();
  const h2 = makeHarness({ store: h1.store.crashClone() });
  h2.backend.recoverResults.set("sb1", { alive: false, exit: { status: 137, at: now() } });
  h2.runtime.recoverResults.set("c1", { status: 137, at: now() });
  await h2.sandboxes.recover();
  assert.equal(h2.tasks.state("sb1", "c1", "").state, "stopped");
  assert.deepEqual(h2.events.topics(), ["/tasks/exit"]);
  // The containers of a stopped pod are still served (so they can be deleted).
  assert.ok(h2.endpoint.serving.has("sb1"));
  await h2.tasks.delete("sb1", "c1", "");
});

Deno.test("Task.Pids of a stopped container still lists its init pid", async () => {
  const h = await withContainer();
  const pid = h.tasks.state("sb1", "c1", "").pid;
  h.runtime.exit("sb1", "c1", undefined, 0);
  assert.deepEqual(await h.tasks.pids("sb1", "c1"), [{ pid }]);
});

// ------------------------------------------------------------------ replays

const REPLAY = { replay: true };

Deno.test("a replayed Create of a container it made answers its pid; a second Create is ALREADY_EXISTS", async () => {
  const h = await withSandbox();
  h.runtime.nextPid = 321;
  const input = taskInput("c1");
  await h.tasks.create("sb1", "k8s.io", input);
  await assert.rejects(h.tasks.create("sb1", "k8s.io", input), AlreadyExistsError);
  // Key order differs once the record went through JSON: it does not matter.
  const again = { ...input, io: { ...input.io }, rootfs: input.rootfs.map((m) => ({ ...m })) };
  assert.equal(await h.tasks.create("sb1", "k8s.io", again, REPLAY), 321);
  assert.equal(h.runtime.callsOf("create").length, 1, "not made twice");
  // A replay asking for something else is not this container's Create.
  await assert.rejects(
    h.tasks.create("sb1", "k8s.io", taskInput("c1", { bundle: "/other" }), REPLAY),
    AlreadyExistsError,
  );
});

Deno.test("a replayed Create whose unfinished container recovery undid makes it again", async () => {
  const h1 = await withSandbox();
  const crashed = crashDuring(h1, "create");
  await h1.tasks.create("sb1", "k8s.io", taskInput("c1"));
  const h2 = makeHarness({ store: crashed() });
  await h2.sandboxes.recover();
  const pid = await h2.tasks.create("sb1", "k8s.io", taskInput("c1"), REPLAY);
  assert.equal(h2.tasks.state("sb1", "c1", "").pid, pid);
  assert.equal(h2.tasks.state("sb1", "c1", "").state, "created");
});

Deno.test("a replayed Start of a running process answers its pid; a second Start is refused", async () => {
  const h = await withExec();
  const pid = h.tasks.state("sb1", "c1", "").pid;
  await assert.rejects(h.tasks.start("sb1", "c1", ""), InvalidTransitionError);
  assert.equal(await h.tasks.start("sb1", "c1", "", REPLAY), pid);
  const epid = h.tasks.state("sb1", "c1", "e1").pid;
  assert.equal(await h.tasks.start("sb1", "c1", "e1", REPLAY), epid);
  assert.equal(h.runtime.callsOf("start").length, 1);
  assert.equal(h.runtime.callsOf("startExec").length, 1);
});

Deno.test("a replayed Start of an exec recovery killed is not answered OK", async () => {
  const h1 = await withContainer();
  await h1.tasks.exec("sb1", "c1", "e1", io(), SPEC);
  const crashed = crashDuring(h1, "startExec");
  await h1.tasks.start("sb1", "c1", "e1");
  const h2 = makeHarness({ store: crashed() });
  await h2.sandboxes.recover();
  await assert.rejects(h2.tasks.start("sb1", "c1", "e1", REPLAY), InvalidTransitionError);
});

Deno.test("recover adopts a created container the runtime says was started", async () => {
  const h1 = await withSandbox();
  await h1.tasks.create("sb1", "k8s.io", taskInput("c1"));
  const h2 = makeHarness({ store: h1.store.crashClone() });
  h2.runtime.startedAfterAll.add("c1");
  await h2.sandboxes.recover();
  assert.equal(h2.tasks.state("sb1", "c1", "").state, "running");
  await h2.registry.flushSaves("sb1");
  assert.equal(h2.store.load("sb1")!.containers.c1.state, "running");
  const pid = h2.tasks.state("sb1", "c1", "").pid;
  assert.equal(await h2.tasks.start("sb1", "c1", "", REPLAY), pid);
});

Deno.test("a replayed Exec of an exec it added succeeds; a second Exec is ALREADY_EXISTS", async () => {
  const h = await withContainer();
  await h.tasks.exec("sb1", "c1", "e1", io(), SPEC);
  await assert.rejects(h.tasks.exec("sb1", "c1", "e1", io(), SPEC), AlreadyExistsError);
  await h.tasks.exec("sb1", "c1", "e1", io(), { cwd: "/", args: SPEC.args }, REPLAY);
  await assert.rejects(
    h.tasks.exec("sb1", "c1", "e1", io(), { args: ["other"] }, REPLAY),
    AlreadyExistsError,
  );
});

Deno.test("a replayed Kill of a process that exited succeeds; a second Kill is NOT_FOUND", async () => {
  const h = await withContainer();
  h.runtime.exit("sb1", "c1", undefined, 137);
  await assert.rejects(h.tasks.kill("sb1", "c1", "", 9, false), NotFoundError);
  await h.tasks.kill("sb1", "c1", "", 9, false, REPLAY);
});

Deno.test("a capability the runtime does not declare is UNIMPLEMENTED with its reason, before anything is called", async () => {
  const h = await withContainer();
  delete h.runtime.capabilities.pause;
  delete h.runtime.capabilities.stats;
  delete h.runtime.capabilities.update;
  delete h.runtime.capabilities.exec;
  h.runtime.lacking.pause = "modules cannot be frozen";
  const before = h.runtime.calls.length;
  await assert.rejects(h.tasks.pause("sb1", "c1"), (e) => {
    assert.ok(e instanceof UnimplementedError);
    assert.equal(e.message, "modules cannot be frozen");
    return true;
  });
  await assert.rejects(h.tasks.stats("sb1", "c1"), /Stats is not supported/);
  await assert.rejects(h.tasks.update("sb1", "c1", undefined), UnimplementedError);
  await h.tasks.exec("sb1", "c1", "x", io(), { args: ["true"] });
  await assert.rejects(h.tasks.start("sb1", "c1", "x"), /Exec is not supported/);
  // Delete of the exec that never ran has nothing of the runtime's to release.
  await h.tasks.delete("sb1", "c1", "x");
  assert.deepEqual(h.runtime.calls.slice(before), []);
  // A missing container is still NOT_FOUND, not UNIMPLEMENTED.
  await assert.rejects(h.tasks.stats("sb1", "nope"), NotFoundError);
});
