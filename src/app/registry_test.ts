import assert from "node:assert/strict";
import { InvalidArgumentError, NotFoundError } from "../domain/errors.ts";
import type { SandboxRecord } from "../domain/sandbox.ts";
import type { ContainerRecord } from "../domain/task.ts";
import { now } from "../domain/time.ts";
import { MemorySandboxStore } from "../../tests/fakes/memory_sandbox_store.ts";
import { SandboxRegistry } from "./registry.ts";
import { containerRecord, sandboxRecord } from "../../tests/fakes/records.ts";

/** A store whose writes wait for the test to open the gate. */
class GatedStore extends MemorySandboxStore {
  gate: Promise<void> = Promise.resolve();
  /** Labels of each write, taken when the write starts (as the JSON store serialises). */
  writes: string[] = [];
  #started = deferred();
  /** Resolves once a write has started. */
  get started(): Promise<void> {
    return this.#started.promise;
  }
  override async save(record: SandboxRecord): Promise<void> {
    this.writes.push(JSON.stringify(record.labels));
    this.#started.resolve();
    await this.gate;
    await super.save(record);
  }
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

function record(id: string, over: Partial<SandboxRecord> = {}): SandboxRecord {
  return sandboxRecord(id, over);
}

function container(id: string, over: Partial<ContainerRecord> = {}): ContainerRecord {
  return containerRecord(id, over);
}

Deno.test("registry get/find validate the id and distinguish unknown ids", () => {
  const reg = new SandboxRegistry(new MemorySandboxStore());
  assert.throws(() => reg.get("a/b"), InvalidArgumentError);
  assert.throws(() => reg.find("a/b"), InvalidArgumentError);
  assert.throws(() => reg.get("sb1"), NotFoundError);
  assert.equal(reg.find("sb1"), undefined);
  const r = record("sb1");
  reg.add(r);
  assert.equal(reg.get("sb1"), r);
  assert.equal(reg.has("sb1"), true);
  assert.deepEqual(reg.all(), [r]);
});

Deno.test("registry add of a stopped record with an exit answers Wait at once", async () => {
  const reg = new SandboxRegistry(new MemorySandboxStore());
  const exit = { status: 3, at: now() };
  reg.add(record("sb1", { state: "stopped", exit }));
  assert.deepEqual(await reg.sandboxExit("sb1").wait(), exit);
  reg.add(record("sb2"));
  assert.equal(reg.sandboxExit("sb2").isSet, false);
});

Deno.test("registry add registers containers, execs and the exits already recorded", async () => {
  const reg = new SandboxRegistry(new MemorySandboxStore());
  const exit = { status: 1, at: now() };
  reg.add(record("sb1", {
    containers: {
      c1: container("c1", {
        execs: {
          e1: {
            id: "e1",
            io: container("x").io,
            spec: {},
            state: "stopped",
            pid: 5,
            exit,
            backend: {},
          },
          e2: { id: "e2", io: container("x").io, spec: {}, state: "running", pid: 6, backend: {} },
        },
      }),
      c2: container("c2", { state: "stopped", exit }),
    },
  }));
  assert.equal(reg.sandboxOfContainer("c1"), "sb1");
  assert.equal(reg.sandboxOfContainer("c2"), "sb1");
  assert.deepEqual(await reg.processExit("c2").wait(), exit);
  assert.deepEqual(await reg.processExit("c1", "e1").wait(), exit);
  assert.equal(reg.processExit("c1").isSet, false);
  assert.equal(reg.processExit("c1", "e2").isSet, false);
  assert.throws(() => reg.processExit("c3"), NotFoundError);
  reg.removeExec("c1", "e1");
  assert.throws(() => reg.processExit("c1", "e1"), NotFoundError);
  reg.removeContainer("c1");
  assert.equal(reg.sandboxOfContainer("c1"), undefined);
  assert.throws(() => reg.processExit("c1"), NotFoundError);
  assert.throws(() => reg.processExit("c1", "e2"), NotFoundError);
});

Deno.test("registry remove releases sandbox waiters and forgets its containers", async () => {
  const reg = new SandboxRegistry(new MemorySandboxStore());
  reg.add(record("sb1", { containers: { c1: container("c1") } }));
  const w = reg.sandboxExit("sb1").wait();
  const exit = { status: 0, at: now() };
  reg.remove("sb1", exit);
  assert.deepEqual(await w, exit);
  assert.equal(reg.has("sb1"), false);
  assert.equal(reg.sandboxOfContainer("c1"), undefined);
  assert.throws(() => reg.sandboxExit("sb1"), NotFoundError);
  reg.remove("sb1", exit); // idempotent
});

Deno.test("registry saves coalesce while a write is running and store the latest state", async () => {
  const store = new GatedStore();
  store.dirs.add("sb1");
  const reg = new SandboxRegistry(store);
  const r = record("sb1");
  reg.add(r);
  const gate = deferred();
  store.gate = gate.promise;
  r.labels = { v: "1" };
  const first = reg.save(r);
  await store.started;
  // The first write is now waiting at the gate; these three share one queued write.
  r.labels = { v: "2" };
  const second = reg.save(r);
  r.labels = { v: "3" };
  const third = reg.save(r);
  const fourth = reg.save(r);
  assert.equal(second, third);
  assert.equal(third, fourth);
  gate.resolve();
  await Promise.all([first, second, third, fourth]);
  assert.deepEqual(store.writes, [`{"v":"1"}`, `{"v":"3"}`]);
  assert.deepEqual(store.load("sb1")!.labels, { v: "3" });
  await reg.flushSaves("sb1");
});

Deno.test("registry save of a removed sandbox does not write it back", async () => {
  const store = new GatedStore();
  store.dirs.add("sb1");
  const reg = new SandboxRegistry(store);
  const r = record("sb1");
  reg.add(r);
  const gate = deferred();
  store.gate = gate.promise;
  const inFlight = reg.save(r);
  await store.started;
  const queued = reg.save(r);
  reg.remove("sb1", { status: 0, at: now() });
  gate.resolve();
  await inFlight;
  await queued;
  await reg.flushSaves("sb1");
  assert.equal(store.writes.length, 1, "only the write already running happened");
  // A record re-created under the same id is a different object: old saves skip it too.
  const r2 = record("sb1", { labels: { new: "yes" } });
  reg.add(r2);
  await reg.save(r);
  assert.equal(store.writes.length, 1);
  await reg.save(r2);
  assert.deepEqual(store.load("sb1")!.labels, { new: "yes" });
});

Deno.test("registry save failures reject that save only; later saves still run", async () => {
  const store = new MemorySandboxStore();
  store.dirs.add("sb1");
  const reg = new SandboxRegistry(store);
  const r = record("sb1");
  reg.add(r);
  store.failNextSave = new Error("EIO");
  await assert.rejects(reg.save(r), /EIO/);
  r.labels = { ok: "1" };
  await reg.save(r);
  assert.deepEqual(store.load("sb1")!.labels, { ok: "1" });
});

Deno.test("registry flushSaves waits for running and queued writes", async () => {
  const store = new GatedStore();
  store.dirs.add("sb1");
  const reg = new SandboxRegistry(store);
  const r = record("sb1");
  reg.add(r);
  const gate = deferred();
  store.gate = gate.promise;
  void reg.save(r);
  let flushed = false;
  const f = reg.flushSaves("sb1").then(() => (flushed = true));
  await new Promise((res) => setTimeout(res, 0));
  assert.equal(flushed, false);
  gate.resolve();
  await f;
  assert.equal(store.writes.length, 1);
  await reg.flushSaves("unknown");
});

Deno.test("task calls of a pod wait until recovery of that pod is done", async () => {
  const reg = new SandboxRegistry(new MemorySandboxStore());
  reg.beginRecovery();
  let other = false, mine = false;
  const listed = reg.whenRecovered("other").then(() => (other = true));
  const gated = reg.whenRecovered("sb1").then(() => (mine = true));
  await new Promise((r) => setTimeout(r, 0));
  assert.equal(other, false, "nothing is served before the records are listed");
  reg.recovering(["sb1"]);
  await listed;
  assert.equal(mine, false, "a pod being recovered waits");
  reg.recovered("sb1");
  await gated;
  await reg.whenRecovered("sb1");
});
