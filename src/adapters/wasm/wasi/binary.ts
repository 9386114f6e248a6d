/**
 * The pieces of the Wasm binary format that the module rewrites (memory caps, yield points)
 * share: LEB128 numbers.
 *
 * @module
 */

/** An unsigned LEB128 at `off`: its value and the offset after it. */
export function readU32(b: Uint8Array, off: number): [number, number] {
  let v = 0, shift = 0, i = off;
  for (;;) {
    const byte = b[i++];
    if (byte === undefined) throw new RangeError("truncated LEB128");
    v += (byte & 0x7f) * 2 ** shift;
    if (!(byte & 0x80)) break;
    shift += 7;
    if (shift > 35) throw new RangeError("LEB128 too long");
  }
  return [v, i];
}

/** `v` as an unsigned LEB128. */
export function u32(v: number): number[] {
  const out: number[] = [];
  do {
    let byte = v & 0x7f;
    v = Math.floor(v / 128);
    if (v) byte |= 0x80;
    out.push(byte);
  } while (v);
  return out;
}

/** `v` (a 32-bit integer) as a signed LEB128. */
export function s32(v: number): number[] {
  const out: number[] = [];
  for (;;) {
    const byte = v & 0x7f;
    v >>= 7;
    if ((v === 0 && !(byte & 0x40)) || (v === -1 && (byte & 0x40))) return [...out, byte];
    out.push(byte | 0x80);
  }
}
