/**
 * What a sandboxer needs to know about a Wasm binary before running it: is it
 * one (the `\0asm` magic), and a copy whose memories cannot grow past a limit
 * (the container's `linux.resources.memory.limit`), made by rewriting the
 * limits in its memory and import sections. An engine then enforces the limit
 * itself: `memory.grow` fails, the module's allocator reports out of memory.
 *
 * @module
 */

import { readU32, u32 } from "./binary.ts";
import { concatBytes as concat } from "../../../lib/bytes.ts";

/** Size of a Wasm page. */
export const WASM_PAGE = 65536;

/** Whether `bytes` start with the Wasm magic and version 1. */
export function isWasm(bytes: Uint8Array): boolean {
  return bytes.length >= 8 && bytes[0] === 0 && bytes[1] === 0x61 && bytes[2] === 0x73 &&
    bytes[3] === 0x6d && bytes[4] === 1 && bytes[5] === 0 && bytes[6] === 0 && bytes[7] === 0;
}

/** Why a module cannot run under a limit. */
export class MemoryLimitError extends Error {}

/** Re-encodes a limits record with `max` pages at most. */
function capLimits(b: Uint8Array, off: number, maxPages: number, out: number[]): number {
  const flags = b[off++];
  if (flags & 0x04) throw new MemoryLimitError("64-bit memories are not supported");
  let min: number, max: number | undefined;
  [min, off] = readU32(b, off);
  if (flags & 0x01) [max, off] = readU32(b, off);
  if (min > maxPages) {
    throw new MemoryLimitError(
      `the module needs ${min * WASM_PAGE} bytes of memory at start, over its limit of ${
        maxPages * WASM_PAGE
      }`,
    );
  }
  const capped = max === undefined ? maxPages : Math.min(max, maxPages);
  out.push((flags | 0x01) & 0xff, ...u32(min), ...u32(capped));
  return off;
}

/** Skips one import description's type-specific part (not memories). */
function skipImportDesc(b: Uint8Array, kind: number, off: number): number {
  switch (kind) {
    case 0: // func: type index
      return readU32(b, off)[1];
    case 1: { // table: reftype + limits
      const flags = b[off + 1];
      off = readU32(b, off + 2)[1];
      return flags & 0x01 ? readU32(b, off)[1] : off;
    }
    case 3: // global: valtype + mut
      return off + 2;
    case 4: // tag
      return readU32(b, off + 1)[1];
    default:
      throw new RangeError(`unknown import kind ${kind}`);
  }
}

/** A copy of `bytes` whose memories (defined or imported) are capped at `limitBytes`. */
export function capMemory(bytes: Uint8Array, limitBytes: number): Uint8Array<ArrayBuffer> {
  const maxPages = Math.max(0, Math.floor(limitBytes / WASM_PAGE));
  // Sections are copied as slices: spreading a large code section would overflow the stack.
  const chunks: Uint8Array[] = [bytes.subarray(0, 8)];
  let off = 8;
  while (off < bytes.length) {
    const id = bytes[off];
    const [size, body] = readU32(bytes, off + 1);
    const end = body + size;
    if (id !== 5 && id !== 2) {
      chunks.push(bytes.subarray(off, end));
      off = end;
      continue;
    }
    const section: number[] = [];
    let p = body;
    let count: number;
    [count, p] = readU32(bytes, p);
    section.push(...u32(count));
    for (let i = 0; i < count; i++) {
      if (id === 5) {
        p = capLimits(bytes, p, maxPages, section);
        continue;
      }
      // import: module name, field name, kind, desc
      const start = p;
      let len: number;
      [len, p] = readU32(bytes, p);
      p += len;
      [len, p] = readU32(bytes, p);
      p += len;
      const kind = bytes[p++];
      for (const x of bytes.subarray(start, p)) section.push(x);
      if (kind === 2) p = capLimits(bytes, p, maxPages, section);
      else {
        const q = skipImportDesc(bytes, kind, p);
        for (const x of bytes.subarray(p, q)) section.push(x);
        p = q;
      }
    }
    if (p !== end) throw new RangeError(`malformed section ${id}`);
    chunks.push(new Uint8Array([id, ...u32(section.length), ...section]));
    off = end;
  }
  return concat(chunks);
}
