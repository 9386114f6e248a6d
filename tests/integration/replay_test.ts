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
