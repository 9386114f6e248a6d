import assert from "node:assert/strict";
import { base64Encode } from "../domain/encoding.ts";
import {
  AlreadyExistsError,
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  InvalidTransitionError,
  NotFoundError,
} from "../domain/errors.ts";
import type { StoredAny } from "../domain/sandbox.ts";
import { now } from "../domain/time.ts";
import { FakeTaskEndpoint } from "../../tests/fakes/fake_task_endpoint.ts";
import {
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

function tasksAny(doc: unknown): StoredAny {
  return tasksAnyText(JSON.stringify(doc));
}

function tasksAnyText(text: string): StoredAny {
  return { typeUrl: "kuasar.tasks", value: base64Encode(new TextEncoder().encode(text)) };
}

// ------------------------------------------------------------------ Create

Deno.test("Create with a malformed id is INVALID_ARGUMENT and touches nothing", async () => {
  const h = makeHarness();
  for (const id of ["", "../etc", "a/b", "a b", "x".repeat(77), "a\0b"]) {
    await assert.rejects(
      async () => await h.sandboxes.create(sandboxInput(id)),
      InvalidArgumentError,
    );
  }
  assert.equal(h.store.dirs.size, 0);
  assert.deepEqual(h.backend.calls, []);
});

Deno.test("Create with a relative netns path is INVALID_ARGUMENT", async () => {
  const h = makeHarness();
  await assert.rejects(
    async () => await h.sandboxes.create(sandboxInput("sb1", { netnsPath: "netns/x" })),
    InvalidArgumentError,
  );
  assert.equal(h.store.dirs.size, 0);
  // An empty netns path (the pod gets a new network namespace) is fine.
  await h.sandboxes.create(sandboxInput("sb2", { netnsPath: "" }));
});

Deno.test("Create with a hostname the kernel would refuse is INVALID_ARGUMENT and touches nothing", async () => {
  const h = makeHarness();
  for (
    const hostname of ["x".repeat(10_000), "a".repeat(65), "a b", "-a", "a-", "a..b", "é", "a\0"]
  ) {
    const input = sandboxInput("sb1");
    await assert.rejects(
      async () => await h.sandboxes.create({ ...input, pod: { ...input.pod, hostname } }),
      InvalidArgumentError,
      hostname.slice(0, 20),
    );
  }
  assert.equal(h.store.dirs.size, 0);
  assert.deepEqual(h.backend.calls, []);
  for (
    const [id, hostname] of [["sb1", "a".repeat(64)], ["sb2", "web-0.svc_x.local"], ["sb3", ""]]
  ) {
    const input = sandboxInput(id);
    await h.sandboxes.create({ ...input, pod: { ...input.pod, hostname } });
  }
});

Deno.test("Create runs the netns check before anything is touched", async () => {
  const checked: string[] = [];
  const h = makeHarness({
    checkNetns: (p: string) => {
      checked.push(p);
      return Promise.reject(new InvalidArgumentError(`Invalid netns path "${p}"`));
    },
  });
  await assert.rejects(
    async () => await h.sandboxes.create(sandboxInput("sb1", { netnsPath: "/etc/passwd" })),
    InvalidArgumentError,
  );
  assert.deepEqual(checked, ["/etc/passwd"]);
  assert.equal(h.store.dirs.size, 0);
  assert.deepEqual(h.backend.calls, []);
  await h.sandboxes.create(sandboxInput("sb2", { netnsPath: "" }));
  assert.deepEqual(checked, ["/etc/passwd"], "no netns: nothing to check");
});

Deno.test("Create persists a created record and calls the backend once", async () => {
  const h = makeHarness({ taskApiVersion: 2 });
  const input = sandboxInput("sb1", {
    annotations: { a: "1" },
    extensions: { other: { typeUrl: "x", value: "" } },
    podConfigAny: { typeUrl: "cri.PodSandboxConfig", value: "AAE=" },
  });
  await h.sandboxes.create(input);
  assert.deepEqual(h.backend.ops(), ["create"]);
  const saved = h.store.load("sb1");
  assert.ok(saved);
  assert.equal(saved.state, "created");
  assert.equal(saved.kind, "fake");
  assert.equal(saved.pid, 0);
  assert.equal(saved.taskAddress, "");
  assert.equal(saved.taskApiVersion, 2);
  assert.equal(saved.netnsPath, input.netnsPath);
  assert.deepEqual(saved.pod, input.pod);
  assert.deepEqual(saved.podConfigAny, input.podConfigAny);
  assert.deepEqual(saved.labels, input.labels);
  assert.deepEqual(saved.annotations, { a: "1" });
  assert.deepEqual(saved.extensions, input.extensions);
  assert.deepEqual(saved.containers, {});
  assert.deepEqual(saved.backend, { cgroup: "/fake/sb1" }, "what backend.create filled is kept");
  const st = h.sandboxes.status("sb1", false);
  assert.equal(st.state, "SANDBOX_NOTREADY");
  assert.equal(st.pid, 0);
  assert.equal(st.version, 2);
});

Deno.test("Create of an existing id is ALREADY_EXISTS and leaves the first sandbox intact", async () => {
  const h = makeHarness();
  await h.sandboxes.create(sandboxInput("sb1"));
  await assert.rejects(
    async () => await h.sandboxes.create(sandboxInput("sb1")),
    AlreadyExistsError,
  );
  assert.deepEqual(h.backend.ops(), ["create"]);
  assert.ok(h.store.load("sb1"));
  await h.sandboxes.start("sb1");
});

Deno.test("two concurrent Creates of one id: exactly one succeeds", async () => {
  const h = makeHarness();
  const results = await Promise.allSettled([
    h.sandboxes.create(sandboxInput("sb1")),
    h.sandboxes.create(sandboxInput("sb1")),
  ]);
  assert.equal(results.filter((r) => r.status === "fulfilled").length, 1);
  const rejected = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
  assert.ok(rejected.reason instanceof AlreadyExistsError);
  assert.deepEqual(h.backend.ops(), ["create"]);
});

Deno.test("Create over a leftover directory (unknown to the registry) is ALREADY_EXISTS", async () => {
  const h = makeHarness();
  h.store.dirs.add("sb1");
  await assert.rejects(
    async () => await h.sandboxes.create(sandboxInput("sb1")),
    AlreadyExistsError,
  );
  assert.deepEqual(h.backend.calls, []);
});

Deno.test("a backend create failure leaves nothing in the store or the registry", async () => {
  const h = makeHarness();
  h.backend.failures.create = new InternalError("no cgroup");
  await assert.rejects(async () => await h.sandboxes.create(sandboxInput("sb1")), /no cgroup/);
  assert.equal(h.store.dirs.size, 0);
  assert.equal(h.store.saved.size, 0);
  assert.deepEqual(h.backend.ops(), ["create", "cleanup"]);
  assert.throws(() => h.sandboxes.status("sb1", false), NotFoundError);
  assert.equal(h.registry.has("sb1"), false);
  // The id can be used again.
  delete h.backend.failures.create;
  await h.sandboxes.create(sandboxInput("sb1"));
  assert.equal(h.store.load("sb1")?.state, "created");
});

Deno.test("a store failure while saving the new record leaves nothing behind", async () => {
  const h = makeHarness();
  h.store.failNextSave = new Error("disk full");
  await assert.rejects(async () => await h.sandboxes.create(sandboxInput("sb1")), /disk full/);
  assert.equal(h.store.dirs.size, 0);
  assert.equal(h.registry.has("sb1"), false);
  assert.deepEqual(h.backend.ops(), ["create", "cleanup"]);
  await assert.rejects(h.sandboxes.wait("sb1"), NotFoundError);
});

// ------------------------------------------------------------------ Start

Deno.test("Start returns the task address and pid and moves the sandbox to running", async () => {
  const h = makeHarness();
  h.backend.nextPid = 4321;
  await h.sandboxes.create(sandboxInput("sb1"));
  const created = h.store.load("sb1")!;
  const r = await h.sandboxes.start("sb1");
  assert.equal(r.pid, 4321);
  assert.equal(r.address, FakeTaskEndpoint.addressOf("sb1"));
  assert.equal(r.version, 3);
  assert.deepEqual(r.labels, { app: "test" });
  assert.deepEqual(r.createdAt, created.createdAt);
  assert.ok(h.endpoint.serving.has("sb1"));
  const saved = h.store.load("sb1")!;
  assert.equal(saved.state, "running");
  assert.equal(saved.pid, 4321);
  assert.equal(saved.taskAddress, r.address);
  assert.ok(saved.startedAt);
  const st = h.sandboxes.status("sb1", false);
  assert.equal(st.state, "SANDBOX_READY");
  assert.equal(st.pid, 4321);
  assert.equal(st.address, r.address);
});

Deno.test("a second Start is FAILED_PRECONDITION and does not call the backend again", async () => {
  const h = makeHarness();
  await runningSandbox(h, "sb1");
  await assert.rejects(h.sandboxes.start("sb1"), (e: unknown) => {
    assert.ok(e instanceof FailedPreconditionError);
    assert.ok(e instanceof InvalidTransitionError);
    return true;
  });
  assert.deepEqual(h.backend.ops(), ["create", "start"]);
});

Deno.test("Start of a stopped sandbox is FAILED_PRECONDITION", async () => {
  const h = makeHarness();
  await runningSandbox(h, "sb1");
  await h.sandboxes.stop("sb1", 0);
  await assert.rejects(h.sandboxes.start("sb1"), FailedPreconditionError);
});

Deno.test("Start of an unknown id is NOT_FOUND, of a malformed id INVALID_ARGUMENT", async () => {
  const h = makeHarness();
  await assert.rejects(h.sandboxes.start("nope"), NotFoundError);
  await assert.rejects(h.sandboxes.start("../x"), InvalidArgumentError);
});

Deno.test("a backend start failure tears down, keeps the sandbox created and allows a retry", async () => {
  const h = makeHarness();
  await h.sandboxes.create(sandboxInput("sb1"));
  h.backend.failures.start = new InternalError("holder died");
  await assert.rejects(h.sandboxes.start("sb1"), /holder died/);
  assert.deepEqual(h.backend.calls.slice(1), [
    { op: "start", sandboxId: "sb1" },
    { op: "stop", sandboxId: "sb1", timeoutMs: 0 },
  ]);
  assert.equal(h.endpoint.serving.size, 0);
  const st = h.sandboxes.status("sb1", false);
  assert.equal(st.state, "SANDBOX_NOTREADY");
  assert.equal(st.pid, 0);
  assert.equal(h.store.load("sb1")!.state, "created");
  delete h.backend.failures.start;
  const r = await h.sandboxes.start("sb1");
  assert.ok(r.pid > 0);
  assert.equal(h.sandboxes.status("sb1", false).state, "SANDBOX_READY");
});

Deno.test("a task endpoint failure during Start stops the boundary again", async () => {
  const h = makeHarness();
  await h.sandboxes.create(sandboxInput("sb1"));
  h.endpoint.failOpen = new InternalError("socket path too long");
  await assert.rejects(h.sandboxes.start("sb1"), /socket path too long/);
  assert.deepEqual(h.backend.ops(), ["create", "start", "stop"]);
  assert.equal(h.store.load("sb1")!.pid, 0);
  assert.equal(h.sandboxes.status("sb1", false).state, "SANDBOX_NOTREADY");
});

Deno.test("Platform reports the backend's platform; unknown ids are NOT_FOUND", async () => {
  const h = makeHarness();
  await h.sandboxes.create(sandboxInput("sb1"));
  assert.deepEqual(h.sandboxes.platform("sb1"), {
    os: "linux",
    architecture: "amd64",
    variant: "",
  });
  assert.throws(() => h.sandboxes.platform("nope"), NotFoundError);
});

// ------------------------------------------------------------------ Stop and Wait

Deno.test("Stop of an unknown id succeeds and does nothing", async () => {
  const h = makeHarness();
  await h.sandboxes.stop("never-created", 0);
  await h.sandboxes.stop("never-created", 5);
  assert.deepEqual(h.backend.calls, []);
});

Deno.test("Stop of a malformed id is INVALID_ARGUMENT", async () => {
  const h = makeHarness();
  await assert.rejects(h.sandboxes.stop("a/b", 0), InvalidArgumentError);
});

Deno.test("Stop of a created sandbox marks it stopped without the backend", async () => {
  const h = makeHarness();
  await h.sandboxes.create(sandboxInput("sb1"));
  await h.sandboxes.stop("sb1", 0);
  assert.deepEqual(h.backend.ops(), ["create"]);
  const exit = await h.sandboxes.wait("sb1");
  assert.equal(exit.status, 0);
  assert.equal(h.store.load("sb1")!.state, "stopped");
  await assert.rejects(h.sandboxes.start("sb1"), FailedPreconditionError);
});

Deno.test("Stop sends SIGTERM, then SIGKILL to all processes after the timeout", async () => {
  const h = makeHarness({ defaultStopTimeoutMs: 20 });
  await runningSandbox(h, "sb1");
  await runningContainer(h, "sb1", "c1");
  // Only SIGKILL makes the fake processes exit: SIGTERM is ignored.
  await h.sandboxes.stop("sb1", 0);
  const kills = h.runtime.callsOf("kill").map((k) => [k.containerId, k.signal, k.all]);
  assert.deepEqual(kills, [["c1", 15, false], ["c1", 9, true]]);
  assert.deepEqual(h.backend.calls.at(-1), { op: "stop", sandboxId: "sb1", timeoutMs: 20 });
  assert.equal(h.tasks.state("sb1", "c1", "").state, "stopped");
  assert.equal(h.tasks.state("sb1", "c1", "").exitStatus, 137);
  const st = h.sandboxes.status("sb1", false);
  assert.equal(st.state, "SANDBOX_NOTREADY");
  assert.equal(st.pid, 0);
  assert.ok(st.exitedAt);
});

Deno.test("Stop does not send SIGKILL when processes exit on SIGTERM", async () => {
  const h = makeHarness();
  h.runtime.exitOnSignals.add(15);
  await runningSandbox(h, "sb1");
  await runningContainer(h, "sb1", "c1");
  await runningContainer(h, "sb1", "c2");
  // A 30 s grace: the test finishes at once because the processes exit on SIGTERM.
  await h.sandboxes.stop("sb1", 30);
  const kills = h.runtime.callsOf("kill").map((k) => [k.containerId, k.signal, k.all]);
  assert.deepEqual(kills, [["c1", 15, false], ["c2", 15, false]]);
  assert.deepEqual(h.backend.calls.at(-1), { op: "stop", sandboxId: "sb1", timeoutMs: 30_000 });
  assert.equal(h.tasks.state("sb1", "c2", "").exitStatus, 143);
});

Deno.test("Stop kills a created (never started) container with SIGKILL straight away", async () => {
  const h = makeHarness();
  await runningSandbox(h, "sb1");
  await h.tasks.create("sb1", "k8s.io", taskInput("c1"));
  await h.sandboxes.stop("sb1", 0);
  const kills = h.runtime.callsOf("kill").map((k) => [k.containerId, k.signal, k.all]);
  assert.deepEqual(kills, [["c1", 9, false]]);
});

Deno.test("Stop leaves already stopped containers alone", async () => {
  const h = makeHarness();
  await runningSandbox(h, "sb1");
  await runningContainer(h, "sb1", "c1");
  h.runtime.exit("sb1", "c1", undefined, 0);
  await h.sandboxes.stop("sb1", 0);
  assert.deepEqual(h.runtime.callsOf("kill"), []);
  assert.deepEqual(h.backend.ops(), ["create", "start", "stop"]);
});

Deno.test("Wait resolves with the exit once the sandbox is stopped, not before", async () => {
  const h = makeHarness();
  h.backend.stopStatus = 143;
  await runningSandbox(h, "sb1");
  const w = h.sandboxes.wait("sb1");
  assert.equal(await isSettled(w), false);
  await h.sandboxes.stop("sb1", 0);
  const exit = await w;
  assert.equal(exit.status, 143);
  assert.deepEqual(exit.at, h.sandboxes.status("sb1", false).exitedAt);
  // Later waits answer at once with the same exit.
  assert.deepEqual(await h.sandboxes.wait("sb1"), exit);
});

Deno.test("a second Stop is a no-op", async () => {
  const h = makeHarness();
  await runningSandbox(h, "sb1");
  await h.sandboxes.stop("sb1", 0);
  const calls = h.backend.calls.length;
  await h.sandboxes.stop("sb1", 0);
  assert.equal(h.backend.calls.length, calls);
});

Deno.test("Wait of an unknown id is NOT_FOUND; an aborted Wait rejects", async () => {
  const h = makeHarness();
  await assert.rejects(h.sandboxes.wait("nope"), NotFoundError);
  await runningSandbox(h, "sb1");
  const ac = new AbortController();
  const w = h.sandboxes.wait("sb1", ac.signal);
  ac.abort(new Error("cancelled"));
  await assert.rejects(w, /cancelled/);
  assert.equal(h.sandboxes.status("sb1", false).state, "SANDBOX_READY");
});

// ------------------------------------------------------------------ Status

Deno.test("Status reports pid only while running and the exit time once stopped", async () => {
  const h = makeHarness();
  await h.sandboxes.create(sandboxInput("sb1"));
  let st = h.sandboxes.status("sb1", false);
  assert.deepEqual(
    { id: st.id, pid: st.pid, state: st.state, address: st.address, exitedAt: st.exitedAt },
    { id: "sb1", pid: 0, state: "SANDBOX_NOTREADY", address: "", exitedAt: undefined },
  );
  assert.deepEqual(st.info, {});
  const started = await h.sandboxes.start("sb1");
  st = h.sandboxes.status("sb1", false);
  assert.equal(st.pid, started.pid);
  assert.equal(st.state, "SANDBOX_READY");
  assert.equal(st.exitedAt, undefined);
  await h.sandboxes.stop("sb1", 0);
  st = h.sandboxes.status("sb1", false);
  assert.equal(st.pid, 0);
  assert.equal(st.state, "SANDBOX_NOTREADY");
  assert.ok(st.exitedAt);
  assert.equal(st.address, started.address, "the address stays known after stop");
});

Deno.test("verbose Status adds kind, netns, container count and scalar backend fields", async () => {
  const h = makeHarness();
  await runningSandbox(h, "sb1");
  await h.tasks.create("sb1", "k8s.io", taskInput("c1"));
  const sb = h.registry.get("sb1");
  Object.assign(sb.backend, { nested: { x: 1 }, flag: true });
  const st = h.sandboxes.status("sb1", true);
  assert.deepEqual(st.info, {
    kind: "fake",
    netns: "/var/run/netns/cni-sb1",
    containers: "1",
    cgroup: "/fake/sb1",
    holderPid: String(sb.pid),
    lifecycle: "running",
  });
});

Deno.test("Status of an unknown id is NOT_FOUND", () => {
  const h = makeHarness();
  assert.throws(() => h.sandboxes.status("nope", false), NotFoundError);
});

// ------------------------------------------------------------------ Shutdown

Deno.test("Shutdown deletes containers, closes the endpoint and removes the record", async () => {
  const h = makeHarness();
  await runningSandbox(h, "sb1");
  await runningContainer(h, "sb1", "c1");
  await h.tasks.exec("sb1", "c1", "e1", io(), { args: ["sh"] });
  await h.tasks.start("sb1", "c1", "e1");
  await runningContainer(h, "sb1", "c2");
  h.runtime.exit("sb1", "c2", undefined, 0);
  const w = h.sandboxes.wait("sb1");
  await h.sandboxes.shutdown("sb1");
  // Live containers get SIGKILL at once (no grace), then the boundary goes.
  const kills = h.runtime.callsOf("kill").map((k) => [k.containerId, k.signal, k.all]);
  assert.deepEqual(kills, [["c1", 9, true]]);
  assert.deepEqual(
    h.runtime.calls.filter((c) => c.op === "delete" || c.op === "deleteExec").map((
      c,
    ) => [c.op, c.containerId, c.execId]),
    [["deleteExec", "c1", "e1"], ["delete", "c1", undefined], ["delete", "c2", undefined]],
  );
  assert.deepEqual(h.backend.ops().slice(2), ["stop", "cleanup"]);
  assert.deepEqual(h.backend.calls.find((c) => c.op === "stop"), {
    op: "stop",
    sandboxId: "sb1",
    timeoutMs: 0,
  });
  assert.equal(h.endpoint.serving.has("sb1"), false);
  assert.equal(h.store.dirs.has("sb1"), false);
  assert.equal(h.store.saved.has("sb1"), false);
  assert.equal(h.registry.has("sb1"), false);
  assert.equal(h.registry.sandboxOfContainer("c1"), undefined);
  assert.equal((await w).status, 137);
  assert.throws(() => h.sandboxes.status("sb1", false), NotFoundError);
  await assert.rejects(h.sandboxes.wait("sb1"), NotFoundError);
});

Deno.test("Shutdown of a stopped sandbox only releases resources", async () => {
  const h = makeHarness();
  await runningSandbox(h, "sb1");
  await h.sandboxes.stop("sb1", 0);
  const stops = h.backend.ops().filter((o) => o === "stop").length;
  await h.sandboxes.shutdown("sb1");
  assert.equal(h.backend.ops().filter((o) => o === "stop").length, stops);
  assert.equal(h.backend.ops().at(-1), "cleanup");
  assert.equal(h.store.dirs.size, 0);
});

Deno.test("Shutdown of a created sandbox releases it and wakes waiters", async () => {
  const h = makeHarness();
  await h.sandboxes.create(sandboxInput("sb1"));
  const w = h.sandboxes.wait("sb1");
  await h.sandboxes.shutdown("sb1");
  assert.deepEqual(h.backend.ops(), ["create", "cleanup"]);
  assert.equal((await w).status, 0);
  assert.equal(h.store.dirs.size, 0);
});

Deno.test("Shutdown of an unknown id succeeds; the id can be created again afterwards", async () => {
  const h = makeHarness();
  await h.sandboxes.shutdown("nope");
  assert.deepEqual(h.backend.calls, []);
  await runningSandbox(h, "sb1");
  await h.sandboxes.shutdown("sb1");
  await h.sandboxes.shutdown("sb1");
  await runningSandbox(h, "sb1");
  assert.equal(h.sandboxes.status("sb1", false).state, "SANDBOX_READY");
});

Deno.test("after Shutdown a container id of the removed pod can be reused in another pod", async () => {
  const h = makeHarness();
  await runningSandbox(h, "sb1");
  await runningSandbox(h, "sb2");
  await runningContainer(h, "sb1", "c1");
  await assert.rejects(h.tasks.create("sb2", "k8s.io", taskInput("c1")), AlreadyExistsError);
  await h.sandboxes.shutdown("sb1");
  await h.tasks.create("sb2", "k8s.io", taskInput("c1"));
});

// ------------------------------------------------------------------ Metrics

Deno.test("Metrics returns the backend's data for the sandbox", async () => {
  const h = makeHarness();
  await runningSandbox(h, "sb1");
  const m = await h.sandboxes.metrics("sb1");
  assert.equal(m.id, "sb1");
  assert.deepEqual(m.data, h.backend.metricsData);
  assert.ok(m.timestamp.seconds > 0);
  await assert.rejects(h.sandboxes.metrics("nope"), NotFoundError);
});

// ------------------------------------------------------------------ Update

Deno.test("Update of extensions.tasks without a tasks extension is INVALID_ARGUMENT", async () => {
  const h = makeHarness();
  await runningSandbox(h, "sb1");
  await assert.rejects(
    h.sandboxes.update("sb1", { fields: ["extensions.tasks"], labels: {}, extensions: {} }),
    InvalidArgumentError,
  );
  await assert.rejects(
    h.sandboxes.update("sb1", {
      fields: ["extensions.tasks"],
      labels: {},
      extensions: { other: tasksAny({ tasks: [] }) },
    }),
    InvalidArgumentError,
  );
  assert.equal(h.registry.get("sb1").extensions.tasks, undefined);
});

Deno.test("Update of extensions.tasks with broken JSON or a bad shape is INVALID_ARGUMENT", async () => {
  const h = makeHarness();
  await runningSandbox(h, "sb1");
  for (const any of [tasksAnyText("{not json"), tasksAnyText(""), tasksAny({ tasks: [{}] })]) {
    await assert.rejects(
      h.sandboxes.update("sb1", {
        fields: ["extensions.tasks"],
        labels: {},
        extensions: { tasks: any },
      }),
      InvalidArgumentError,
    );
  }
  assert.equal(h.registry.get("sb1").extensions.tasks, undefined);
  assert.equal(h.store.load("sb1")!.extensions.tasks, undefined);
});

Deno.test("Update of extensions.tasks with valid JSON stores the document, and later updates diff against it", async () => {
  const h = makeHarness();
  await runningSandbox(h, "sb1");
  const first = tasksAny({ tasks: [{ task_id: "c1" }] });
  await h.sandboxes.update("sb1", {
    fields: ["extensions.tasks"],
    labels: { ignored: "yes" },
    extensions: { tasks: first },
  });
  assert.deepEqual(h.registry.get("sb1").extensions.tasks, first);
  assert.deepEqual(h.store.load("sb1")!.extensions.tasks, first);
  assert.deepEqual(h.registry.get("sb1").labels, { app: "test" }, "labels not in fields");
  const second = tasksAny({ tasks: [{ task_id: "c1", processes: [{ exec_id: "e1" }] }] });
  await h.sandboxes.update("sb1", {
    fields: ["extensions.tasks"],
    labels: {},
    extensions: { tasks: second },
  });
  assert.deepEqual(h.store.load("sb1")!.extensions.tasks, second);
});

Deno.test("an exec withdrawn from extensions.tasks without Task.Delete (iSulad) is forgotten once it ended", async () => {
  const h = makeHarness();
  await runningSandbox(h, "sb1");
  await runningContainer(h, "sb1", "c1");
  const update = (doc: unknown) =>
    h.sandboxes.update("sb1", {
      fields: ["extensions.tasks"],
      labels: {},
      extensions: { tasks: tasksAny(doc) },
    });
  const execs = (ids: string[]) => ({
    tasks: [{ task_id: "c1", processes: ids.map((exec_id) => ({ exec_id })) }],
  });
  await update(execs(["e1", "e2"]));
  for (const e of ["e1", "e2"]) {
    await h.tasks.exec("sb1", "c1", e, io(), { args: ["ls"] });
    await h.tasks.start("sb1", "c1", e);
  }
  h.runtime.exit("sb1", "c1", "e1", 0);
  // e1 ended and is withdrawn: its record goes. e2 still runs: it stays, and still answers.
  await update(execs([]));
  const c = h.registry.get("sb1").containers.c1;
  assert.deepEqual(Object.keys(c.execs), ["e2"]);
  assert.deepEqual(Object.keys(h.store.load("sb1")!.containers.c1.execs), ["e2"]);
  assert.deepEqual(
    h.runtime.calls.filter((x) => x.op === "deleteExec").map((x) => x.execId),
    ["e1"],
  );
  await assert.rejects(h.tasks.delete("sb1", "c1", "e1"), NotFoundError);
});

Deno.test("Update of labels replaces them; of extensions merges them; other fields are ignored", async () => {
  const h = makeHarness();
  await h.sandboxes.create(sandboxInput("sb1", { extensions: { a: { typeUrl: "a", value: "" } } }));
  await h.sandboxes.update("sb1", {
    fields: ["labels"],
    labels: { new: "1" },
    extensions: { b: { typeUrl: "b", value: "" } },
  });
  assert.deepEqual(h.store.load("sb1")!.labels, { new: "1" });
  assert.deepEqual(Object.keys(h.store.load("sb1")!.extensions), ["a"]);
  await h.sandboxes.update("sb1", {
    fields: ["extensions"],
    labels: {},
    extensions: { b: { typeUrl: "b", value: "" } },
  });
  assert.deepEqual(Object.keys(h.store.load("sb1")!.extensions).sort(), ["a", "b"]);
  assert.deepEqual(h.store.load("sb1")!.labels, { new: "1" });
  await h.sandboxes.update("sb1", { fields: ["spec", "runtime"], labels: {}, extensions: {} });
  assert.deepEqual(h.store.load("sb1")!.labels, { new: "1" });
});

Deno.test("Update of an unknown sandbox is NOT_FOUND", async () => {
  const h = makeHarness();
  await assert.rejects(
    h.sandboxes.update("nope", { fields: ["labels"], labels: {}, extensions: {} }),
    NotFoundError,
  );
});

// ------------------------------------------------------------------ exits reported by the backend

Deno.test("a sandbox exit reported by the backend stops it and kills its containers", async () => {
  const h = makeHarness();
  await runningSandbox(h, "sb1");
  await runningContainer(h, "sb1", "c1");
  const w = h.sandboxes.wait("sb1");
  const exit = h.backend.exit("sb1", 9);
  assert.deepEqual(await w, exit);
  const st = h.sandboxes.status("sb1", false);
  assert.equal(st.state, "SANDBOX_NOTREADY");
  assert.equal(st.pid, 0);
  const c = await h.tasks.wait("sb1", "c1", "");
  assert.equal(c.exitStatus, 137);
  assert.deepEqual(
    h.runtime.callsOf("kill").map((k) => [k.containerId, k.signal, k.all]),
    [["c1", 9, true]],
  );
  await h.registry.flushSaves("sb1");
  assert.equal(h.store.load("sb1")!.state, "stopped");
  assert.equal(h.store.load("sb1")!.exit!.status, 9);
  // Stop afterwards is a no-op.
  await h.sandboxes.stop("sb1", 0);
  assert.equal(h.backend.ops().includes("stop"), false);
});

Deno.test("a sandbox exit for a created or unknown sandbox is ignored", async () => {
  const h = makeHarness();
  await h.sandboxes.create(sandboxInput("sb1"));
  h.backend.exit("sb1", 1);
  h.backend.exit("other", 1);
  assert.equal(h.registry.get("sb1").state, "created");
  await h.sandboxes.start("sb1");
});

// ------------------------------------------------------------------ recovery

Deno.test("recover adopts a live running sandbox and serves its Task API again", async () => {
  const h1 = makeHarness();
  await runningSandbox(h1, "sb1");
  const before = h1.sandboxes.status("sb1", false);
  const h2 = makeHarness({ store: h1.store.crashClone() });
  const summary = await h2.sandboxes.recover();
  assert.deepEqual({ ...summary, millis: 0 }, {
    total: 1,
    running: 1,
    stopped: 0,
    failed: 0,
    millis: 0,
  });
  assert.deepEqual(h2.backend.ops(), ["recover"]);
  assert.ok(h2.endpoint.serving.has("sb1"));
  const after = h2.sandboxes.status("sb1", false);
  assert.deepEqual(after, before);
  const w = h2.sandboxes.wait("sb1");
  assert.equal(await isSettled(w), false);
  await h2.sandboxes.stop("sb1", 0);
  await w;
});

Deno.test("recover marks a running sandbox stopped when the backend says it is not alive", async () => {
  const h1 = makeHarness();
  await runningSandbox(h1, "sb1");
  const h2 = makeHarness({ store: h1.store.crashClone() });
  const exit = { status: 137, at: now() };
  h2.backend.recoverResults.set("sb1", { alive: false, exit });
  const summary = await h2.sandboxes.recover();
  assert.equal(summary.stopped, 1);
  assert.equal(summary.running, 0);
  const st = h2.sandboxes.status("sb1", false);
  assert.equal(st.state, "SANDBOX_NOTREADY");
  assert.equal(st.pid, 0);
  assert.deepEqual(st.exitedAt, exit.at);
  assert.deepEqual(await h2.sandboxes.wait("sb1"), exit);
  assert.equal(h2.store.load("sb1")!.state, "stopped");
  assert.equal(h2.endpoint.serving.has("sb1"), false, "nothing to serve for a dead, empty pod");
  await h2.sandboxes.shutdown("sb1");
  assert.equal(h2.store.dirs.size, 0);
});

Deno.test("recover keeps created and stopped sandboxes as they were", async () => {
  const h1 = makeHarness();
  await h1.sandboxes.create(sandboxInput("created1"));
  await runningSandbox(h1, "stopped1");
  await h1.sandboxes.stop("stopped1", 0);
  const h2 = makeHarness({ store: h1.store.crashClone() });
  const summary = await h2.sandboxes.recover();
  assert.equal(summary.total, 2);
  assert.equal(summary.stopped, 2);
  assert.equal(h2.registry.get("created1").state, "created");
  assert.equal(h2.registry.get("stopped1").state, "stopped");
  assert.equal((await h2.sandboxes.wait("stopped1")).status, 137);
  await h2.sandboxes.start("created1");
  assert.equal(h2.endpoint.serving.size, 1);
});

Deno.test("recover removes unreadable records and counts failures", async () => {
  const h1 = makeHarness();
  await runningSandbox(h1, "good");
  await runningSandbox(h1, "bad");
  const store = h1.store.crashClone();
  store.putRaw("torn", '{"id":');
  const h2 = makeHarness({ store });
  h2.backend.failures.recover = new Error("cannot read holder");
  const summary = await h2.sandboxes.recover();
  assert.equal(summary.total, 2);
  assert.equal(summary.failed, 2);
  assert.equal(store.dirs.has("torn"), false);
  assert.ok(store.dirs.has("good"), "a record that failed to recover is kept on disk");
});

Deno.test("recover of an empty store reports nothing", async () => {
  const h = makeHarness();
  const s = await h.sandboxes.recover();
  assert.deepEqual({ ...s, millis: 0 }, { total: 0, running: 0, stopped: 0, failed: 0, millis: 0 });
});

// ------------------------------------------------------------------ API contract

Deno.test({
  name: "Create with a malformed id returns a rejected promise rather than throwing",
  fn: () => {
    const h = makeHarness();
    let p: Promise<void> | undefined;
    assert.doesNotThrow(() => {
      p = h.sandboxes.create(sandboxInput("a/b"));
    });
    return assert.rejects(p!, InvalidArgumentError);
  },
});

Deno.test({
  name: "a sandbox exit reported while Start is under way is not lost",
  fn: async () => {
    const h = makeHarness();
    await h.sandboxes.create(sandboxInput("sb1"));
    h.backend.hooks.start = (r) => void h.backend.exit(r.id, 1);
    await h.sandboxes.start("sb1").catch(() => {});
    assert.equal(h.sandboxes.status("sb1", false).state, "SANDBOX_NOTREADY");
    assert.equal(await isSettled(h.sandboxes.wait("sb1")), true);
  },
});

// ------------------------------------------------------------------ created, never started

/** Resolves once `probe` holds (checked every few ms); fails the test after 5 s. */
async function eventually(probe: () => boolean): Promise<void> {
  for (let i = 0; i < 1000 && !probe(); i++) await new Promise((r) => setTimeout(r, 5));
  assert.ok(probe(), "condition never held");
}

Deno.test("a sandbox created and never started is shut down after the grace; a started one is kept", async () => {
  const h = makeHarness({ createdSandboxTimeoutMs: 30 });
  await h.sandboxes.create(sandboxInput("lost"));
  await runningSandbox(h, "kept");
  const info = h.sandboxes.status("lost", true).info;
  assert.equal(info.lifecycle, "created");
  assert.ok(info.shutdownUnlessStartedAt, "Status tells when it goes");
  await eventually(() => !h.registry.has("lost"));
  assert.equal(h.store.load("lost"), undefined, "its record is gone");
  assert.ok(h.backend.calls.some((c) => c.op === "cleanup" && c.sandboxId === "lost"));
  await new Promise((r) => setTimeout(r, 60));
  assert.equal(h.sandboxes.status("kept", true).info.lifecycle, "running");
  assert.equal(h.sandboxes.status("kept", true).info.shutdownUnlessStartedAt, undefined);
  h.sandboxes.close();
});

Deno.test("a created sandbox found by recovery gets the grace again; without one it stays", async () => {
  const h1 = makeHarness();
  await h1.sandboxes.create(sandboxInput("lost"));
  const kept = makeHarness({ store: h1.store.crashClone() });
  await kept.sandboxes.recover();
  await new Promise((r) => setTimeout(r, 30));
  assert.ok(kept.registry.has("lost"), "no grace configured: kept");
  const h2 = makeHarness({ store: h1.store.crashClone(), createdSandboxTimeoutMs: 20 });
  await h2.sandboxes.recover();
  await eventually(() => !h2.registry.has("lost"));
  h2.sandboxes.close();
});
