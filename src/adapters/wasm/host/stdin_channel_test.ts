import assert from "node:assert/strict";
import { STDIN_CHUNK, StdinReader, StdinWriter } from "./stdin_channel.ts";

const td = new TextDecoder();

Deno.test("stdin channel: a chunk is read in pieces, then EOF", async () => {
  const w = new StdinWriter();
  const r = new StdinReader(w.buffer);
  await w.push(new TextEncoder().encode("hello world"));
  assert.equal(td.decode(r.read(5)), "hello");
  assert.equal(td.decode(r.read(100)), " world");
  await w.push(null);
  assert.equal(r.read(10).length, 0);
  await w.push(new Uint8Array([1])); // after EOF: ignored
  assert.equal(r.read(10).length, 0);
});

Deno.test("stdin channel: no buffer means EOF at once", () => {
  assert.equal(new StdinReader(null).read(10).length, 0);
});

Deno.test("stdin channel: a reader on another thread gets large input whole, in order", async () => {
  // The reader blocks (Atomics.wait), so it runs where a module would: in a worker.
  const src = `
    import { StdinReader } from ${
    JSON.stringify(new URL("./stdin_channel.ts", import.meta.url).href)
  };
    self.onmessage = (ev) => {
      const r = new StdinReader(ev.data);
      let n = 0, sum = 0;
      for (;;) {
        const b = r.read(10000);
        if (!b.length) break;
        for (const x of b) sum = (sum + x * (n++ % 251 + 1)) % 1000000007;
      }
      self.postMessage({ n, sum });
    };`;
  const worker = new Worker(`data:application/typescript,${encodeURIComponent(src)}`, {
    type: "module",
  });
  try {
    const w = new StdinWriter();
    const result = new Promise<{ n: number; sum: number }>((r) => {
      worker.onmessage = (ev) => r(ev.data);
    });
    worker.postMessage(w.buffer);
    const data = new Uint8Array(3 * STDIN_CHUNK + 123).map((_, i) => (i * 7) % 256);
    await w.push(data.subarray(0, 1000));
    await w.push(data.subarray(1000));
    await w.push(null);
    let n = 0, sum = 0;
    for (const x of data) sum = (sum + x * (n++ % 251 + 1)) % 1000000007;
    assert.deepEqual(await result, { n: data.length, sum });
  } finally {
    worker.terminate();
  }
});
