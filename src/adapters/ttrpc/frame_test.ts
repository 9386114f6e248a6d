import assert from "node:assert/strict";
import fc from "fast-check";
import { ResourceExhaustedError } from "../../domain/errors.ts";
import { type Decoded, encodeFrame, FrameDecoder, HEADER_SIZE, MAX_PAYLOAD } from "./frame.ts";

const frameArb = fc.record({
  streamId: fc.nat({ max: 0xffffffff }),
  type: fc.integer({ min: 0, max: 255 }),
  flags: fc.integer({ min: 0, max: 255 }),
  payload: fc.uint8Array({ maxLength: 2048 }),
});

/** Splits `bytes` at the given cut points (sorted, deduplicated). */
function split(bytes: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const out: Uint8Array[] = [];
  let prev = 0;
  for (const p of points) {
    out.push(bytes.subarray(prev, p));
    prev = p;
  }
  out.push(bytes.subarray(prev));
  return out;
}

function drain(d: FrameDecoder): Decoded[] {
  const out: Decoded[] = [];
  for (let x = d.next(); x; x = d.next()) out.push(x);
  return out;
}

Deno.test("FrameDecoder round-trips any frames however the stream is chunked", () => {
  fc.assert(
    fc.property(fc.array(frameArb, { maxLength: 8 }), fc.array(fc.nat()), (frames, cuts) => {
      const wire = new Uint8Array(frames.reduce((n, f) => n + HEADER_SIZE + f.payload.length, 0));
      let off = 0;
      for (const f of frames) {
        const e = encodeFrame(f.streamId, f.type, f.flags, f.payload);
        wire.set(e, off);
        off += e.length;
      }
      const d = new FrameDecoder();
      const got: Decoded[] = [];
      for (const chunk of split(wire, cuts)) {
        d.push(chunk);
        got.push(...drain(d));
      }
      assert.equal(got.length, frames.length);
      got.forEach((g, i) => {
        assert.equal(g.kind, "frame");
        if (g.kind !== "frame") return;
        assert.equal(g.frame.streamId, frames[i].streamId);
        assert.equal(g.frame.type, frames[i].type);
        assert.equal(g.frame.flags, frames[i].flags);
        assert.deepEqual(g.frame.payload, frames[i].payload);
      });
      assert.equal(d.buffered, 0);
    }),
  );
});

Deno.test("FrameDecoder yields nothing for a truncated frame", () => {
  fc.assert(
    fc.property(frameArb, fc.nat(), (f, cut) => {
      const e = encodeFrame(f.streamId, f.type, f.flags, f.payload);
      const n = cut % e.length; // strictly shorter than the frame
      const d = new FrameDecoder();
      d.push(e.subarray(0, n));
      assert.equal(d.next(), undefined);
    }),
  );
});

Deno.test("FrameDecoder reports an oversized frame once and skips exactly its payload", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: MAX_PAYLOAD + 1, max: MAX_PAYLOAD + 5000 }),
      fc.nat({ max: 0xffffffff }),
      frameArb,
      fc.array(fc.nat()),
      (length, streamId, after, cuts) => {
        const header = new Uint8Array(HEADER_SIZE);
        const v = new DataView(header.buffer);
        v.setUint32(0, length);
        v.setUint32(4, streamId);
        v.setUint8(8, 1);
        const next = encodeFrame(after.streamId, after.type, after.flags, after.payload);
        const wire = new Uint8Array(HEADER_SIZE + length + next.length);
        wire.set(header);
        wire.set(next, HEADER_SIZE + length);
        const d = new FrameDecoder();
        const got: Decoded[] = [];
        for (const chunk of split(wire, cuts)) {
          d.push(chunk);
          got.push(...drain(d));
        }
        assert.equal(got.length, 2);
        assert.deepEqual(got[0], { kind: "oversized", streamId, type: 1, length });
        assert.equal(got[1].kind, "frame");
        if (got[1].kind === "frame") assert.deepEqual(got[1].frame.payload, after.payload);
      },
    ),
    { numRuns: 30 },
  );
});

Deno.test("FrameDecoder never throws on garbage", () => {
  fc.assert(
    fc.property(fc.array(fc.uint8Array({ maxLength: 512 }), { maxLength: 10 }), (chunks) => {
      const d = new FrameDecoder();
      for (const c of chunks) {
        d.push(c);
        for (const x of drain(d)) {
          if (x.kind === "frame") assert.ok(x.frame.payload.length <= MAX_PAYLOAD);
          else assert.ok(x.length > MAX_PAYLOAD);
        }
      }
    }),
  );
});

Deno.test("encodeFrame refuses payloads over 4 MiB", () => {
  assert.throws(
    () => encodeFrame(1, 1, 0, new Uint8Array(MAX_PAYLOAD + 1)),
    ResourceExhaustedError,
  );
  assert.equal(encodeFrame(1, 1, 0, new Uint8Array(MAX_PAYLOAD)).length, MAX_PAYLOAD + HEADER_SIZE);
});

/**
 * Counts the bytes `Uint8Array` copies (`set`, `slice`) while `fn` runs: the
 * decoder's work, whatever way it buffers.
 */
function countCopies(fn: () => void): number {
  const proto = Uint8Array.prototype;
  const { set, slice } = proto;
  let copied = 0;
  proto.set = function (this: Uint8Array, src: ArrayLike<number>, offset?: number) {
    copied += src.length;
    return set.call(this, src, offset);
  };
  proto.slice = function (this: Uint8Array, start?: number, end?: number) {
    const out = slice.call(this, start, end);
    copied += out.length;
    return out;
  } as typeof proto.slice;
  try {
    fn();
  } finally {
    proto.set = set;
    proto.slice = slice;
  }
  return copied;
}

Deno.test("FrameDecoder reassembles in linear work: large frames read in small pieces", () => {
  // Ten 4 MiB frames arriving 16 KiB at a time (what the server reads): a
  // decoder that merges its whole buffer on every read copies ~5 GiB here.
  const frame = encodeFrame(1, 1, 0, new Uint8Array(MAX_PAYLOAD).fill(7));
  const d = new FrameDecoder();
  let frames = 0;
  const copied = countCopies(() => {
    for (let i = 0; i < 10; i++) {
      for (let off = 0; off < frame.length; off += 16 * 1024) {
        d.push(frame.subarray(off, off + 16 * 1024));
        for (let x = d.next(); x; x = d.next()) {
          assert.equal(x.kind, "frame");
          if (x.kind === "frame") assert.equal(x.frame.payload.length, MAX_PAYLOAD);
          frames++;
        }
      }
    }
  });
  assert.equal(frames, 10);
  assert.ok(copied <= 3 * 10 * frame.length, `copied ${copied} bytes for ${10 * frame.length}`);
  assert.equal(d.buffered, 0);
});
