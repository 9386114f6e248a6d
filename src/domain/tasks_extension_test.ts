import assert from "node:assert/strict";
import fc from "fast-check";
import { Code, InvalidArgumentError } from "./errors.ts";
import {
  diffTaskResources,
  parseTaskResources,
  type ProcessResource,
  type TaskResource,
  type TaskResources,
  TASKS_EXTENSION,
  TASKS_FIELD,
} from "./tasks_extension.ts";

function task(id: string, execIds: string[] = []): TaskResource {
  return {
    task_id: id,
    rootfs: [],
    stdin: "",
    stdout: "",
    stderr: "",
    processes: execIds.map(proc),
  };
}

function proc(id: string): ProcessResource {
  return { exec_id: id, stdin: "", stdout: "", stderr: "" };
}

function assertInvalid(input: string | Uint8Array, message?: RegExp): void {
  assert.throws(() => parseTaskResources(input), (e: unknown) => {
    assert.ok(e instanceof InvalidArgumentError, `expected InvalidArgumentError, got ${e}`);
    assert.equal(e.code, Code.INVALID_ARGUMENT);
    assert.match(e.message, /^Cannot parse extensions\.tasks: /);
    if (message) assert.match(e.message, message);
    return true;
  });
}

Deno.test("the extensions.tasks field and key names are Kuasar's", () => {
  assert.equal(TASKS_FIELD, "extensions.tasks");
  assert.equal(TASKS_EXTENSION, "tasks");
});

Deno.test("parseTaskResources reads a full document from a string and from bytes", () => {
  const doc = {
    tasks: [{
      task_id: "c1",
      spec: { ociVersion: "1.1.0", process: { args: ["sh"] } },
      rootfs: [{ destination: "/", type: "overlay", source: "overlay", options: ["ro"] }],
      stdin: "/in",
      stdout: "/out",
      stderr: "/err",
      processes: [{ exec_id: "e1", spec: { args: ["ls"] }, stdin: "", stdout: "/o", stderr: "" }],
    }],
  };
  const text = JSON.stringify(doc);
  for (const input of [text, new TextEncoder().encode(text)]) {
    const r = parseTaskResources(input);
    assert.deepEqual(r, doc);
  }
});

Deno.test("parseTaskResources fills defaults for omitted and null fields", () => {
  assert.deepEqual(parseTaskResources("{}"), { tasks: [] });
  assert.deepEqual(parseTaskResources(`{"tasks":null}`), { tasks: [] });
  const r = parseTaskResources(
    `{"tasks":[{"task_id":"c1","rootfs":[{"options":null}],"processes":[{"exec_id":"e1"}]}]}`,
  );
  assert.deepEqual(r.tasks[0], {
    task_id: "c1",
    rootfs: [{ destination: "", type: "", source: "", options: [] }],
    stdin: "",
    stdout: "",
    stderr: "",
    processes: [{ exec_id: "e1", stdin: "", stdout: "", stderr: "" }],
  });
  const r2 = parseTaskResources(`{"tasks":[{"task_id":"c2","rootfs":null,"processes":null}]}`);
  assert.deepEqual(r2.tasks[0].rootfs, []);
  assert.deepEqual(r2.tasks[0].processes, []);
});

Deno.test("parseTaskResources keeps unknown fields out and spec values as given", () => {
  const r = parseTaskResources(`{"tasks":[{"task_id":"c1","extra":1,"spec":[1,2]}],"other":true}`);
  assert.deepEqual(r, {
    tasks: [{
      task_id: "c1",
      spec: [1, 2],
      rootfs: [],
      stdin: "",
      stdout: "",
      stderr: "",
      processes: [],
    }],
  });
});

Deno.test("parseTaskResources rejects text that is not JSON with InvalidArgumentError", () => {
  for (const bad of ["", "{", "tasks", "{'tasks':[]}", "[1,", "\u0000", '{"tasks":[]}x']) {
    assertInvalid(bad, /invalid JSON/);
  }
  assertInvalid(new Uint8Array([0xff, 0xfe, 0x00]), /invalid JSON/);
});

Deno.test("parseTaskResources rejects JSON of the wrong shape, naming the path", () => {
  const cases: [string, RegExp][] = [
    ["null", /document/],
    ["[]", /document/],
    ["42", /document/],
    [`"tasks"`, /document/],
    [`{"tasks":5}`, /: tasks: /],
    [`{"tasks":{}}`, /: tasks: /],
    [`{"tasks":[1]}`, /tasks\.0/],
    [`{"tasks":[{}]}`, /tasks\.0\.task_id/],
    [`{"tasks":[{"task_id":1}]}`, /tasks\.0\.task_id/],
    [`{"tasks":[{"task_id":"c1","stdout":3}]}`, /tasks\.0\.stdout/],
    [`{"tasks":[{"task_id":"c1","rootfs":"x"}]}`, /tasks\.0\.rootfs/],
    [`{"tasks":[{"task_id":"c1","rootfs":[{"options":"ro"}]}]}`, /tasks\.0\.rootfs\.0\.options/],
    [`{"tasks":[{"task_id":"c1","rootfs":[{"options":[1]}]}]}`, /tasks\.0\.rootfs\.0\.options\.0/],
    [`{"tasks":[{"task_id":"c1","processes":[{}]}]}`, /tasks\.0\.processes\.0\.exec_id/],
    [`{"tasks":[{"task_id":"c1","processes":[{"exec_id":null}]}]}`, /processes\.0\.exec_id/],
    [`{"tasks":[{"task_id":"c1"},{"task_id":"c2","processes":"e"}]}`, /tasks\.1\.processes/],
  ];
  for (const [json, msg] of cases) assertInvalid(json, msg);
});

// ---------------------------------------------------------------- diff properties

const smallId = fc.stringMatching(/^[a-e][0-9]?$/);

/** Documents with unique task ids and unique exec ids within each task. */
const docArb: fc.Arbitrary<TaskResources> = fc
  .uniqueArray(
    fc.record({ id: smallId, execs: fc.uniqueArray(smallId, { maxLength: 5 }) }),
    { selector: (t) => t.id, maxLength: 6 },
  )
  .map((ts) => ({ tasks: ts.map((t) => task(t.id, t.execs)) }));

function ids(doc: TaskResources): Set<string> {
  return new Set(doc.tasks.map((t) => t.task_id));
}

function execPairs(doc: TaskResources, keep: Set<string>): Set<string> {
  const out = new Set<string>();
  for (const t of doc.tasks) {
    if (!keep.has(t.task_id)) continue;
    for (const p of t.processes) out.add(`${t.task_id}/${p.exec_id}`);
  }
  return out;
}

function difference(a: Set<string>, b: Set<string>): Set<string> {
  return new Set([...a].filter((x) => !b.has(x)));
}

Deno.test("diffTaskResources of a document with itself is empty (property)", () => {
  fc.assert(
    fc.property(docArb, (doc) => {
      const d = diffTaskResources(doc, doc);
      assert.deepEqual(d, {
        addedTasks: [],
        removedTasks: [],
        addedProcesses: [],
        removedProcesses: [],
      });
      // A structural copy is the same document.
      assert.deepEqual(diffTaskResources(doc, structuredClone(doc)).addedTasks, []);
    }),
  );
});

Deno.test("diffTaskResources reports exactly the added and removed tasks (property)", () => {
  fc.assert(
    fc.property(docArb, docArb, (before, after) => {
      const d = diffTaskResources(before, after);
      const added = new Set(d.addedTasks.map((t) => t.task_id));
      const removed = new Set(d.removedTasks);
      assert.deepEqual(added, difference(ids(after), ids(before)));
      assert.deepEqual(removed, difference(ids(before), ids(after)));
      assert.equal(d.addedTasks.length, added.size);
      assert.equal(d.removedTasks.length, removed.size);
      // Added tasks are the objects of the new document, in its order.
      assert.deepEqual(d.addedTasks, after.tasks.filter((t) => added.has(t.task_id)));
    }),
  );
});

Deno.test("diffTaskResources reports exec changes only within tasks kept by both (property)", () => {
  fc.assert(
    fc.property(docArb, docArb, (before, after) => {
      const d = diffTaskResources(before, after);
      const kept = new Set([...ids(before)].filter((id) => ids(after).has(id)));
      const was = execPairs(before, kept);
      const is = execPairs(after, kept);
      const addedP = d.addedProcesses.map((p) => `${p.taskId}/${p.process.exec_id}`);
      const removedP = d.removedProcesses.map((p) => `${p.taskId}/${p.execId}`);
      assert.deepEqual(new Set(addedP), difference(is, was));
      assert.deepEqual(new Set(removedP), difference(was, is));
      assert.equal(addedP.length, new Set(addedP).size);
      assert.equal(removedP.length, new Set(removedP).size);
      for (const p of [...d.addedProcesses, ...d.removedProcesses]) {
        assert.ok(kept.has(p.taskId));
      }
    }),
  );
});

Deno.test("diffTaskResources is antisymmetric: swapping documents swaps added and removed (property)", () => {
  fc.assert(
    fc.property(docArb, docArb, (a, b) => {
      const ab = diffTaskResources(a, b);
      const ba = diffTaskResources(b, a);
      assert.deepEqual(
        new Set(ab.addedTasks.map((t) => t.task_id)),
        new Set(ba.removedTasks),
      );
      assert.deepEqual(
        new Set(ab.addedProcesses.map((p) => `${p.taskId}/${p.process.exec_id}`)),
        new Set(ba.removedProcesses.map((p) => `${p.taskId}/${p.execId}`)),
      );
    }),
  );
});

Deno.test("diffTaskResources from an empty document adds every task and no exec processes (property)", () => {
  fc.assert(
    fc.property(docArb, (doc) => {
      const d = diffTaskResources({ tasks: [] }, doc);
      assert.deepEqual(d.addedTasks, doc.tasks);
      assert.deepEqual(d.addedProcesses, []);
      assert.deepEqual(d.removedTasks, []);
      const back = diffTaskResources(doc, { tasks: [] });
      assert.deepEqual(back.removedTasks, doc.tasks.map((t) => t.task_id));
      assert.deepEqual(back.removedProcesses, []);
    }),
  );
});

Deno.test("diffTaskResources example: one task added, one removed, one exec added and one removed", () => {
  const before = { tasks: [task("c1", ["e1", "e2"]), task("c2")] };
  const after = { tasks: [task("c1", ["e2", "e3"]), task("c3", ["x"])] };
  const d = diffTaskResources(before, after);
  assert.deepEqual(d.addedTasks.map((t) => t.task_id), ["c3"]);
  assert.deepEqual(d.removedTasks, ["c2"]);
  assert.deepEqual(d.addedProcesses, [{ taskId: "c1", process: proc("e3") }]);
  assert.deepEqual(d.removedProcesses, [{ taskId: "c1", execId: "e1" }]);
});

Deno.test("a parsed document diffs against itself as empty", () => {
  const json = `{"tasks":[{"task_id":"c1","processes":[{"exec_id":"e1"}]}]}`;
  const d = diffTaskResources(parseTaskResources(json), parseTaskResources(json));
  assert.equal(d.addedTasks.length + d.removedTasks.length, 0);
  assert.equal(d.addedProcesses.length + d.removedProcesses.length, 0);
});
