import assert from "node:assert/strict";
import { ioFrame, readIoFrames } from "./monitor_io.ts";
import { ByteQueue } from "../ttrpc/byte_queue.ts";

/** A connection that hands out `bytes` in reads of `size`. */
function reader(bytes: Uint8Array, size: number) {
  let off = 0;
  return {
    read(p: Uint8Array): Promise<number | null> {
      if (off >= bytes.length) return Promise.resolve(null);
      const n = Math.min(size, p.length, bytes.length - off);
      p.set(bytes.subarray(off, off + n));
      off += n;
      return Promise.resolve(n);
    },
  };
}

Deno.test("io frames split across any reads come out whole, in order", async () => {
  const big = new Uint8Array(200_000).map((_, i) => i % 251);
  const wire = new Uint8Array([
    ...ioFrame(1, new Uint8Array([1, 2, 3])),
    ...ioFrame(2, big),
    ...ioFrame(1, null),
  ]);
  for (const size of [1, 7, 4096, 1 << 20]) {
    const got: [number, Uint8Array | null][] = [];
    await readIoFrames(reader(wire, size), (tag, data) => {
      got.push([tag, data]);
    });
    assert.deepEqual(
      got,
      [[1, new Uint8Array([1, 2, 3])], [2, big], [1, null]],
      `reads of ${size}`,
    );
  }
});

Deno.test("readIoFrames waits for a sink that pushes back before it reads on", async () => {
  const wire = new Uint8Array([...ioFrame(1, new Uint8Array([9])), ...ioFrame(1, null)]);
  let reads = 0;
  const conn = reader(wire, wire.length);
  const counted = { read: (p: Uint8Array) => (reads++, conn.read(p)) };
  let release!: () => void;
  const done = readIoFrames(counted, (_tag, data) => {
    if (data) return new Promise<void>((r) => (release = r));
  });
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(reads, 1, "no read while the sink holds a frame");
  release();
  await done;
});

Deno.test("ByteQueue copies a frame once however it was split", () => {
  const q = new ByteQueue();
  for (let i = 0; i < 100; i++) q.push(new Uint8Array([i]));
  assert.deepEqual([...q.peek(3)], [0, 1, 2]);
  assert.deepEqual([...q.take(50)], [...Array(50).keys()]);
  q.skip(10);
  assert.equal(q.length, 40);
  assert.deepEqual([...q.take(40)], [...Array(40).keys()].map((i) => i + 60));
});
