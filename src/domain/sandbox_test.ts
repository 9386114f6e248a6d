import assert from "node:assert/strict";
import { Code, FailedPreconditionError, InvalidTransitionError, KuasarError } from "./errors.ts";
import { checkSandboxTransition, type SandboxState, sandboxStatusString } from "./sandbox.ts";

const STATES: SandboxState[] = ["created", "running", "stopped"];

/** The expected transition table, one row per (from, to) pair. */
const ALLOWED: Record<SandboxState, Record<SandboxState, boolean>> = {
  created: { created: false, running: true, stopped: true },
  running: { created: false, running: false, stopped: true },
  stopped: { created: false, running: false, stopped: true },
};

for (const from of STATES) {
  for (const to of STATES) {
    const allowed = ALLOWED[from][to];
    Deno.test(`sandbox transition ${from} -> ${to} is ${allowed ? "allowed" : "rejected"}`, () => {
      if (allowed) {
        checkSandboxTransition("sb1", from, to);
        return;
      }
      assert.throws(() => checkSandboxTransition("sb1", from, to), (e: unknown) => {
        assert.ok(e instanceof InvalidTransitionError);
        assert.ok(e instanceof FailedPreconditionError);
        assert.ok(e instanceof KuasarError);
        assert.equal(e.code, Code.FAILED_PRECONDITION);
        assert.equal(e.from, from);
        assert.equal(e.to, to);
        assert.equal(e.name, "InvalidTransitionError");
        assert.equal(e.message, `Cannot move sandbox "sb1" from "${from}" to "${to}"`);
        return true;
      });
    });
  }
}

Deno.test("the transition table covers every pair of sandbox states", () => {
  assert.equal(Object.values(ALLOWED).flatMap((r) => Object.keys(r)).length, STATES.length ** 2);
});

Deno.test("sandboxStatusString is SANDBOX_READY only while running", () => {
  const expected: Record<SandboxState, string> = {
    created: "SANDBOX_NOTREADY",
    running: "SANDBOX_READY",
    stopped: "SANDBOX_NOTREADY",
  };
  for (const s of STATES) assert.equal(sandboxStatusString(s), expected[s]);
});
