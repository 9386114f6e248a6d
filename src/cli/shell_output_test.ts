import assert from "node:assert/strict";
import { ShellOutput } from "./shell_output.ts";

const te = new TextEncoder();
const td = new TextDecoder();

function feed(...chunks: string[]): { out: string; code?: number } {
  const s = new ShellOutput();
  let out = "";
  for (const c of chunks) {
    const r = s.push(te.encode(c));
    out += td.decode(r.out);
    if (r.code !== undefined) return { out, code: r.code };
  }
  return { out };
}

Deno.test("ShellOutput: the trailer ends the stream with the shell's status", () => {
  assert.deepEqual(feed("hi\r\n\0kuasar-shell-exit=3\r\n"), { out: "hi\r\n", code: 3 });
  assert.deepEqual(feed("hi\r\n\0kuasar-sh", "ell-exit=1", "2\r", "\n"), {
    out: "hi\r\n",
    code: 12,
  });
});

Deno.test("ShellOutput: a NUL of the shell's own before the trailer is output, not a lost trailer", () => {
  // `printf 'x\0'; exit 7`: the NUL and the trailer in one read, or the NUL ending a read.
  assert.deepEqual(feed("x\0\r\n\0kuasar-shell-exit=7\r\n"), { out: "x\0\r\n", code: 7 });
  assert.deepEqual(feed("x\0", "\r\n\0kuasar-shell-exit=7\r\n"), { out: "x\0\r\n", code: 7 });
  assert.deepEqual(feed("\0\0\0", "\0\0kuasar-shell-exit=0\r\n"), { out: "\0\0\0\0", code: 0 });
  assert.deepEqual(feed("a\0kuasar-shell-exit=x\r\n", "b"), { out: "a\0kuasar-shell-exit=x\r\nb" });
});
