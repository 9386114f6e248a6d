import assert from "node:assert/strict";
import { join } from "node:path";
import { AlreadyExistsError, InvalidArgumentError } from "../../domain/errors.ts";
import { emptyPodConfig } from "../../domain/pod_config.ts";
import type { SandboxRecord } from "../../domain/sandbox.ts";
import { now } from "../../domain/time.ts";
import { JsonSandboxStore } from "./json_sandbox_store.ts";

function record(id: string): SandboxRecord {
  return {
    id,
    kind: "runc",
    state: "running",
    createdAt: now(),
    pid: 42,
    netnsPath: "",
    pod: emptyPodConfig(),
    annotations: {},
    labels: { app: "x" },
    extensions: {},
    taskAddress: "ttrpc+unix:///run/x/task.sock",
    taskApiVersion: 3,
    backend: {},
    containers: {},
  };
}

async function withStore(fn: (s: JsonSandboxStore, root: string) => Promise<void>) {
  const root = await Deno.makeTempDir({ prefix: "store-" });
  try {
    await fn(new JsonSandboxStore(root), root);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

Deno.test("JSON store: records round-trip; a second prepare of an id is ALREADY_EXISTS", () =>
  withStore(async (s) => {
    const a = record("a".repeat(64)), b = record("pod-b");
    for (const r of [a, b]) {
      await s.prepare(r.id);
      await s.save(r);
    }
    b.state = "stopped";
    await s.save(b);
    const { records, broken } = await s.list();
    assert.deepEqual(broken, []);
    assert.deepEqual(records.sort((x, y) => x.id.localeCompare(y.id)), [a, b]);
    await assert.rejects(s.prepare(a.id), AlreadyExistsError);
    assert.throws(() => s.sandboxDir("../../etc"), InvalidArgumentError);
    await s.remove(a.id);
    assert.deepEqual((await s.list()).records.map((r) => r.id), [b.id]);
  }));

Deno.test("JSON store: a crash's leftovers are told apart from records and the daemon's own dirs", () =>
  withStore(async (s, root) => {
    const ok = record("ok");
    await s.prepare(ok.id);
    await s.save(ok);
    // A temporary file of a write the crash interrupted: dropped, the record stands.
    await Deno.writeTextFile(join(root, "ok", ".sandbox.json.0000"), '{"form');
    // A Create that never saved, and a record of another format: broken.
    await Deno.mkdir(join(root, "halfmade"));
    await s.prepare("other");
    await Deno.writeTextFile(join(root, "other", "sandbox.json"), '{"format":99}');
    // The kinds' daemon-wide directories and foreign names are not sandboxes.
    for (const d of ["exits", "runc", "wasm-io", "not a sandbox"]) await Deno.mkdir(join(root, d));
    const { records, broken } = await s.list();
    assert.deepEqual(records, [ok]);
    assert.deepEqual(broken.map((b) => b.id).sort(), ["halfmade", "other"]);
    assert.deepEqual(
      (await Array.fromAsync(Deno.readDir(join(root, "ok")))).map((e) => e.name),
      ["sandbox.json"],
    );
  }));
