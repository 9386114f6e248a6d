/**
 * Yield points for modules that share a thread. The embedded engine runs many modules in one
 * isolate, each suspended (JSPI) while it waits in a WASI call; a module that computes without
 * calling the host would hold the thread, and a kill could not reach it. So each function entry
 * and each loop header gets a countdown on a global of its own; at zero it calls through a table
 * (exported as `YIELD_EXPORT`) the function the host puts there, which may suspend the module or
 * throw to end it, then refills the count. The rewrite adds a type, a table, a global and an
 * export at the end of their index spaces, so no existing index moves.
 *
 * A module using what the walk does not know (exception handling, GC types, unknown opcodes)
 * is not rewritten: `addYieldPoints` returns undefined and the engine gives it a thread of its
 * own. Exception handling is refused on purpose: a module could catch the host's kill.
 *
 * @module
 */

import { s32, u32 } from "./binary.ts";
import { concatBytes as concat } from "../../../lib/bytes.ts";

/** The export under which a rewritten module offers its yield table (one slot, index 0). */
export const YIELD_EXPORT = "kuasar_yield";

/** Loop iterations and calls between two calls to the host's yield function. */
export const YIELD_FUEL = 10_000;

/** The export under which a rewritten module offers its start function, which it no longer runs itself. */
export const START_EXPORT = "kuasar_start";

class Unsupported extends Error {}

/** A cursor over a module's bytes. */
class Reader {
  constructor(readonly b: Uint8Array, public pos = 0) {}

  byte(): number {
    const v = this.b[this.pos++];
    if (v === undefined) throw new RangeError("unexpected end of module");
    return v;
  }

  u32(): number {
    let v = 0, shift = 0;
    for (;;) {
      const byte = this.byte();
      v += (byte & 0x7f) * 2 ** shift;
      if (!(byte & 0x80)) return v;
      shift += 7;
      if (shift > 35) throw new RangeError("LEB128 too long");
    }
  }

  /** Skips a LEB128 number of any width and sign. */
  leb(): void {
    for (let n = 0; this.byte() & 0x80; n++) if (n > 10) throw new RangeError("LEB128 too long");
  }

  skip(n: number): void {
    this.pos += n;
    if (this.pos > this.b.length) throw new RangeError("unexpected end of module");
  }

  name(): string {
    const len = this.u32();
    const s = new TextDecoder().decode(this.b.subarray(this.pos, this.pos + len));
    this.skip(len);
    return s;
  }

  /** A value type: one byte, or a reference type with its heap type. */
  valtype(): void {
    const t = this.byte();
    if (t === 0x63 || t === 0x64) this.leb();
  }

  /** A block type: empty, a value type, or a type index (s33). */
  blocktype(): void {
    const t = this.b[this.pos];
    if (t === 0x63 || t === 0x64) this.valtype();
    else this.leb();
  }

  memarg(): void {
    const align = this.u32();
    if (align & 0x40) this.u32(); // memory index (multi-memory)
    this.leb(); // offset
  }

  limits(): void {
    const flags = this.byte();
    this.leb();
    if (flags & 0x01) this.leb();
  }
}

/** What the rewrite does at an instruction: a check after a loop's header, a charge before a bulk op. */
type Site = "loop" | "memory" | "table" | undefined;

/** Skips one instruction's immediates (its opcode read). */
function instruction(r: Reader, op: number): Site {
  if (op === 0x02 || op === 0x03 || op === 0x04) {
    r.blocktype();
    return op === 0x03 ? "loop" : undefined;
  }
  if (op <= 0x01 || op === 0x05 || op === 0x0b || op === 0x0f || op === 0x1a || op === 0x1b) {
    return undefined;
  }
  if ((op >= 0x0c && op <= 0x0d) || op === 0x10 || op === 0x12 || op === 0x14 || op === 0x15) {
    r.u32();
  } else if (op === 0x0e) {
    for (let n = r.u32() + 1; n > 0; n--) r.u32();
  } else if (op === 0x11 || op === 0x13) {
    r.u32();
    r.u32();
  } else if (op === 0x1c) {
    for (let n = r.u32(); n > 0; n--) r.valtype();
  } else if (op >= 0x20 && op <= 0x26) {
    r.u32();
  } else if (op >= 0x28 && op <= 0x3e) {
    r.memarg();
  } else if (op === 0x3f || op === 0x40) {
    r.u32();
  } else if (op === 0x41 || op === 0x42) {
    r.leb();
  } else if (op === 0x43) {
    r.skip(4);
  } else if (op === 0x44) {
    r.skip(8);
  } else if (op >= 0x45 && op <= 0xc4) {
    // numeric and sign-extension instructions: no immediates
  } else if (op === 0xd0) {
    r.leb(); // heap type
  } else if (op === 0xd2 || op === 0xd5 || op === 0xd6) {
    r.u32();
  } else if (op === 0xd1 || op === 0xd3 || op === 0xd4) {
    // no immediates
  } else if (op === 0xfc) {
    const sub = r.u32();
    prefixedFc(r, sub);
    // memory.init, .copy, .fill; table.init, .copy, .grow, .fill: their length is on top.
    if (sub === 8 || sub === 10 || sub === 11) return "memory";
    if (sub === 12 || sub === 14 || sub === 15 || sub === 17) return "table";
  } else if (op === 0xfd) {
    prefixedSimd(r, r.u32());
  } else if (op === 0xfe) {
    const sub = r.u32();
    // memory.atomic.wait32/64 would block the thread every module on it shares.
    if (sub === 0x01 || sub === 0x02) throw new Unsupported("atomic waits");
    if (sub === 0x03) r.byte();
    else if (sub === 0x00 || (sub >= 0x10 && sub <= 0x4e)) r.memarg();
    else throw new Unsupported(`atomic opcode ${sub}`);
  } else {
    // 0x06-0x0a, 0x18, 0x19, 0x1f: exception handling; 0xfb: GC; anything else is unknown.
    throw new Unsupported(`opcode 0x${op.toString(16)}`);
  }
  return undefined;
}

/** 0xfc: saturating truncation, bulk memory, tables. */
function prefixedFc(r: Reader, sub: number): void {
  if (sub <= 7) return;
  if (sub === 8 || sub === 10 || sub === 12 || sub === 14) {
    r.u32();
    r.u32();
  } else if (sub === 9 || sub === 11 || sub === 13 || (sub >= 15 && sub <= 17)) r.u32();
  else throw new Unsupported(`0xfc opcode ${sub}`);
}

/** 0xfd: SIMD and relaxed SIMD. */
function prefixedSimd(r: Reader, sub: number): void {
  if (sub <= 11 || sub === 92 || sub === 93) r.memarg();
  else if (sub === 12 || sub === 13) r.skip(16);
  else if (sub >= 21 && sub <= 34) r.byte();
  else if (sub >= 84 && sub <= 91) {
    r.memarg();
    r.byte();
  } else if (sub > 0x113) throw new Unsupported(`SIMD opcode ${sub}`);
}

/** What the rewrite adds to a function body. */
interface Additions {
  /** At entry and after each loop header: the countdown. */
  readonly check: number[];
  /** Before each bulk op, with its scratch local's index: its length >> `shift` charged. */
  readonly charge: (scratch: number, shift: number) => number[];
}

/**
 * A function body (of a function with `params` parameters) with the check at its entry and at
 * each loop header, and around each bulk memory or table op a charge (one check per KiB of
 * memory, per 8 table elements, of its length, kept in a new local) and a check: a loop of large
 * fills or copies yields as often as a plain one.
 */
function rewriteBody(body: Uint8Array, params: number, add: Additions): number[] {
  const r = new Reader(body);
  let locals = params;
  const entries = r.u32();
  const declared = r.pos; // the local declarations after their count
  for (let n = entries; n > 0; n--) {
    locals += r.u32();
    r.valtype();
  }
  const start = r.pos;
  const sites: [number, Site][] = [];
  while (r.pos < body.length) {
    const at = r.pos;
    const site = instruction(r, r.byte());
    if (site === "loop") sites.push([r.pos, site]);
    // Charged before, checked after: a loop body of many large ops yields between them.
    else if (site) sites.push([at, site], [r.pos, "loop"]);
  }
  const bulk = sites.some(([, site]) => site !== "loop");
  const out: number[] = [];
  const copy = (from: number, to: number) => {
    for (let i = from; i < to; i++) out.push(body[i]);
  };
  if (bulk) {
    out.push(...u32(entries + 1));
    copy(declared, start);
    out.push(1, 0x7f); // one i32: the scratch local, index `locals`
  } else copy(0, start);
  out.push(...add.check);
  let from = start;
  for (const [at, site] of sites) {
    copy(from, at);
    out.push(...(site === "loop" ? add.check : add.charge(locals, site === "table" ? 3 : 10)));
    from = at;
  }
  copy(from, body.length);
  return out;
}

interface Section {
  readonly id: number;
  bytes: Uint8Array;
}

/** Where each known section goes, custom sections (0) aside. */
const ORDER = [0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 12, 13, 11, 6];

/** Adds `entry` to the vector section `id` (made when missing); returns the new entry's index. */
function append(sections: Section[], id: number, entry: number[]): number {
  let s = sections.find((x) => x.id === id);
  if (!s) {
    s = { id, bytes: new Uint8Array([0]) };
    const at = sections.findIndex((x) => x.id !== 0 && ORDER[x.id] > ORDER[id]);
    sections.splice(at < 0 ? sections.length : at, 0, s);
  }
  const r = new Reader(s.bytes);
  const count = r.u32();
  s.bytes = new Uint8Array([...u32(count + 1), ...s.bytes.subarray(r.pos), ...entry]);
  return count;
}

/**
 * A copy of `bytes` with yield points (see the module's comment), or undefined when the module
 * uses what the rewrite does not know or is malformed (the caller validates it first: V8 says
 * better what is wrong).
 */
export function addYieldPoints(bytes: Uint8Array): Uint8Array<ArrayBuffer> | undefined {
  try {
    return rewrite(bytes);
  } catch (e) {
    if (e instanceof Unsupported || e instanceof RangeError) return undefined;
    throw e;
  }
}

function rewrite(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  const sections: Section[] = [];
  const top = new Reader(bytes, 8);
  while (top.pos < bytes.length) {
    const id = top.byte();
    const size = top.u32();
    sections.push({ id, bytes: bytes.subarray(top.pos, top.pos + size) });
    top.skip(size);
  }
  // Imported tables and globals come first in their index spaces.
  let tables = 0, globals = 0;
  let start: number | undefined;
  const typeParams: number[] = [], funcTypes: number[] = [];
  for (const s of sections) {
    const r = new Reader(s.bytes);
    if (s.id === 1) {
      for (let n = r.u32(); n > 0; n--) {
        if (r.byte() !== 0x60) throw new Unsupported("GC type definitions");
        const params = r.u32();
        typeParams.push(params);
        for (let m = params; m > 0; m--) r.valtype();
        for (let m = r.u32(); m > 0; m--) r.valtype();
      }
    } else if (s.id === 3) {
      for (let n = r.u32(); n > 0; n--) funcTypes.push(r.u32());
    } else if (s.id === 8) {
      start = r.u32();
    } else if (s.id === 2) {
      for (let n = r.u32(); n > 0; n--) {
        r.name();
        r.name();
        const kind = r.byte();
        if (kind === 0) r.u32();
        else if (kind === 1) {
          r.valtype();
          r.limits();
          tables++;
        } else if (kind === 2) r.limits();
        else if (kind === 3) {
          r.valtype();
          r.byte();
          globals++;
        } else throw new Unsupported(`import kind ${kind}`);
      }
    } else if (s.id === 7) {
      for (let n = r.u32(); n > 0; n--) {
        const name = r.name();
        if (name === YIELD_EXPORT || name === START_EXPORT) {
          throw new Unsupported(`an export named ${name}`);
        }
        r.byte();
        r.u32();
      }
    } else if (s.id === 13) throw new Unsupported("exception tags");
  }
  const type = append(sections, 1, [0x60, 0, 0]);
  const table = tables + append(sections, 4, [0x70, 0x00, 0x01]);
  const g = u32(globals + append(sections, 6, [0x7f, 0x01, 0x41, ...s32(YIELD_FUEL), 0x0b]));
  const name = (s: string) => [...u32(s.length), ...new TextEncoder().encode(s)];
  append(sections, 7, [...name(YIELD_EXPORT), 1, ...u32(table)]);
  if (start !== undefined) {
    // The start function runs once the yield table is filled: the host calls it.
    sections.splice(sections.findIndex((x) => x.id === 8), 1);
    append(sections, 7, [...name(START_EXPORT), 0, ...u32(start)]);
  }
  // fuel -= 1; if (fuel <= 0) { yield(); fuel = YIELD_FUEL }
  const check = [0x23, ...g, 0x41, 1, 0x6b, 0x24, ...g, 0x23, ...g, 0x41, 0, 0x4c, 0x04, 0x40]
    .concat([0x41, 0, 0x11, ...u32(type), ...u32(table), 0x41, ...s32(YIELD_FUEL), 0x24, ...g])
    .concat([0x0b]);
  // local.tee S; fuel -= S >> shift (the op's length stays on the stack)
  const charge = (scratch: number, shift: number) =>
    [0x22, ...u32(scratch), 0x23, ...g, 0x20, ...u32(scratch)]
      .concat([0x41, shift, 0x76, 0x6b, 0x24, ...g]);
  const code = sections.find((s) => s.id === 10);
  if (code) {
    const r = new Reader(code.bytes);
    const count = r.u32();
    const out: number[] = u32(count);
    const parts: Uint8Array[] = [];
    for (let n = count; n > 0; n--) {
      const size = r.u32();
      const params = typeParams[funcTypes[count - n]];
      if (params === undefined) throw new RangeError("a function without a type");
      const body = rewriteBody(code.bytes.subarray(r.pos, r.pos + size), params, { check, charge });
      r.skip(size);
      parts.push(new Uint8Array([...u32(body.length), ...body]));
    }
    code.bytes = concat([new Uint8Array(out), ...parts]);
  }
  const chunks: Uint8Array[] = [bytes.subarray(0, 8)];
  for (const s of sections) chunks.push(new Uint8Array([s.id, ...u32(s.bytes.length)]), s.bytes);
  return concat(chunks);
}
