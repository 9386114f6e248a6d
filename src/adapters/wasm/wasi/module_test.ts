import assert from "node:assert/strict";
import { capMemory, isWasm, MemoryLimitError, WASM_PAGE } from "./module.ts";

/** A module with one memory of `min` (and optional `max`) pages, exported, and an empty _start. */
function moduleWithMemory(min: number, max?: number): Uint8Array {
  const limits = max === undefined ? [0x00, min] : [0x01, min, max];
  return new Uint8Array([
    ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
    ...[0x01, 0x04, 0x01, 0x60, 0x00, 0x00], // type section: () -> ()
    ...[0x03, 0x02, 0x01, 0x00], // function section
    ...[0x05, 1 + limits.length, 0x01, ...limits], // memory section
    ...[0x07, 0x13, 0x02, 0x06, ...new TextEncoder().encode("memory"), 0x02, 0x00],
    ...[0x06, ...new TextEncoder().encode("_start"), 0x00, 0x00], // exports
    ...[0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b], // code
  ]);
}

function memoryOf(bytes: Uint8Array): WebAssembly.Memory {
  const inst = new WebAssembly.Instance(new WebAssembly.Module(bytes as Uint8Array<ArrayBuffer>));
  return inst.exports.memory as WebAssembly.Memory;
}

Deno.test("isWasm checks magic and version", () => {
  assert.ok(isWasm(moduleWithMemory(1)));
  assert.ok(!isWasm(new TextEncoder().encode("#!/bin/sh\necho")));
  assert.ok(!isWasm(new Uint8Array([0, 0x61, 0x73, 0x6d, 2, 0, 0, 0])));
  assert.ok(!isWasm(new Uint8Array(3)));
});

Deno.test("capMemory: a memory without max cannot grow past the limit", () => {
  const mem = memoryOf(capMemory(moduleWithMemory(1), 4 * WASM_PAGE));
  assert.equal(mem.buffer.byteLength, WASM_PAGE);
  mem.grow(3);
  assert.throws(() => mem.grow(1), RangeError);
});

Deno.test("capMemory: a lower declared max is kept; a limit below min is refused", () => {
  const mem = memoryOf(capMemory(moduleWithMemory(1, 2), 10 * WASM_PAGE));
  mem.grow(1);
  assert.throws(() => mem.grow(1), RangeError);
  assert.throws(() => capMemory(moduleWithMemory(3), 2 * WASM_PAGE), MemoryLimitError);
});

Deno.test("capMemory rejects truncated input instead of producing a broken module", () => {
  const bytes = moduleWithMemory(1);
  assert.throws(() => capMemory(bytes.subarray(0, 24), WASM_PAGE), RangeError);
});
