import assert from "node:assert/strict";
import { IdleReclaimer } from "./memory.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test("IdleReclaimer: reclaims after a quiet spell, and once more later", async () => {
  let n = 0;
  // Quiet time 50 ms: the first pass at 50 ms, the second 200 ms after it.
  const r = new IdleReclaimer(50, 10_000, () => n++);
  try {
    r.touch();
    r.touch();
    await sleep(120);
    assert.equal(n, 1, "one pass after the quiet time, not one per call");
    await sleep(300);
    assert.equal(n, 2, "the trailing second pass");
  } finally {
    r.stop();
  }
});

Deno.test("IdleReclaimer: calls that never stop still get a reclaim by the max delay", async () => {
  let n = 0;
  const r = new IdleReclaimer(100, 250, () => n++);
  try {
    // A call every 20 ms: never 100 ms of quiet.
    for (let t = 0; t < 700; t += 20) {
      r.touch();
      await sleep(20);
    }
    assert.ok(n >= 2, `reclaims under steady calls: ${n}`);
  } finally {
    r.stop();
  }
});
