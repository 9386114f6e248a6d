import assert from "node:assert/strict";
import { StreamHub } from "./streaming.ts";

const text = (d: Uint8Array | null) => d === null ? null : new TextDecoder().decode(d);
const bytes = (s: string) => new TextEncoder().encode(s);

Deno.test("stdin reaches a slow sink in arrival order, also while buffered input drains", async () => {
  const ch = new StreamHub().input("pod", "e-stdin");
  const got: (string | null)[] = [];
  await ch.deliver(bytes("a"));
  const attached = ch.setSink(async (d) => {
    await new Promise((r) => setTimeout(r, 5));
    got.push(text(d));
  });
  const more = [ch.deliver(bytes("b")), ch.deliver(null)];
  await Promise.all([attached, ...more]);
  assert.deepEqual(got, ["a", "b", null]);
});

Deno.test("CloseIO waits for the attached stdin stream, so it cannot overtake its last bytes", async () => {
  const ch = new StreamHub().input("pod", "e-stdin");
  const got: (string | null)[] = [];
  await ch.setSink((d) => {
    got.push(text(d));
    return Promise.resolve();
  });
  ch.streamOpened();
  const closed = ch.close(); // CloseIO arrives first, on another connection
  await ch.deliver(bytes("late"));
  await ch.deliver(null);
  ch.streamClosed();
  await closed;
  assert.deepEqual(got, ["late", null]);
});
