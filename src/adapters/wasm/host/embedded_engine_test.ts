import assert from "node:assert/strict";
import { join } from "node:path";
import { InvalidArgumentError } from "../../../domain/errors.ts";
import { EmbeddedEngine } from "./embedded_engine.ts";

const te = new TextEncoder();
const name = (s: string) => [s.length, ...te.encode(s)];

/** A module of `(func (param i32))` exported as _start, with `extra` sections after its exports. */
function module(extra: number[][], code: number[]): Uint8Array<ArrayBuffer> {
  const out = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
  for (
    const [id, ...body] of [[1, 1, 0x60, 1, 0x7f, 0], [3, 1, 0], [7, 1, ...name("_start"), 0, 0]]
  ) {
    out.push(id, body.length, ...body);
  }
  for (const [id, ...body] of extra) out.push(id, body.length, ...body);
  out.push(10, code.length, ...code);
  return new Uint8Array(out);
}

Deno.test("embedded engine: a module the yield-point rewrite would mend is still refused", async () => {
  const dir = await Deno.makeTempDir();
  const engine = new EmbeddedEngine({ warm: 0, maxIdle: 0, idleMs: 1000 });
  try {
    const cases = {
      // A start function must take and return nothing: the rewrite would export it instead.
      "start-with-params": module([[8, 0]], [1, 2, 0, 0x0b]),
      // Bytes after the last function body: the rewrite would rebuild the section without them.
      "trailing-code-bytes": module([], [1, 2, 0, 0x0b, 0x00]),
    };
    for (const [what, bytes] of Object.entries(cases)) {
      assert.equal(WebAssembly.validate(bytes), false, what);
      const path = join(dir, `${what}.wasm`);
      await Deno.writeFile(path, bytes);
      await assert.rejects(
        engine.prepare({
          token: what,
          exitFile: join(dir, `${what}.exit`),
          engine: "embedded",
          module: path,
          func: "_start",
          args: [],
          env: [],
          preopens: [],
        }),
        (e) => e instanceof InvalidArgumentError && /Invalid Wasm module/.test(e.message),
        what,
      );
    }
  } finally {
    engine.close();
    await Deno.remove(dir, { recursive: true });
  }
});
