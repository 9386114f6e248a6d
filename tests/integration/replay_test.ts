/**
 * A Task API call in flight when the daemon is SIGKILLed is replayed by the
 * task relay to the restarted daemon; the client must then get the truthful
 * outcome of its one call: Create answered OK ⇔ the container exists, Start
 * answered OK ⇔ the process was started. The daemon is killed at the moment
 * the call is under way (the unfinished Create on disk, the container's
 * process exec'd), or after a random delay within a call's usual duration.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { K8S_NS, taskClient, TestDaemon, withDaemon } from "../support/daemon.ts";
import { createContainer, prepareContainer, randomId, startPod } from "../support/pod.ts";
import { runcUnavailable, skipUnless } from "../support/env.ts";
import { assertShutdownLeavesNothing } from "../support/leaks.ts";
import { buildWasmModules, prepareWasmContainer, wasmToolsUnavailable } from "../support/wasm.ts";
import { Code } from "../../src/domain/errors.ts";
import { encodeFrame, FrameDecoder, MessageType } from "../../src/adapters/ttrpc/frame.ts";
import { Request, Response } from "../../src/gen/ttrpc/request.ts";
import { StartRequest } from "../../src/gen/containerd/runtime/task/v3/shim.ts";

const ROUNDS = 10;

type Outcome<T> = { ok: true; value: T } | { ok: false; error: unknown };

/** Polls `probe` until it holds (a crash moment); false if it never did within `ms`. */
async function until(probe: () => Promise<boolean>, ms = 20_000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await probe()) return true;
    await new Promise((r) => setTimeout(r, 1));
  }
  return false;
}

/** SIGKILLs the daemon once `moment` resolves while `call` is in flight, restarts it, and returns what the client got. */
async function crashDuring<T>(
  d: TestDaemon,
  call: Promise<T>,
  moment: Promise<unknown>,
): Promise<Outcome<T>> {
  const outcome = call.then(
    (value): Outcome<T> => ({ ok: true, value }),
    (error): Outcome<T> => ({ ok: false, error }),
  );
  await moment;
  await d.kill9();
  await d.spawn();
  return await outcome;
}

/** The pod's record on disk mentions an unfinished Create of `id`. */
async function createPending(d: TestDaemon, podId: string, id: string): Promise<boolean> {
  const text = await Deno.readTextFile(join(d.dir, podId, "sandbox.json")).catch(() => "");
  const c = text ? JSON.parse(text).record?.containers?.[id] : undefined;
  return c?.pending === "create";
}

/** Task.State of container `id`: its status, or NOT_FOUND. */
async function stateOf(address: string, id: string): Promise<number | "NOT_FOUND"> {
  const t = await taskClient(address);
  try {
    return (await t.task.state({ id, execId: "" }, K8S_NS)).status;
  } catch (e) {
    if ((e as { code?: number }).code === Code.NOT_FOUND) return "NOT_FOUND";
    throw e;
  } finally {
    t.close();
  }
}

const CREATED = 1, RUNNING = 2, STOPPED = 3;

function describe(o: Outcome<unknown>): string {
  return o.ok ? `OK ${JSON.stringify(o.value)}` : `error ${(o.error as Error).message}`;
}

Deno.test({
  name: "runC: a Task.Create and a Task.Start cut by SIGKILL get their true outcome after recovery",
  ...skipUnless(runcUnavailable(), "runC replay"),
  fn: () =>
    withDaemon(async (d) => {
      const pod = await startPod(d);
      const wrong: string[] = [];
      const ids: string[] = [];
      for (let round = 0; round < ROUNDS; round++) {
        // Create: killed while the record says it is under way (odd rounds: at a random moment).
        const id = randomId();
        ids.push(id);
        const req = await prepareContainer(d, pod, { args: ["sleep", "1000"] }, id);
        const t = await taskClient(pod.address);
        const call = t.task.create(req, K8S_NS);
        const moment = round % 2
          ? new Promise((r) => setTimeout(r, Math.random() * 300))
          : until(() => createPending(d, pod.id, id));
        const created = await crashDuring(d, call, moment);
        t.close();
        const state = await stateOf(pod.address, id);
        if (created.ok !== (state !== "NOT_FOUND")) {
          wrong.push(`create round ${round}: ${describe(created)} but State ${state}`);
        }
        if (!created.ok) continue;
        // Start: killed once the container's process replaced `runc init`.
        const pid = (created as { value: { pid: number } }).value.pid;
        const s = await taskClient(pod.address);
        const started = await crashDuring(
          d,
          s.task.start({ id, execId: "" }, K8S_NS),
          until(async () =>
            !(await Deno.readTextFile(`/proc/${pid}/cmdline`).catch(() => "")).includes("init")
          ),
        );
        s.close();
        const after = await stateOf(pod.address, id);
        // What really runs: `runc init` until started, then the container's command.
        const runs = !(await Deno.readTextFile(`/proc/${pid}/cmdline`)).includes("init");
        const truthful = started.ok ? after === RUNNING && runs : after === CREATED && !runs;
        if (!truthful) {
          wrong.push(
            `start round ${round}: ${describe(started)} but State ${after}, process ${
              runs ? "started" : "not started"
            }`,
          );
        }
      }
      assert.deepEqual(wrong, [], "every client got the true outcome of its call");
      // The idempotent answers are for replays only: a client's second Create/Start is refused.
      const last = ids.at(-1)!;
      if (await stateOf(pod.address, last) === RUNNING) {
        const t = await taskClient(pod.address);
        await assert.rejects(t.task.start({ id: last, execId: "" }, K8S_NS), /running/);
        t.close();
      }
      const c = await createContainer(d, pod, { args: ["true"] });
      const t = await taskClient(pod.address);
      await assert.rejects(
        t.task.create(await prepareContainer(d, pod, { args: ["true"] }, c.id), K8S_NS),
        /already exists/,
      );
      t.close();
      await assertShutdownLeavesNothing(d, [pod.id]);
    }),
});

Deno.test({
  name: "wasm: a Task.Create and a Task.Start cut by SIGKILL get their true outcome after recovery",
  ...skipUnless(
    Deno.uid() !== 0 ? "needs root (overlay mounts)" : wasmToolsUnavailable(),
    "Wasm replay",
  ),
  fn: () =>
    withDaemon(async (d) => {
      const modules = await buildWasmModules();
      const pod = await startPod(d);
      const wrong: string[] = [];
      for (let round = 0; round < ROUNDS; round++) {
        const id = randomId();
        const req = await prepareWasmContainer(d, pod, modules, { module: "loop" }, id);
        const t = await taskClient(pod.address);
        const moment = round % 2
          ? new Promise((r) => setTimeout(r, Math.random() * 50))
          : until(() => createPending(d, pod.id, id));
        const created = await crashDuring(d, t.task.create(req, K8S_NS), moment);
        t.close();
        const state = await stateOf(pod.address, id);
        if (created.ok !== (state !== "NOT_FOUND")) {
          wrong.push(`create round ${round}: ${describe(created)} but State ${state}`);
        }
        if (!created.ok) continue;
        // A Start is quick: the kill lands before, during or after it.
        const s = await taskClient(pod.address);
        const started = await crashDuring(
          d,
          s.task.start({ id, execId: "" }, K8S_NS),
          new Promise((r) => setTimeout(r, Math.random() * 20)),
        );
        s.close();
        const after = await stateOf(pod.address, id);
        const truthful = started.ok ? after === RUNNING || after === STOPPED : after === CREATED;
        if (!truthful) wrong.push(`start round ${round}: ${describe(started)} but State ${after}`);
      }
      assert.deepEqual(wrong, [], "every client got the true outcome of its call");
      await assertShutdownLeavesNothing(d, [pod.id]);
    }, () => TestDaemon.start({ kind: "wasm" })),
});

// Only the relay marks replays: a client's own `kuasar-replay` must not make
// the daemon answer a repeated call as if it were one.
const FORGED = { metadata: { ...K8S_NS.metadata, "kuasar-replay": "1" } };

/** Field 5 of a ttrpc Request (one metadata entry), encoded. */
function entry(key: string, value: string): Uint8Array {
  return Request.encode({
    service: "",
    method: "",
    payload: new Uint8Array(),
    timeoutNano: 0n,
    metadata: [{ key, value }],
  })
    .finish();
}

/**
 * One Task call written as raw bytes, its Request's metadata ending with
 * `tail` (entries the typed client cannot send); returns the status code.
 */
async function rawCall(
  address: string,
  method: string,
  payload: Uint8Array,
  tail: Uint8Array,
): Promise<number> {
  const head = Request.encode({
    service: "containerd.task.v3.Task",
    method,
    payload,
    timeoutNano: 0n,
    metadata: Object.entries(K8S_NS.metadata).map(([key, value]) => ({ key, value })),
  }).finish();
  const body = new Uint8Array(head.length + tail.length);
  body.set(head);
  body.set(tail, head.length);
  const conn = await Deno.connect({
    transport: "unix",
    path: address.replace("ttrpc+unix://", ""),
  });
  try {
    const frame = encodeFrame(1, MessageType.REQUEST, 0, body);
    for (let at = 0; at < frame.length;) at += await conn.write(frame.subarray(at));
    const frames = new FrameDecoder();
    const buf = new Uint8Array(65536);
    for (;;) {
      const f = frames.next();
      if (f?.kind === "frame") return Response.decode(f.frame.payload).status?.code ?? Code.OK;
      const n = await conn.read(buf);
      if (n === null) throw new Error("the relay closed the connection without an answer");
      frames.push(buf.subarray(0, n));
    }
  } finally {
    conn.close();
  }
}

Deno.test({
  name: "runC: a kuasar-replay mark sent by a client is not honoured",
  ...skipUnless(runcUnavailable(), "runC replay"),
  fn: () =>
    withDaemon(async (d) => {
      const pod = await startPod(d);
      const t = await taskClient(pod.address);
      const stopped = await createContainer(d, pod, { args: ["true"] });
      const exited = t.task.wait({ id: stopped.id, execId: "" }, K8S_NS);
      await t.task.start({ id: stopped.id, execId: "" }, K8S_NS);
      await exited;
      const startStopped = StartRequest.encode({ id: stopped.id, execId: "" }).finish();
      const codeOf = (p: Promise<unknown>) =>
        p.then(() => Code.OK, (e) => (e as { code?: number }).code);
      await assert.rejects(t.task.start({ id: stopped.id, execId: "" }, FORGED), {
        code: Code.FAILED_PRECONDITION,
      });
      await assert.rejects(
        t.task.kill({ id: stopped.id, execId: "", signal: 15, all: false }, FORGED),
        { code: Code.NOT_FOUND },
      );
      const req = await prepareContainer(d, pod, { args: ["sleep", "100"] });
      await t.task.create(req, K8S_NS);
      await assert.rejects(t.task.create(req, FORGED), { code: Code.ALREADY_EXISTS });
      // Entries the daemon's decoder reads as the mark however they are spelled
      // or hidden: other cases, a KELVIN SIGN for the "k", a "0" before the
      // "1", and one inside another entry that ends at a zero tag (the decoder
      // then reads on from there).
      const hidden = [...entry("x", "").subarray(2), 0, ...entry("kuasar-replay", "1")];
      const tails: Record<string, Uint8Array> = {
        "upper case": entry("KUASAR-Replay", "1"),
        "kelvin sign": entry("\u212auasar-replay", "1"),
        "0 then 1": new Uint8Array([
          ...entry("kuasar-replay", "0"),
          ...entry("kuasar-replay", "1"),
        ]),
        "hidden": new Uint8Array([0x2a, hidden.length, ...hidden]),
      };
      const wrong: string[] = [];
      for (const [name, tail] of Object.entries(tails)) {
        const code = await rawCall(pod.address, "Start", startStopped, tail);
        if (code !== Code.FAILED_PRECONDITION) wrong.push(`${name}: code ${code}`);
      }
      assert.deepEqual(wrong, [], "every forged mark is refused like a plain second Start");
      assert.equal(await codeOf(t.task.start({ id: req.id, execId: "" }, K8S_NS)), Code.OK);
      await t.task.kill({ id: req.id, execId: "", signal: 9, all: false }, K8S_NS);
      t.close();
      await assertShutdownLeavesNothing(d, [pod.id]);
    }),
});
