import assert from "node:assert/strict";
import { Code, FailedPreconditionError, InvalidTransitionError } from "./errors.ts";
import {
  checkDeletable,
  checkProcessTransition,
  type ProcessState,
  processStatusNumber,
} from "./task.ts";

const STATES: ProcessState[] = ["created", "running", "paused", "stopped"];

/** The expected process lifecycle, one row per (from, to) pair. */
const ALLOWED: Record<ProcessState, Record<ProcessState, boolean>> = {
  created: { created: false, running: true, paused: false, stopped: true },
  running: { created: false, running: false, paused: true, stopped: true },
  paused: { created: false, running: true, paused: false, stopped: true },
  stopped: { created: false, running: false, paused: false, stopped: false },
};

for (const from of STATES) {
  for (const to of STATES) {
    const allowed = ALLOWED[from][to];
    Deno.test(`process transition ${from} -> ${to} is ${allowed ? "allowed" : "rejected"}`, () => {
      if (allowed) {
        checkProcessTransition(`container "c1"`, from, to);
        return;
      }
      assert.throws(() => checkProcessTransition(`container "c1"`, from, to), (e: unknown) => {
        assert.ok(e instanceof InvalidTransitionError);
        assert.ok(e instanceof FailedPreconditionError);
        assert.equal(e.code, Code.FAILED_PRECONDITION);
        assert.equal(e.from, from);
        assert.equal(e.to, to);
        assert.equal(e.message, `Cannot move container "c1" from "${from}" to "${to}"`);
        return true;
      });
    });
  }
}

const DELETABLE: Record<ProcessState, boolean> = {
  created: true,
  running: false,
  paused: false,
  stopped: true,
};

for (const s of STATES) {
  Deno.test(`a ${s} process is ${DELETABLE[s] ? "" : "not "}deletable`, () => {
    if (DELETABLE[s]) {
      checkDeletable(`exec process "e1"`, s);
      return;
    }
    assert.throws(() => checkDeletable(`exec process "e1"`, s), (e: unknown) => {
      assert.ok(e instanceof FailedPreconditionError);
      assert.ok(!(e instanceof InvalidTransitionError));
      assert.equal(e.code, Code.FAILED_PRECONDITION);
      assert.equal(e.message, `Cannot delete exec process "e1": it is ${s}`);
      return true;
    });
  });
}

Deno.test("processStatusNumber matches containerd.v1.types.Status", () => {
  // UNKNOWN=0, CREATED=1, RUNNING=2, STOPPED=3, PAUSED=4, PAUSING=5
  const expected: Record<ProcessState, number> = { created: 1, running: 2, stopped: 3, paused: 4 };
  for (const s of STATES) assert.equal(processStatusNumber(s), expected[s]);
  assert.equal(new Set(STATES.map(processStatusNumber)).size, STATES.length);
});
