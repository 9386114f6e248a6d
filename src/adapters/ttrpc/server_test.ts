import assert from "node:assert/strict";
import fc from "fast-check";
import { Code, InvalidArgumentError, NotFoundError } from "../../domain/errors.ts";
import { Request, Response } from "../../gen/ttrpc/request.ts";
import { TtrpcClient } from "./client.ts";
import { encodeFrame, Flag, FrameDecoder, HEADER_SIZE, MAX_PAYLOAD, MessageType } from "./frame.ts";
import { MAX_UNREAD_STREAM_BYTES, TtrpcServer, writeAll } from "./server.ts";
import type { ByteStream } from "./frame.ts";

const te = new TextEncoder();
const td = new TextDecoder();

async function withServer(fn: (path: string, server: TtrpcServer) => Promise<void>) {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/t.sock`;
  const server = new TtrpcServer();
  server.register("test.Echo", {
    Echo: { kind: "unary", handle: (p) => Promise.resolve(p) },
    Meta: {
      kind: "unary",
      handle: (_p, ctx) =>
        Promise.resolve(te.encode(ctx.metadata.get("containerd-namespace-ttrpc")?.join(",") ?? "")),
    },
    Fail: { kind: "unary", handle: () => Promise.reject(new NotFoundError("no such thing")) },
    Slow: {
      kind: "unary",
      handle: (_p, ctx) =>
        new Promise((_r, reject) =>
          ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason))
        ),
    },
    Chat: {
      kind: "stream",
      streamingClient: true,
      streamingServer: true,
      handle: async (s) => {
        let n = 0;
        for await (const m of s.received) {
          n++;
          await s.send(te.encode(td.decode(m).toUpperCase()));
        }
        return te.encode(`count=${n}`);
      },
    },
    Numbers: {
      kind: "stream",
      streamingClient: false,
      streamingServer: true,
      handle: async (s) => {
        for await (const m of s.received) {
          const count = Number(td.decode(m));
          for (let i = 0; i < count; i++) await s.send(te.encode(String(i)));
        }
        return undefined;
      },
    },
    Reject: {
      kind: "unary",
      handle: () => Promise.reject(new InvalidArgumentError("bad")),
    },
  });
  const listener = Deno.listen({ transport: "unix", path });
  const serving = server.serve(listener);
  try {
    await fn(path, server);
  } finally {
    server.close();
    await serving;
    await Deno.remove(dir, { recursive: true });
  }
}

/** Sends raw bytes and returns the next decoded Response on the connection. */
async function rawExchange(conn: Deno.Conn, bytes: Uint8Array, decoder: FrameDecoder) {
  await writeAll(conn, bytes);
  const buf = new Uint8Array(65536);
  for (;;) {
    const d = decoder.next();
    if (d?.kind === "frame") {
      return { streamId: d.frame.streamId, res: Response.decode(d.frame.payload) };
    }
    const n = await conn.read(buf);
    if (n === null) throw new Error("closed");
    decoder.push(buf.subarray(0, n));
  }
}

function request(service: string, method: string, payload = new Uint8Array()): Uint8Array {
  return Request.encode({ service, method, payload, timeoutNano: 0n, metadata: [] }).finish();
}

Deno.test("ttrpc unary calls, metadata, error statuses and unknown methods", async () => {
  await withServer(async (path) => {
    const c = await TtrpcClient.connectUnix(path);
    try {
      assert.equal(td.decode(await c.call("test.Echo", "Echo", te.encode("hi"))), "hi");
      const ns = await c.call("test.Echo", "Meta", new Uint8Array(), {
        metadata: { "containerd-namespace-ttrpc": "k8s.io" },
      });
      assert.equal(td.decode(ns), "k8s.io");
      await assert.rejects(c.call("test.Echo", "Fail", new Uint8Array()), NotFoundError);
      await assert.rejects(
        c.call("test.Echo", "Nope", new Uint8Array()),
        (e: { code: number }) => e.code === Code.UNIMPLEMENTED,
      );
      await assert.rejects(
        c.call("no.Such", "Echo", new Uint8Array()),
        (e: { code: number }) => e.code === Code.UNIMPLEMENTED,
      );
      await assert.rejects(
        c.call("test.Echo", "Slow", new Uint8Array(), { timeoutMs: 50 }),
        (e: { code: number }) => e.code === Code.DEADLINE_EXCEEDED,
      );
      // 50 concurrent calls on one connection
      const all = await Promise.all(
        Array.from({ length: 50 }, (_, i) => c.call("test.Echo", "Echo", te.encode(String(i)))),
      );
      assert.deepEqual(
        all.map((b) => td.decode(b)),
        Array.from({ length: 50 }, (_, i) => String(i)),
      );
    } finally {
      c.close();
      await c.done;
    }
  });
});

Deno.test("ttrpc streams: bidirectional and server streaming", async () => {
  await withServer(async (path) => {
    const c = await TtrpcClient.connectUnix(path);
    try {
      const s = await c.stream("test.Echo", "Chat", { streamingClient: true });
      await s.send(te.encode("a"));
      await s.send(te.encode("b"));
      await s.closeSend();
      const got: string[] = [];
      for await (const m of s.received) got.push(td.decode(m));
      assert.deepEqual(got, ["A", "B", "count=2"]);

      const n = await c.stream("test.Echo", "Numbers", {
        streamingClient: false,
        payload: te.encode("3"),
      });
      const nums: string[] = [];
      for await (const m of n.received) nums.push(td.decode(m));
      assert.deepEqual(nums, ["0", "1", "2"]);
    } finally {
      c.close();
      await c.done;
    }
  });
});

Deno.test("ttrpc server answers bad frames on their stream and keeps serving", async () => {
  await withServer(async (path) => {
    const conn = await Deno.connect({ transport: "unix", path });
    const dec = new FrameDecoder();
    try {
      // Undecodable request payload.
      let r = await rawExchange(
        conn,
        encodeFrame(1, MessageType.REQUEST, 0, new Uint8Array([0xff, 0xff, 0xff])),
        dec,
      );
      assert.equal(r.streamId, 1);
      assert.equal(r.res.status?.code, Code.INVALID_ARGUMENT);
      // Even stream id.
      r = await rawExchange(
        conn,
        encodeFrame(4, MessageType.REQUEST, 0, request("test.Echo", "Echo")),
        dec,
      );
      assert.equal(r.streamId, 4);
      assert.equal(r.res.status?.code, Code.INVALID_ARGUMENT);
      // Reused stream id.
      r = await rawExchange(
        conn,
        encodeFrame(1, MessageType.REQUEST, 0, request("test.Echo", "Echo")),
        dec,
      );
      assert.equal(r.res.status?.code, Code.INVALID_ARGUMENT);
      // Oversized frame: header announcing 4 MiB + 1, then the payload.
      const big = new Uint8Array(HEADER_SIZE + MAX_PAYLOAD + 1);
      new DataView(big.buffer).setUint32(0, MAX_PAYLOAD + 1);
      new DataView(big.buffer).setUint32(4, 5);
      big[8] = MessageType.REQUEST;
      r = await rawExchange(conn, big, dec);
      assert.equal(r.streamId, 5);
      assert.equal(r.res.status?.code, Code.RESOURCE_EXHAUSTED);
      // Data on a stream that was never opened.
      r = await rawExchange(
        conn,
        encodeFrame(7, MessageType.DATA, Flag.REMOTE_CLOSED, new Uint8Array()),
        dec,
      );
      assert.equal(r.res.status?.code, Code.INVALID_ARGUMENT);
      // Still serving on the same connection.
      r = await rawExchange(
        conn,
        encodeFrame(9, MessageType.REQUEST, 0, request("test.Echo", "Echo", te.encode("ok"))),
        dec,
      );
      assert.equal(r.res.status?.code ?? 0, 0);
      assert.equal(td.decode(r.res.payload), "ok");
    } finally {
      conn.close();
    }
    // And serving new connections after garbage closed one.
    const g = await Deno.connect({ transport: "unix", path });
    await writeAll(g, crypto.getRandomValues(new Uint8Array(300)));
    g.close();
    const c = await TtrpcClient.connectUnix(path);
    assert.equal(td.decode(await c.call("test.Echo", "Echo", te.encode("alive"))), "alive");
    c.close();
    await c.done;
  });
});

Deno.test("property: any request payload gets one answer on its stream, and the connection lives", async () => {
  await withServer(async (path) => {
    const conn = await Deno.connect({ transport: "unix", path });
    const dec = new FrameDecoder();
    let stream = 1;
    try {
      await fc.assert(
        fc.asyncProperty(
          fc.oneof(
            // Arbitrary bytes as the Request message.
            fc.uint8Array({ maxLength: 512 }),
            // Well-formed Requests for any service/method, with arbitrary payloads.
            fc.record({
              service: fc.oneof(fc.constant("test.Echo"), fc.string({ maxLength: 20 })),
              method: fc.oneof(fc.constant("Echo"), fc.string({ maxLength: 10 })),
              payload: fc.uint8Array({ maxLength: 64 }),
            }).map((r) => request(r.service, r.method, r.payload)),
          ),
          async (payload) => {
            const id = stream;
            stream += 2;
            const r = await rawExchange(
              conn,
              encodeFrame(id, MessageType.REQUEST, 0, payload),
              dec,
            );
            assert.equal(r.streamId, id);
            const code = r.res.status?.code ?? Code.OK;
            let req: Request | undefined;
            try {
              req = Request.decode(payload);
            } catch { /* undecodable */ }
            if (!req) assert.equal(code, Code.INVALID_ARGUMENT);
            else if (req.service === "test.Echo" && req.method === "Echo") {
              assert.equal(code, Code.OK);
              assert.deepEqual(r.res.payload, req.payload);
            } else assert.notEqual(code, Code.OK);
          },
        ),
        { numRuns: 300 },
      );
    } finally {
      conn.close();
    }
  });
});

/**
 * A client connection that sends pipelined requests and, until `startReading`,
 * never reads the answers: its writes (the server's) do not complete.
 */
class PipeliningClient implements ByteStream {
  readonly answers = new FrameDecoder();
  consumed = 0;
  #input: Uint8Array;
  #reading = false;
  #blocked: (() => void)[] = [];
  #eof: ((n: null) => void) | undefined;

  constructor(input: Uint8Array) {
    this.#input = input;
  }

  read(p: Uint8Array): Promise<number | null> {
    if (this.consumed === this.#input.length) {
      // Everything sent: the client waits for answers with its connection open.
      return new Promise((resolve) => (this.#eof = resolve));
    }
    const n = Math.min(p.length, this.#input.length - this.consumed);
    p.set(this.#input.subarray(this.consumed, this.consumed + n));
    this.consumed += n;
    return Promise.resolve(n);
  }

  write(p: Uint8Array): Promise<number> {
    const take = () => {
      this.answers.push(p);
      return p.length;
    };
    if (this.#reading) return Promise.resolve(take());
    return new Promise((resolve) => this.#blocked.push(() => resolve(take())));
  }

  startReading(): void {
    this.#reading = true;
    for (const b of this.#blocked.splice(0)) b();
  }

  close(): void {
    this.#eof?.(null);
  }
}

/** Lets the server run for `turns` event-loop turns (no clock involved). */
async function turns(n: number, until: () => boolean): Promise<void> {
  for (let i = 0; i < n && !until(); i++) await new Promise((r) => setTimeout(r, 0));
}

Deno.test("ttrpc server stops reading a connection whose answers are not read, then resumes", async () => {
  const bound = 64 * 1024;
  const server = new TtrpcServer({ maxQueuedBytes: bound });
  server.register("test.Echo", { Echo: { kind: "unary", handle: (p) => Promise.resolve(p) } });
  const count = 100, size = 8 * 1024;
  const frames = Array.from(
    { length: count },
    (_, i) =>
      encodeFrame(
        2 * i + 1,
        MessageType.REQUEST,
        0,
        request("test.Echo", "Echo", new Uint8Array(size).fill(i)),
      ),
  );
  const input = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
  frames.reduce((off, f) => (input.set(f, off), off + f.length), 0);
  const client = new PipeliningClient(input);
  const serving = server.handle(client);
  try {
    await turns(300, () => client.consumed === input.length);
    // Answers the server holds are bounded, so are the requests it read: the
    // bound, one read and one answer past it.
    assert.ok(
      client.consumed <= bound + 16 * 1024 + 2 * (size + 100),
      `read ${client.consumed} of ${input.length} bytes while no answer was read`,
    );
    client.startReading();
    const answers = new Map<number, Uint8Array>();
    await turns(10_000, () => {
      for (let d = client.answers.next(); d; d = client.answers.next()) {
        if (d.kind === "frame") {
          answers.set(d.frame.streamId, Response.decode(d.frame.payload).payload);
        }
      }
      return answers.size === count;
    });
    assert.equal(answers.size, count);
    for (let i = 0; i < count; i++) {
      assert.deepEqual(answers.get(2 * i + 1), new Uint8Array(size).fill(i));
    }
  } finally {
    server.close();
    await serving;
  }
});

Deno.test("ttrpc server with a tiny answer bound: streams and unary calls sharing a connection all complete", async () => {
  const server = new TtrpcServer({ maxQueuedBytes: 1 });
  server.register("test.Echo", {
    Echo: { kind: "unary", handle: (p) => Promise.resolve(p) },
    Chat: {
      kind: "stream",
      streamingClient: true,
      streamingServer: true,
      handle: async (s) => {
        let n = 0;
        for await (const m of s.received) {
          n++;
          await s.send(m);
        }
        return te.encode(`count=${n}`);
      },
    },
  });
  const dir = await Deno.makeTempDir();
  const listener = Deno.listen({ transport: "unix", path: `${dir}/t.sock` });
  const serving = server.serve(listener);
  const c = await TtrpcClient.connectUnix(`${dir}/t.sock`);
  try {
    const big = new Uint8Array(512 * 1024).fill(1);
    const streams = await Promise.all(
      [0, 1, 2].map(() => c.stream("test.Echo", "Chat", { streamingClient: true })),
    );
    const chats = streams.map(async (s) => {
      const got: number[] = [];
      const reading = (async () => {
        for await (const m of s.received) got.push(m.length);
      })();
      for (let i = 0; i < 20; i++) await s.send(big);
      await s.closeSend();
      await reading;
      return got;
    });
    const calls = Array.from({ length: 50 }, () => c.call("test.Echo", "Echo", big));
    for (const got of await Promise.all(chats)) {
      assert.equal(got.length, 21);
    }
    for (const r of await Promise.all(calls)) assert.equal(r.length, big.length);
  } finally {
    c.close();
    await c.done;
    server.close();
    await serving;
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ttrpc server stops reading a connection whose stream messages are not taken", async () => {
  const server = new TtrpcServer();
  let release!: () => void;
  const go = new Promise<void>((r) => (release = r));
  let got = 0;
  server.register("test.Sink", {
    Slow: {
      kind: "stream",
      streamingClient: true,
      streamingServer: false,
      handle: async (s) => {
        await go; // a process that does not read its stdin yet
        for await (const m of s.received) got += m.length;
        return te.encode(`got=${got}`);
      },
    },
  });
  const chunk = 1 << 20, count = 32;
  const frames = [
    encodeFrame(1, MessageType.REQUEST, 0, request("test.Sink", "Slow", new Uint8Array())),
    ...Array.from(
      { length: count },
      (_, i) =>
        encodeFrame(
          1,
          MessageType.DATA,
          i === count - 1 ? Flag.REMOTE_CLOSED : 0,
          new Uint8Array(chunk),
        ),
    ),
  ];
  const input = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
  frames.reduce((off, f) => (input.set(f, off), off + f.length), 0);
  const client = new PipeliningClient(input);
  client.startReading();
  const serving = server.handle(client);
  try {
    await turns(300, () => client.consumed === input.length);
    assert.ok(
      client.consumed <= MAX_UNREAD_STREAM_BYTES + 2 * chunk + 64 * 1024,
      `read ${client.consumed} of ${input.length} bytes while the handler took none`,
    );
    release();
    await turns(10_000, () => got === count * chunk);
    assert.equal(got, count * chunk, "once taken, the rest is read and delivered");
  } finally {
    server.close();
    await serving;
  }
});
