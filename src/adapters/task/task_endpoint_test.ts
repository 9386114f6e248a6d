import assert from "node:assert/strict";
import { REPLAY_KEY, replayed } from "./task_endpoint.ts";

Deno.test('replayed: only the relay\'s one "1" marks a replay', () => {
  const is = (values?: string[]) =>
    replayed({ metadata: new Map(values ? [[REPLAY_KEY, values]] : []) }).replay;
  assert.equal(is(["1"]), true);
  assert.equal(is(undefined), false);
  // The relay's poison entry before a mark it could not strip, a client's
  // mark beside the relay's, and near misses.
  for (
    const values of [
      [""],
      ["", "1"],
      ["1", "0"],
      ["1", "1"],
      ["0", "1"],
      [" 1"],
      ["1 "],
      ["true"],
      [],
    ]
  ) {
    assert.equal(is(values), false, JSON.stringify(values));
  }
});
