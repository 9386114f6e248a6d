import assert from "node:assert/strict";
import { VmPool } from "./vm_pool.ts";

interface Vm {
  n: number;
  dead: boolean;
  shape: string;
}

/** A pool over a maker that counts what it made and what it was told to end. */
function pool(size: number, o: { fail?: () => boolean; shape?: () => string } = {}) {
  let made = 0, making = 0, maxMaking = 0;
  const discarded: number[] = [];
  const p = new VmPool<Vm>({
    size,
    retryMs: 30,
    make: async () => {
      making++;
      maxMaking = Math.max(maxMaking, making);
      await new Promise((r) => setTimeout(r, 5));
      making--;
      if (o.fail?.()) throw new Error("restore failed");
      return { n: ++made, dead: false, shape: o.shape?.() ?? "a" };
    },
    discard: (vm) => {
      discarded.push(vm.n);
      return Promise.resolve();
    },
    alive: (vm) => !vm.dead,
  });
  return { p, discarded, made: () => made, maxMaking: () => maxMaking };
}

async function until(cond: () => boolean, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 5));
  }
}

Deno.test("VmPool fills to its size one VM at a time, and makes another after each take", async () => {
  const { p, made, maxMaking } = pool(2);
  assert.equal(p.take(), undefined, "nothing ready before it filled");
  await until(() => p.size === 2);
  assert.equal(maxMaking(), 1, "one make at a time");
  const vm = p.take();
  assert.equal(vm?.n, 1, "the oldest first");
  await until(() => p.size === 2);
  assert.equal(made(), 3);
  await p.close();
});

Deno.test("VmPool gives only a VM that fits, and ends the untaken ones at close", async () => {
  let shape = "a";
  const { p, discarded } = pool(3, { shape: () => shape });
  p.fill();
  await until(() => p.size === 1);
  shape = "b";
  await until(() => p.size === 3);
  assert.equal(p.take((vm) => vm.shape === "c"), undefined, "none of that shape");
  assert.equal(p.size, 3, "nothing taken");
  assert.equal(p.take((vm) => vm.shape === "b")?.n, 2);
  await until(() => p.size === 3);
  await p.close();
  assert.deepEqual(discarded.sort(), [1, 3, 4], "the taken one is the pod's, not ended");
});

Deno.test("VmPool: a VM dead in the pool is discarded, not taken", async () => {
  const made: Vm[] = [];
  const discarded: number[] = [];
  const p = new VmPool<Vm>({
    size: 2,
    make: () => {
      const vm = { n: made.length + 1, dead: false, shape: "a" };
      made.push(vm);
      return Promise.resolve(vm);
    },
    discard: (vm) => {
      discarded.push(vm.n);
      return Promise.resolve();
    },
    alive: (vm) => !vm.dead,
  });
  p.fill();
  await until(() => p.size === 2);
  made[0].dead = true;
  assert.equal(p.take()?.n, 2);
  assert.deepEqual(discarded, [1]);
  await until(() => p.size === 2);
  await p.close();
  assert.deepEqual(discarded.sort(), [1, 3, 4]);
  p.fill();
  assert.equal(p.size, 0, "a closed pool makes nothing");
});

Deno.test("VmPool waits retryMs after a failed make, then tries again", async () => {
  let failing = true;
  const { p, made } = pool(1, { fail: () => failing });
  p.fill();
  await new Promise((r) => setTimeout(r, 15));
  assert.equal(p.size, 0);
  failing = false;
  await until(() => p.size === 1);
  assert.equal(made(), 1);
  await p.close();
});

Deno.test("VmPool: stale VMs are pruned, and the pool makes current ones", async () => {
  let shape = "old";
  const { p, discarded } = pool(2, { shape: () => shape });
  p.fill();
  await until(() => p.size === 2);
  shape = "new";
  p.prune((vm) => vm.shape !== "new");
  assert.equal(p.take((vm) => vm.shape === "new"), undefined);
  assert.deepEqual(discarded.sort(), [1, 2]);
  await until(() => p.size === 2);
  assert.equal(p.take((vm) => vm.shape === "new")?.shape, "new");
  await p.close();
});

Deno.test("VmPool.prune ends the ready VMs it is told of and makes others", async () => {
  const { p, discarded } = pool(2);
  p.fill();
  await until(() => p.size === 2);
  p.prune((vm) => vm.n === 1);
  assert.deepEqual(discarded, [1]);
  await until(() => p.size === 2);
  assert.equal(p.take()?.n, 2);
  await p.close();
});
