import assert from "node:assert/strict";
import { join } from "node:path";
import {
  AlreadyExistsError,
  FailedPreconditionError,
  InvalidArgumentError,
} from "../../domain/errors.ts";
import { emptyPodConfig } from "../../domain/pod_config.ts";
import type { SandboxRecord } from "../../domain/sandbox.ts";
import { now } from "../../domain/time.ts";
import { JsonSandboxStore } from "./json_sandbox_store.ts";
import { OLD_ENTRY_NAMES, StateLayout } from "../os/state_layout.ts";

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
    // The daemon's own entries and foreign names are not sandboxes.
    for (const d of [".exits", ".runc", ".wasm-io", "not a sandbox"]) {
      await Deno.mkdir(join(root, d));
    }
    // A directory named like an old daemon entry is a pod's like any other in the current layout.
    await Deno.mkdir(join(root, "runc"));
    const { records, broken } = await s.list();
    assert.deepEqual(records, [ok]);
    assert.deepEqual(broken.map((b) => b.id).sort(), ["halfmade", "other", "runc"]);
    assert.deepEqual(
      (await Array.fromAsync(Deno.readDir(join(root, "ok")))).map((e) => e.name),
      ["sandbox.json"],
    );
  }));

Deno.test("JSON store: every daemon entry's name is one no pod id can take", () => {
  const layout = new StateLayout("/run/k");
  for (const e of ["exits", "sockets", "runcRoot", "relayControl", "wasmIo"] as const) {
    const name = layout.path(e).slice("/run/k/".length);
    assert.ok(name.startsWith("."), name);
    assert.throws(() => new JsonSandboxStore("/run/k").sandboxDir(name), InvalidArgumentError);
  }
  assert.equal(layout.reservedFor("runc"), undefined);
});

Deno.test("JSON store: a --dir of the old layout keeps its entries, which are no pods", () =>
  withStore(async (_, root) => {
    // What an older version left: its exit records and runc root, and a pod it let be called "s".
    await Deno.mkdir(join(root, "exits"));
    await Deno.writeTextFile(join(root, "exits", "c@x"), "0");
    await Deno.mkdir(join(root, "runc", "c1"), { recursive: true });
    const layout = await StateLayout.detect(root);
    assert.equal(layout.old, true);
    assert.equal(layout.path("runcRoot"), join(root, "runc"));
    const s = new JsonSandboxStore(root, layout);
    const pod = record("s");
    await Deno.mkdir(join(root, "s"));
    await s.save(pod);
    const { records, broken } = await s.list();
    assert.deepEqual(records, [pod]);
    assert.deepEqual(broken, []);
    await assert.rejects(s.prepare("runc"), FailedPreconditionError);
    for (const id of OLD_ENTRY_NAMES) await assert.rejects(s.prepare(id), FailedPreconditionError);
    // Removing the pod that shares a daemon entry's name leaves the entry.
    await s.remove("s");
    assert.ok((await Deno.stat(join(root, "s"))).isDirectory);
    assert.deepEqual((await s.list()).records, []);
    assert.ok((await Deno.stat(join(root, "runc", "c1"))).isDirectory);
  }));

Deno.test("JSON store: the current layout is kept once made, and a pod named exits is no old layout", () =>
  withStore(async (_, root) => {
    assert.equal((await StateLayout.detect(root)).old, false);
    await Deno.mkdir(join(root, "exits"));
    await Deno.writeTextFile(join(root, "exits", "sandbox.json"), "{}");
    assert.equal((await StateLayout.detect(root)).old, false);
    await Deno.remove(join(root, "exits", "sandbox.json"));
    await Deno.mkdir(join(root, ".exits"));
    assert.equal((await StateLayout.detect(root)).old, false);
  }));

Deno.test("JSON store: a runc root configured as <dir>/<name> is no pod's name", () => {
  const layout = new StateLayout("/run/kuasar-runc");
  layout.reserve("/run/kuasar-runc/runc", "runc's root");
  layout.reserve("/run/kuasar-runc/.runc", "runc's root");
  layout.reserve("/var/lib/runc", "runc's root");
  assert.equal(layout.reservedFor("runc"), "runc's root");
  assert.equal(layout.reservedFor("lib"), undefined);
});
