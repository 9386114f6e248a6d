import assert from "node:assert/strict";
import { currentTraceparent, parseTraceparent, setTraceBackend, traced } from "./trace.ts";
import { SpanRecorder } from "./trace_recorder.ts";

const HOST = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

Deno.test("traced without a backend runs the function, and no context leaks out", async () => {
  setTraceBackend(undefined);
  assert.equal(await traced("x", {}, () => Promise.resolve(7)), 7);
  assert.equal(currentTraceparent(), undefined);
});

Deno.test("the recorder keeps spans of a host's trace, nested as the calls, with errors", async () => {
  const rec = new SpanRecorder();
  setTraceBackend(rec);
  try {
    await traced("outer", { a: 1 }, async () => {
      const outer = parseTraceparent(currentTraceparent())!;
      assert.equal(outer.traceId, "0af7651916cd43dd8448eb211c80319c");
      await traced("inner", {}, () => Promise.resolve());
      await assert.rejects(traced("failing", {}, () => Promise.reject(new Error("boom"))));
    }, HOST);
    // No remote parent: not the host's trace, nothing kept.
    await traced("stray", {}, () => Promise.resolve());
    const { spans, dropped } = rec.drain();
    assert.equal(dropped, 0);
    assert.deepEqual(spans.map((s) => s.name), ["inner", "failing", "outer"]);
    const [inner, failing, outer] = spans;
    assert.equal(outer.parentSpanId, "b7ad6b7169203331");
    assert.equal(inner.parentSpanId, outer.spanId);
    assert.equal(failing.error, "boom");
    assert.ok(new Set(spans.map((s) => s.traceId)).size === 1);
    assert.deepEqual(outer.attributes, { a: 1 });
    assert.ok(outer.endMs >= outer.startMs);
    assert.deepEqual(rec.drain().spans, []);
  } finally {
    setTraceBackend(undefined);
  }
});

Deno.test("the recorder is bounded: the oldest spans go, counted", async () => {
  const rec = new SpanRecorder(3);
  setTraceBackend(rec);
  try {
    for (let i = 0; i < 5; i++) await traced(`s${i}`, {}, () => Promise.resolve(), HOST);
    const { spans, dropped } = rec.drain();
    assert.deepEqual(spans.map((s) => s.name), ["s2", "s3", "s4"]);
    assert.equal(dropped, 2);
  } finally {
    setTraceBackend(undefined);
  }
});

Deno.test("traceparent: only the version 00 form with non-zero ids", () => {
  assert.deepEqual(parseTraceparent(HOST), {
    traceId: "0af7651916cd43dd8448eb211c80319c",
    spanId: "b7ad6b7169203331",
    sampled: true,
  });
  for (
    const bad of [
      undefined,
      "",
      "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
      "00-00000000000000000000000000000000-b7ad6b7169203331-01",
      "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
      "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
    ]
  ) assert.equal(parseTraceparent(bad), undefined, String(bad));
});
