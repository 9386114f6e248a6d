import assert from "node:assert/strict";
import fc from "fast-check";
import { Code, InvalidArgumentError } from "./errors.ts";
import { type IdKind, MAX_ID_LENGTH, validateId } from "./ids.ts";

/** containerd's identifiers.Validate pattern, kept here as the reference model. */
const CONTAINERD_ID = /^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$/;

const alnum = fc.constantFrom(
  ..."abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789".split(""),
);
const alnumRun = fc.array(alnum, { minLength: 1, maxLength: 12 }).map((a) => a.join(""));
const separator = fc.constantFrom(".", "_", "-");

/** Ids built the way containerd's pattern describes them, at most 76 characters. */
const validId = fc
  .tuple(alnumRun, fc.array(fc.tuple(separator, alnumRun), { maxLength: 8 }))
  .map(([head, rest]) => head + rest.map(([s, r]) => s + r).join(""))
  .filter((s) => s.length <= MAX_ID_LENGTH);

const kinds: IdKind[] = ["sandbox", "container", "exec"];
const kind = fc.constantFrom(...kinds);

function assertRejected(k: IdKind, value: string): void {
  assert.throws(() => validateId(k, value), (e: unknown) => {
    assert.ok(e instanceof InvalidArgumentError, `expected InvalidArgumentError for ${value}`);
    assert.equal(e.code, Code.INVALID_ARGUMENT);
    assert.match(e.message, new RegExp(`^Invalid ${k} id`));
    return true;
  });
}

Deno.test("validateId accepts typical containerd and Kubernetes ids unchanged", () => {
  const ok = [
    "a",
    "0",
    "3f2a",
    "sandbox-1",
    "my_container.v2",
    "a.b_c-d",
    "f".repeat(64),
    "x".repeat(MAX_ID_LENGTH),
    "A1-b2.C3_d4",
  ];
  for (const id of ok) {
    for (const k of kinds) assert.equal(validateId(k, id), id);
  }
});

Deno.test("validateId rejects a table of malformed ids with InvalidArgumentError", () => {
  const bad = [
    "",
    "/",
    "a/b",
    "/abs",
    "..",
    "../../etc",
    "a..b",
    ".",
    ".hidden",
    "trailing.",
    "-lead",
    "trail-",
    "_x",
    "a--b",
    "a._b",
    "a b",
    " a",
    "a\t",
    "a\nb",
    "a\0b",
    "\0",
    "ünïcode",
    "a:b",
    "a@b",
    "a\\b",
    "x".repeat(MAX_ID_LENGTH + 1),
  ];
  for (const id of bad) {
    for (const k of kinds) assertRejected(k, id);
  }
});

Deno.test("validateId error messages name the empty and the over-long cases", () => {
  assert.throws(() => validateId("exec", ""), /Invalid exec id: id is empty/);
  assert.throws(
    () => validateId("container", "y".repeat(77)),
    /Invalid container id "y{20}\.\.\.": longer than 76 characters/,
  );
});

Deno.test("validateId accepts every id matching containerd's pattern (property)", () => {
  fc.assert(
    fc.property(kind, validId, (k, id) => {
      assert.ok(CONTAINERD_ID.test(id));
      assert.equal(validateId(k, id), id);
    }),
  );
});

Deno.test("validateId rejects any string containing a slash (property)", () => {
  fc.assert(
    fc.property(kind, fc.string(), fc.string(), (k, a, b) => assertRejected(k, `${a}/${b}`)),
  );
});

Deno.test("validateId rejects any string containing '..' (property)", () => {
  fc.assert(
    fc.property(kind, fc.string(), fc.string(), (k, a, b) => assertRejected(k, `${a}..${b}`)),
  );
});

Deno.test("validateId rejects any string containing whitespace (property)", () => {
  const ws = fc.constantFrom(" ", "\t", "\n", "\r", "\v", "\f", "\u00a0", "\u2003", "\u3000");
  fc.assert(
    fc.property(kind, validId, ws, validId, (k, a, w, b) => {
      assertRejected(k, `${a}${w}${b}`);
      assertRejected(k, `${w}${a}`);
      assertRejected(k, `${a}${w}`);
    }),
  );
});

Deno.test("validateId rejects any string containing NUL (property)", () => {
  fc.assert(
    fc.property(kind, fc.string(), fc.string(), (k, a, b) => assertRejected(k, `${a}\0${b}`)),
  );
});

Deno.test("validateId rejects anything longer than 76 characters, even if well-formed (property)", () => {
  const longValid = fc
    .array(alnum, { minLength: MAX_ID_LENGTH + 1, maxLength: 200 })
    .map((a) => a.join(""));
  fc.assert(fc.property(kind, longValid, (k, id) => assertRejected(k, id)));
  fc.assert(
    fc.property(kind, fc.string({ minLength: MAX_ID_LENGTH + 1, maxLength: 300 }), (k, id) => {
      if (id.length > MAX_ID_LENGTH) assertRejected(k, id);
    }),
  );
});

Deno.test("validateId agrees with containerd's pattern and length limit on arbitrary strings (property)", () => {
  const anyString = fc.oneof(
    fc.string({ maxLength: 90 }),
    fc.string({ unit: "binary", maxLength: 90 }),
    validId,
    fc.stringMatching(/^[a-z0-9._\-/ ]{0,80}$/),
  );
  fc.assert(
    fc.property(kind, anyString, (k, s) => {
      const expected = s.length > 0 && s.length <= MAX_ID_LENGTH && CONTAINERD_ID.test(s);
      let accepted: boolean;
      try {
        accepted = validateId(k, s) === s;
      } catch (e) {
        assert.ok(e instanceof InvalidArgumentError);
        accepted = false;
      }
      assert.equal(accepted, expected, JSON.stringify(s));
    }),
    { numRuns: 500 },
  );
});
