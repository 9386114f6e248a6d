import assert from "node:assert/strict";
import { join } from "node:path";
import { ioFrame } from "../../supervisor/monitor_io.ts";
import { ByteQueue } from "../../ttrpc/byte_queue.ts";
import { IoServer } from "./io_server.ts";

/** A daemon's end of the io socket: frames read one at a time. */
async function client(path: string) {
  const conn = await Deno.connect({ transport: "unix", path });
  const q = new ByteQueue();
  const buf = new Uint8Array(64 * 1024);
  return {
    conn,
    /** The next frame: [tag, data] (data empty for an end frame). */
    async frame(): Promise<[number, Uint8Array]> {
      for (;;) {
        if (q.length >= 5) {
          const h = q.peek(5);
          const len = new DataView(h.buffer, h.byteOffset).getUint32(1);
          if (q.length >= 5 + len) {
            q.skip(5);
            return [h[0], len ? q.take(len).slice() : new Uint8Array(0)];
          }
        }
        const n = await conn.read(buf);
        if (n === null) throw new Error("closed");
        q.push(buf.slice(0, n));
      }
    },
    async ack(tag: 1 | 2, n: number) {
      const d = new Uint8Array(4);
      new DataView(d.buffer).setUint32(0, n);
      await conn.write(ioFrame(tag + 2, d));
    },
  };
}

Deno.test("io server: one window per stream, kept until acknowledged, resent to a new daemon", async () => {
  const dir = await Deno.makeTempDir();
  const server = await IoServer.listen(join(dir, "io"), () => {});
  try {
    const out = new Uint8Array(600 << 10).map((_, i) => i % 251);
    void server.write(1, out);
    const c1 = await client(server.path);
    // stdout stops at its window; stderr, written after, still comes through.
    let got = 0;
    while (got < 256 << 10) {
      const [tag, d] = await c1.frame();
      assert.equal(tag, 1);
      assert.deepEqual(d, out.subarray(got, got + d.length));
      got += d.length;
    }
    assert.equal(got, 256 << 10);
    await server.write(2, new Uint8Array([7]));
    assert.deepEqual(await c1.frame(), [2, new Uint8Array([7])]);
    await c1.ack(1, 1000);
    await c1.ack(2, 1);
    const [tag, d] = await c1.frame(); // the window moved by what was acknowledged
    assert.equal(tag, 1);
    assert.ok(d.length <= 1000);
    assert.deepEqual(d, out.subarray(got, got + d.length));
    assert.equal(server.drained, false);
    // A new daemon gets everything unacknowledged again, then the ends.
    const c2 = await client(server.path);
    await server.write(1, new Uint8Array(0));
    await server.write(2, new Uint8Array(0));
    let at = 1000;
    let ends = 0;
    while (ends < 2) {
      const [t, data] = await c2.frame();
      if (!data.length) {
        ends++;
        continue;
      }
      assert.equal(t, 1, "stderr was acknowledged: not resent");
      assert.deepEqual(data, out.subarray(at, at + data.length));
      at += data.length;
      await c2.ack(1, data.length);
    }
    assert.equal(at, out.length);
    c1.conn.close();
    c2.conn.close();
  } finally {
    server.close();
    await Deno.remove(dir, { recursive: true });
  }
});
