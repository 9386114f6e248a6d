import assert from "node:assert/strict";
import { OUT_LIMIT, StreamHub } from "./streaming.ts";

const text = (d: Uint8Array | null) => d === null ? null : new TextDecoder().decode(d);
const bytes = (s: string) => new TextEncoder().encode(s);

Deno.test("stdin reaches a slow sink in arrival order, also while buffered input drains", async () => {
  const ch = new StreamHub().input("pod", "e-stdin");
  const got: (string | null)[] = [];
  const first = ch.deliver(bytes("a")); // before the process exists: it waits for the sink
  const attached = ch.setSink(async (d) => {
    await new Promise((r) => setTimeout(r, 5));
    got.push(text(d));
  });
  const more = [ch.deliver(bytes("b")), ch.deliver(null)];
  await Promise.all([first, attached, ...more]);
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

Deno.test("output past the bound makes its writer wait until a reader takes it", async () => {
  const ch = new StreamHub().output("pod", "c-stdout");
  const chunk = new Uint8Array(64 * 1024);
  let waited = 0;
  for (let i = 0; i < OUT_LIMIT / chunk.length; i++) await ch.push(chunk);
  const blocked = ch.push(chunk).then(() => waited++);
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(waited, 0, "the writer waits while the channel is over its bound");
  assert.equal(ch.queued, OUT_LIMIT + chunk.length);
  ch.take(chunk.length);
  await blocked;
  assert.equal(waited, 1);
});

Deno.test("a deleted process's channel releases its writer and counts as delivered", async () => {
  const hub = new StreamHub();
  const ch = hub.output("pod", "c-stdout");
  const blocked = ch.push(new Uint8Array(OUT_LIMIT + 1));
  assert.equal(ch.delivered, false);
  hub.remove("pod", ["c-stdout"]);
  await blocked;
  assert.equal(ch.delivered, true);
  await ch.push(bytes("after")); // nobody reads it any more: dropped, not queued
  assert.equal(ch.queued, 0);
});

Deno.test("an exit waits for its output to be read, or for it to stop moving", async () => {
  const hub = new StreamHub();
  const ch = hub.output("pod", "c-stdout");
  await ch.push(bytes("last words"));
  ch.end();
  assert.equal(await hub.delivered("pod", ["c-stdout"], 50), false, "nobody read it");
  const read = hub.delivered("pod", ["c-stdout"], 5_000);
  ch.take(1024);
  assert.equal(await read, true, "ended, taken, and no attachment left: delivered");
});

Deno.test("stdin sent before its process exists waits, unacknowledged, until the process takes it", async () => {
  const hub = new StreamHub();
  const ch = hub.input("pod", "c-stdin");
  let taken = false;
  const sent = ch.deliver(bytes("early")).then(() => (taken = true));
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(taken, false, "no window is granted for input nobody took");
  const got: (string | null)[] = [];
  await ch.setSink((d) => {
    got.push(text(d));
    return Promise.resolve();
  });
  await sent;
  assert.deepEqual(got, ["early"]);
  // The end of input does not wait for a process.
  await hub.input("pod", "other-stdin").deliver(null);
});

Deno.test("a pod's shutdown drops its streams, also those of ids no process used", async () => {
  const hub = new StreamHub();
  const waiting = hub.input("pod", "bogus-stdin").deliver(bytes("held"));
  const full = hub.output("pod", "bogus-stdout").push(new Uint8Array(OUT_LIMIT + 1));
  hub.removeScope("pod");
  await Promise.all([waiting, full]); // released
  assert.equal(hub.output("pod", "bogus-stdout").queued, 0, "a new channel: nothing kept");
});

Deno.test("CloseIO does not wait for a process that does not read its stdin", async () => {
  const ch = new StreamHub().input("pod", "c-stdin");
  const got: (string | null)[] = [];
  let release!: () => void;
  const reading = new Promise<void>((r) => (release = r));
  await ch.setSink(async (d) => {
    await reading; // the process does not read
    got.push(text(d));
  });
  const sent = ch.deliver(bytes("unread"));
  await ch.close(); // resolves although "unread" was not taken
  release();
  await sent;
  await new Promise((r) => setTimeout(r, 0));
  assert.deepEqual(got, ["unread", null], "the end still follows the data");
});
