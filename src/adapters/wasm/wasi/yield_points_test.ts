import assert from "node:assert/strict";
import { s32 } from "./binary.ts";
import { addYieldPoints, START_EXPORT, YIELD_EXPORT, YIELD_FUEL } from "./yield_points.ts";

const te = new TextEncoder();

/** A module from its sections ([id, content bytes]). */
function module(...sections: [number, number[]][]): Uint8Array<ArrayBuffer> {
  const out = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
  for (const [id, body] of sections) out.push(id, body.length, ...body);
  return new Uint8Array(out);
}

function name(s: string): number[] {
  return [s.length, ...te.encode(s)];
}

/** `run(n)`: a loop of n turns (n >= 1); with imports, it reads imported global 0 each turn. */
function counting(withImports: boolean): Uint8Array<ArrayBuffer> {
  const read = withImports ? [0x23, 0x00, 0x1a] : []; // global.get 0; drop
  const body = [0x00, 0x03, 0x40, ...read, 0x20, 0, 0x41, 1, 0x6b, 0x22, 0, 0x0d, 0, 0x0b, 0x0b];
  return module(
    [1, [1, 0x60, 1, 0x7f, 0]], // (i32) -> ()
    ...(withImports
      ? [[2, [
        2,
        ...name("m"),
        ...name("g"),
        3,
        0x7f,
        0,
        ...name("m"),
        ...name("t"),
        1,
        0x70,
        0,
        1,
      ]]]
      : []) as [number, number[]][],
    [3, [1, 0]],
    ...(withImports ? [[4, [1, 0x70, 0, 2]], [6, [1, 0x7f, 1, 0x41, 7, 0x0b]]] : []) as [
      number,
      number[],
    ][],
    [7, [1, ...name("run"), 0, 0]],
    [10, [1, body.length, ...body]],
  );
}

/** Instantiates a rewritten module with a yield function that counts its calls. */
function instantiate(
  bytes: Uint8Array<ArrayBuffer>,
  imports: WebAssembly.Imports = {},
): { run: (n: number) => void; yields: () => number } {
  let calls = 0;
  const helper = new WebAssembly.Instance(
    new WebAssembly.Module(
      module([1, [1, 0x60, 0, 0]], [2, [1, ...name("k"), ...name("y"), 0, 0]], [
        7,
        [1, ...name("y"), 0, 0],
      ]),
    ),
    { k: { y: () => void calls++ } },
  );
  const inst = new WebAssembly.Instance(new WebAssembly.Module(bytes), imports);
  (inst.exports[YIELD_EXPORT] as WebAssembly.Table).set(0, helper.exports.y as () => void);
  return { run: inst.exports.run as (n: number) => void, yields: () => calls };
}

Deno.test("yield points: every loop turn and call counts; the host is called each YIELD_FUEL", () => {
  const bytes = addYieldPoints(counting(false));
  assert.ok(bytes);
  // Checks: one at the call, one per loop turn.
  for (const [turns, yields] of [[YIELD_FUEL - 2, 0], [YIELD_FUEL - 1, 1], [2.5 * YIELD_FUEL, 2]]) {
    const m = instantiate(bytes);
    m.run(turns);
    assert.equal(m.yields(), yields, `${turns} turns`);
  }
  const m = instantiate(bytes);
  for (let i = 0; i < 3; i++) m.run(YIELD_FUEL - 1); // the count goes on across calls
  assert.equal(m.yields(), 3);
});

Deno.test("yield points: imported globals and tables keep their indexes", () => {
  const bytes = addYieldPoints(counting(true));
  assert.ok(bytes);
  const imports = {
    m: {
      g: new WebAssembly.Global({ value: "i32", mutable: false }, 1),
      t: new WebAssembly.Table({ element: "anyfunc", initial: 1 }),
    },
  };
  const m = instantiate(bytes, imports);
  m.run(3 * YIELD_FUEL);
  assert.equal(m.yields(), 3);
  // The module's own exports are as they were, plus the yield table.
  const names = WebAssembly.Module.exports(new WebAssembly.Module(bytes)).map((e) => e.name);
  assert.deepEqual(names, ["run", YIELD_EXPORT]);
});

Deno.test("yield points: an empty module gets its sections in order", () => {
  const bytes = addYieldPoints(module());
  assert.ok(bytes);
  assert.deepEqual(
    WebAssembly.Module.exports(new WebAssembly.Module(bytes)),
    [{ name: YIELD_EXPORT, kind: "table" }],
  );
});

Deno.test("yield points: what the rewrite does not know is left alone", () => {
  const run = [7, [1, ...name("run"), 0, 0]] as [number, number[]];
  const type = [1, [1, 0x60, 0, 0]] as [number, number[]];
  // try ... end: a module with exception handling could catch the host's kill.
  assert.equal(
    addYieldPoints(module(type, [3, [1, 0]], run, [10, [1, 5, 0, 0x06, 0x40, 0x0b, 0x0b]])),
    undefined,
  );
  // memory.atomic.wait32: it would block the thread the module shares.
  const wait = [0, 0x41, 0, 0x41, 0, 0x42, 0, 0xfe, 0x01, 0x02, 0x00, 0x1a, 0x0b];
  assert.equal(
    addYieldPoints(module(type, [3, [1, 0]], run, [10, [1, wait.length, ...wait]])),
    undefined,
  );
  // A GC prefix opcode, an unknown opcode.
  assert.equal(
    addYieldPoints(module(type, [3, [1, 0]], run, [10, [1, 5, 0, 0xfb, 0, 0x1a, 0x0b]])),
    undefined,
  );
  assert.equal(
    addYieldPoints(module(type, [3, [1, 0]], run, [10, [1, 3, 0, 0xc5, 0x0b]])),
    undefined,
  );
  // A rec group (GC types), an export already named like ours, a truncated module.
  assert.equal(addYieldPoints(module([1, [1, 0x4e, 1, 0x60, 0, 0]])), undefined);
  assert.equal(addYieldPoints(module([7, [1, ...name(YIELD_EXPORT), 0, 0]])), undefined);
  assert.equal(addYieldPoints(counting(false).subarray(0, 30)), undefined);
});

Deno.test("yield points: bulk memory ops are charged by length, one check per KiB", () => {
  // run(n): n turns of memory.fill(0, 0, 64 KiB) on a 1-page memory.
  const body = [0x00, 0x03, 0x40, 0x41, 0, 0x41, 0, 0x41, ...[0x80, 0x80, 0x04], 0xfc, 11, 0]
    .concat([0x20, 0, 0x41, 1, 0x6b, 0x22, 0, 0x0d, 0, 0x0b, 0x0b]);
  const bytes = addYieldPoints(module(
    [1, [1, 0x60, 1, 0x7f, 0]],
    [3, [1, 0]],
    [5, [1, 0, 1]],
    [7, [1, ...name("run"), 0, 0]],
    [10, [1, body.length, ...body]],
  ));
  assert.ok(bytes);
  const m = instantiate(bytes);
  // Each turn: a check at its header, 64 for its 64 KiB, a check after the fill.
  const turns = Math.ceil((3 * YIELD_FUEL) / 66);
  m.run(turns);
  // A charge may take the count below zero; what is below is not carried over a yield.
  const checks = turns * 66 + 1;
  assert.ok(m.yields() >= Math.floor(checks / (YIELD_FUEL + 64)), `${m.yields()} yields`);
  assert.ok(m.yields() <= Math.floor(checks / YIELD_FUEL), `${m.yields()} yields`);
  assert.ok(turns < YIELD_FUEL / 2, "uncharged, the loop would not yield at all");
});

Deno.test("yield points: a start function is run by the host, after the yield table is set", () => {
  // The start function loops 3 fuels' worth: run inside instantiation, it would call an empty slot.
  const body = [0x00, 0x03, 0x40, 0x23, 0, 0x41, 1, 0x6b, 0x24, 0, 0x23, 0, 0x0d, 0, 0x0b, 0x0b];
  const bytes = addYieldPoints(module(
    [1, [1, 0x60, 0, 0]],
    [3, [1, 0]],
    [6, [1, 0x7f, 1, 0x41, ...s32(3 * YIELD_FUEL), 0x0b]],
    [8, [0]],
    [10, [1, body.length, ...body]],
  ));
  assert.ok(bytes);
  const mod = new WebAssembly.Module(bytes);
  assert.deepEqual(WebAssembly.Module.exports(mod).map((e) => e.name), [
    YIELD_EXPORT,
    START_EXPORT,
  ]);
  let calls = 0;
  const inst = new WebAssembly.Instance(mod, {});
  const helper = new WebAssembly.Instance(
    new WebAssembly.Module(
      module([1, [1, 0x60, 0, 0]], [2, [1, ...name("k"), ...name("y"), 0, 0]], [7, [
        1,
        ...name("y"),
        0,
        0,
      ]]),
    ),
    { k: { y: () => void calls++ } },
  );
  (inst.exports[YIELD_EXPORT] as WebAssembly.Table).set(0, helper.exports.y as () => void);
  (inst.exports[START_EXPORT] as () => void)();
  assert.equal(calls, 3);
});
