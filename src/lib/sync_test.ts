import assert from "node:assert/strict";
import { KeyedMutex, KeyedRwMutex, Latch, sleep, withTimeout } from "./sync.ts";

/** A promise with its resolve function exposed. */
function deferred<T = void>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** Lets every queued microtask and one macrotask turn run. */
function settle(): Promise<void> {
  return new Promise((r) => setTimeout(r, 0));
}

Deno.test("KeyedMutex runs calls with the same key one after another, in order", async () => {
  const m = new KeyedMutex();
  const log: string[] = [];
  const gates = [deferred(), deferred(), deferred()];
  const runs = gates.map((g, i) =>
    m.run("k", async () => {
      log.push(`start ${i}`);
      await g.promise;
      log.push(`end ${i}`);
      return i;
    })
  );
  await settle();
  assert.deepEqual(log, ["start 0"]);
  gates[2].resolve();
  gates[1].resolve();
  await settle();
  assert.deepEqual(log, ["start 0"], "later calls wait for the first even when ready");
  gates[0].resolve();
  assert.deepEqual(await Promise.all(runs), [0, 1, 2]);
  assert.deepEqual(log, ["start 0", "end 0", "start 1", "end 1", "start 2", "end 2"]);
});

Deno.test("KeyedMutex runs calls with different keys concurrently", async () => {
  const m = new KeyedMutex();
  const gate = deferred();
  let bRan = false;
  const a = m.run("a", () => gate.promise);
  const b = m.run("b", () => {
    bRan = true;
    return Promise.resolve("b");
  });
  assert.equal(await b, "b");
  assert.ok(bRan);
  gate.resolve();
  await a;
});

Deno.test("KeyedMutex releases the key when a call throws, and passes the error on", async () => {
  const m = new KeyedMutex();
  await assert.rejects(m.run("k", () => Promise.reject(new Error("boom"))), /boom/);
  await assert.rejects(
    m.run("k", () => {
      throw new TypeError("sync boom");
    }),
    TypeError,
  );
  assert.equal(await m.run("k", () => Promise.resolve(7)), 7);
});

Deno.test("KeyedMutex: a call queued behind a failing one still runs", async () => {
  const m = new KeyedMutex();
  const gate = deferred();
  const first = m.run("k", async () => {
    await gate.promise;
    throw new Error("first fails");
  });
  const second = m.run("k", () => Promise.resolve("second"));
  gate.resolve();
  await assert.rejects(first, /first fails/);
  assert.equal(await second, "second");
});

Deno.test("KeyedMutex serialises many interleaved calls per key (no lost updates)", async () => {
  const m = new KeyedMutex();
  const counters = new Map<string, number>();
  const keys = ["a", "b", "c"];
  await Promise.all(
    Array.from({ length: 60 }, (_, i) =>
      m.run(keys[i % 3], async () => {
        const k = keys[i % 3];
        const v = counters.get(k) ?? 0;
        await Promise.resolve();
        await Promise.resolve();
        counters.set(k, v + 1);
      })),
  );
  assert.deepEqual(Object.fromEntries(counters), { a: 20, b: 20, c: 20 });
});

Deno.test("Latch: waiters before and after set get the value; the first set wins", async () => {
  const l = new Latch<number>();
  assert.equal(l.isSet, false);
  assert.equal(l.value, undefined);
  const early = [l.wait(), l.wait()];
  l.set(1);
  l.set(2);
  assert.equal(l.isSet, true);
  assert.equal(l.value, 1);
  assert.deepEqual(await Promise.all(early), [1, 1]);
  assert.equal(await l.wait(), 1);
});

Deno.test("Latch can hold undefined as its value", async () => {
  const l = new Latch<undefined>();
  const w = l.wait();
  l.set(undefined);
  assert.equal(l.isSet, true);
  assert.equal(await w, undefined);
});

Deno.test("Latch.wait rejects with the abort reason and leaves other waiters alone", async () => {
  const l = new Latch<string>();
  const ac = new AbortController();
  const aborted = l.wait(ac.signal);
  const other = l.wait();
  ac.abort(new Error("client went away"));
  await assert.rejects(aborted, /client went away/);
  l.set("done");
  assert.equal(await other, "done");
});

Deno.test("Latch.wait with an already aborted signal rejects at once", async () => {
  const l = new Latch<string>();
  const ac = new AbortController();
  ac.abort(new Error("already"));
  await assert.rejects(l.wait(ac.signal), /already/);
  // But a latch that is already set answers even with an aborted signal.
  l.set("v");
  assert.equal(await l.wait(ac.signal), "v");
});

Deno.test("Latch.wait resolved before the abort ignores the later abort", async () => {
  const l = new Latch<number>();
  const ac = new AbortController();
  const w = l.wait(ac.signal);
  l.set(5);
  ac.abort();
  assert.equal(await w, 5);
});

Deno.test("withTimeout resolves with the value when the promise wins", async () => {
  assert.equal(await withTimeout(Promise.resolve("v"), 10_000), "v");
  const gate = deferred<number>();
  const p = withTimeout(gate.promise, 10_000);
  gate.resolve(3);
  assert.equal(await p, 3);
});

Deno.test("withTimeout resolves with undefined when the time runs out first", async () => {
  const never = new Promise<string>(() => {});
  assert.equal(await withTimeout(never, 1), undefined);
});

Deno.test("withTimeout passes a rejection on and clears its timer", async () => {
  // The test sanitizer fails the test if the 10 s timer were left running.
  await assert.rejects(withTimeout(Promise.reject(new Error("nope")), 10_000), /nope/);
});

Deno.test("sleep resolves", async () => {
  await sleep(0);
});

Deno.test("KeyedRwMutex: shared calls overlap, exclusive ones run alone and are not starved", async () => {
  const m = new KeyedRwMutex();
  const log: string[] = [];
  let release1!: () => void, release2!: () => void;
  const r1 = m.runShared("k", async () => {
    log.push("r1+");
    await new Promise<void>((r) => (release1 = r));
    log.push("r1-");
  });
  const r2 = m.runShared("k", async () => {
    log.push("r2+");
    await new Promise<void>((r) => (release2 = r));
    log.push("r2-");
  });
  await new Promise((r) => setTimeout(r, 0));
  assert.deepEqual(log, ["r1+", "r2+"]); // both inside at once
  const w = m.run("k", () => {
    log.push("w");
    return Promise.resolve();
  });
  const r3 = m.runShared("k", () => {
    log.push("r3");
    return Promise.resolve();
  });
  const other = m.run("other", () => {
    log.push("other");
    return Promise.resolve();
  });
  await other;
  release1();
  await r1;
  assert.ok(!log.includes("w"), "the writer waits for every reader");
  release2();
  await Promise.all([r2, w, r3]);
  assert.deepEqual(log.slice(-3), ["r2-", "w", "r3"]); // r3 queued behind the writer
});
