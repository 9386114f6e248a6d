import assert from "node:assert/strict";
import {
  makeHarness,
  runningContainer,
  runningSandbox,
  sandboxInput,
} from "../../../tests/fakes/harness.ts";
import { Code, InvalidArgumentError, UnimplementedError } from "../../domain/errors.ts";
import {
  PlatformRequest,
  PlatformResponse,
  SandboxDefinition,
  SandboxStatusRequest,
  SandboxStatusResponse,
  ShutdownSandboxRequest,
} from "../../gen/containerd/runtime/sandbox/v1/sandbox.ts";
import { type CallContext, TtrpcServer } from "../ttrpc/server.ts";
import { registerShimSandboxService, shimRequests, type ShimSockets } from "./shim_mode.ts";

/** Records what shim mode asks of the pods' sockets. */
class FakeShimSockets implements ShimSockets {
  readonly calls: string[] = [];
  openShim(id: string): Promise<string> {
    this.calls.push(`open ${id}`);
    return Promise.resolve(`unix:///run/test/.s/${id}.task.sock`);
  }
  close(id: string): Promise<void> {
    this.calls.push(`close ${id}`);
    return Promise.resolve();
  }
  finishShimClose(id: string): void {
    this.calls.push(`finish ${id}`);
  }
}

const ID = "a".repeat(64);
const OTHER = "b".repeat(64);

/** A call on a connection that serves pod `scope`, as the ttrpc server makes it. */
function call(server: TtrpcServer, method: string, payload: Uint8Array, scope: string) {
  const m = server.lookup(SandboxDefinition.fullName, method);
  if (!("kind" in m) || m.kind !== "unary") throw new Error(`no unary ${method}`);
  const after: (() => void)[] = [];
  const ctx: CallContext = {
    service: SandboxDefinition.fullName,
    method,
    metadata: new Map(),
    signal: new AbortController().signal,
    scope,
    afterResponse: (fn) => after.push(fn),
  };
  return { result: m.handle(payload, ctx), answered: () => after.forEach((f) => f()) };
}

Deno.test("shim request start: the pod's socket before the pod, withdrawn if no pod follows", async () => {
  const h = makeHarness();
  const sockets = new FakeShimSockets();
  const answer = shimRequests(h.sandboxes, sockets, undefined, 20);
  assert.equal(await answer(["start", "k8s.io", ID]), `unix:///run/test/.s/${ID}.task.sock`);
  assert.deepEqual(sockets.calls, [`open ${ID}`]);
  await new Promise((r) => setTimeout(r, 40));
  assert.deepEqual(sockets.calls, [`open ${ID}`, `close ${ID}`]);

  // Created in time: kept.
  const kept = new FakeShimSockets();
  const answer2 = shimRequests(h.sandboxes, kept, undefined, 20);
  await answer2(["start", "k8s.io", OTHER]);
  await h.sandboxes.create(sandboxInput(OTHER));
  await new Promise((r) => setTimeout(r, 40));
  assert.deepEqual(kept.calls, [`open ${OTHER}`]);
  await h.sandboxes.shutdown(OTHER);
});

Deno.test("shim requests: malformed lines, bad ids and unknown verbs are refused", async () => {
  const h = makeHarness();
  const sockets = new FakeShimSockets();
  const answer = shimRequests(h.sandboxes, sockets, undefined, 20);
  await assert.rejects(answer(["start", "k8s.io"]), InvalidArgumentError);
  await assert.rejects(answer(["start", "k8s.io", ID, "extra"]), InvalidArgumentError);
  await assert.rejects(answer(["start", "k8s.io", "../../etc"]), InvalidArgumentError);
  await assert.rejects(answer(["start", "k8s.io", ""]), InvalidArgumentError);
  await assert.rejects(answer(["exec", "k8s.io", ID]), UnimplementedError);
  assert.deepEqual(sockets.calls, []);
});

Deno.test("shim request delete: removes a pod containerd gave up on; an unknown id is a no-op", async () => {
  const h = makeHarness();
  const answer = shimRequests(h.sandboxes, new FakeShimSockets(), undefined, 20);
  const [status, at] = (await answer(["delete", "k8s.io", ID])).split(" ").map(Number);
  assert.equal(status, 0);
  assert.ok(Math.abs(at - Date.now()) < 5000);

  await h.sandboxes.create(sandboxInput(ID));
  await h.sandboxes.start(ID);
  const [status2] = (await answer(["delete", "k8s.io", ID])).split(" ").map(Number);
  assert.equal(typeof status2, "number");
  assert.throws(() => h.sandboxes.status(ID, false), { name: "NotFoundError" });
});

Deno.test("shim request delete of a container: killed and removed, its pod kept", async () => {
  const h = makeHarness();
  const answer = shimRequests(h.sandboxes, new FakeShimSockets(), {
    sandboxOf: (cid) => h.registry.sandboxOfContainer(cid),
    tasks: h.tasks,
  }, 20);
  await runningSandbox(h, ID);
  await runningContainer(h, ID, "ctr");
  const [status, at] = (await answer(["delete", "k8s.io", "ctr"])).split(" ").map(Number);
  assert.equal(status, 137, "SIGKILLed");
  assert.ok(Math.abs(at - Date.now()) < 5000);
  assert.equal(h.registry.sandboxOfContainer("ctr"), undefined, "removed");
  assert.equal(h.sandboxes.status(ID, false).state, "SANDBOX_READY", "the pod stays");
  await h.sandboxes.shutdown(ID).catch(() => {});
});

Deno.test("shim Sandbox API: a connection serves its own pod only; Shutdown's connections go after the answer", async () => {
  const h = makeHarness();
  const sockets = new FakeShimSockets();
  const server = new TtrpcServer();
  registerShimSandboxService(server, h.sandboxes, sockets);
  await h.sandboxes.create(sandboxInput(ID));
  await h.sandboxes.start(ID);

  const own = call(
    server,
    "SandboxStatus",
    SandboxStatusRequest.encode({ sandboxId: ID, verbose: false }).finish(),
    ID,
  );
  const st = SandboxStatusResponse.decode(await own.result);
  assert.equal(st.state, "SANDBOX_READY");
  const p = PlatformResponse.decode(
    await call(server, "Platform", PlatformRequest.encode({ sandboxId: ID }).finish(), ID).result,
  );
  assert.equal(p.platform?.os, "linux");

  // A request naming another pod, on this pod's connection.
  await assert.rejects(
    call(
      server,
      "SandboxStatus",
      SandboxStatusRequest.encode({ sandboxId: OTHER, verbose: false }).finish(),
      ID,
    )
      .result,
    (e: Error & { code?: number }) =>
      e instanceof InvalidArgumentError && e.code === Code.INVALID_ARGUMENT,
  );
  await assert.rejects(
    call(
      server,
      "ShutdownSandbox",
      ShutdownSandboxRequest.encode({ sandboxId: ID }).finish(),
      OTHER,
    ).result,
    InvalidArgumentError,
  );
  assert.equal(h.sandboxes.status(ID, false).state, "SANDBOX_READY");

  const shut = call(
    server,
    "ShutdownSandbox",
    ShutdownSandboxRequest.encode({ sandboxId: ID }).finish(),
    ID,
  );
  await shut.result;
  assert.ok(!sockets.calls.includes(`finish ${ID}`), "not before the answer is out");
  shut.answered();
  assert.ok(sockets.calls.includes(`finish ${ID}`));
});
