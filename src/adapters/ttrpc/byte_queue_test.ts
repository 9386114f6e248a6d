import assert from "node:assert/strict";
import { ByteQueue } from "./byte_queue.ts";

const chunk = (n: number, v: number) => new Uint8Array(n).fill(v);

Deno.test("ByteQueue lets consumed chunks go at once, a partly read one when it is done", () => {
  const q = new ByteQueue();
  for (let v = 1; v <= 3; v++) q.push(chunk(100, v));
  assert.deepEqual(q.retainedBytes, 300);
  const a = q.take(250);
  assert.deepEqual([a.length, a[0], a[99], a[100], a[249]], [250, 1, 1, 2, 3]);
  // Only the third chunk, half read, is still needed.
  assert.deepEqual(q.retainedBytes, 100);
  assert.deepEqual(q.take(50)[49], 3);
  assert.deepEqual([q.length, q.retainedBytes], [0, 0]);
});

Deno.test("ByteQueue held across many small reads keeps only what is unread", () => {
  const q = new ByteQueue();
  // An idle connection between calls: each call's bytes read, then nothing for a long time.
  for (let i = 0; i < 50; i++) {
    q.push(chunk(30, i));
    q.skip(10);
    q.take(20);
  }
  assert.deepEqual(q.retainedBytes, 0);
  q.push(chunk(8, 7));
  q.skip(3);
  assert.deepEqual([q.length, q.retainedBytes], [5, 8]);
});
