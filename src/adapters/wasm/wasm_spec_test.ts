import assert from "node:assert/strict";
import { join } from "node:path";
import { FailedPreconditionError, InvalidArgumentError } from "../../domain/errors.ts";
import type { OciSpec } from "../../domain/oci.ts";
import {
  annotatedWasm,
  checkIsWasm,
  engineOf,
  memoryLimitOf,
  modulePath,
  preopensOf,
  rootfsOf,
  wasmEntry,
} from "./wasm_spec.ts";

Deno.test("wasmEntry: args[0] is the module; #func picks an export", () => {
  assert.deepEqual(wasmEntry({ process: { args: ["/app.wasm", "x"] } }), {
    path: "/app.wasm",
    func: "_start",
  });
  assert.deepEqual(wasmEntry({ process: { args: ["/m.wasm#run"] } }), {
    path: "/m.wasm",
    func: "run",
  });
  assert.deepEqual(wasmEntry({ process: { args: ["/odd#"] } }).func, "_start");
  assert.throws(() => wasmEntry({ process: { args: [] } }), InvalidArgumentError);
});

Deno.test("engineOf: container annotation, then pod annotation, then the default", () => {
  const spec = (e?: string): OciSpec => ({
    annotations: e ? { "io.kuasar.wasm.engine": e } : {},
  });
  assert.equal(engineOf(spec(), {}, "embedded"), "embedded");
  assert.equal(engineOf(spec(), { "io.kuasar.wasm.engine": "wasmedge" }, "embedded"), "wasmedge");
  assert.equal(
    engineOf(spec("wasmtime"), { "io.kuasar.wasm.engine": "wasmedge" }, "embedded"),
    "wasmtime",
  );
  assert.throws(() => engineOf(spec("v8"), {}, "embedded"), InvalidArgumentError);
});

Deno.test("annotatedWasm and memoryLimitOf read the usual fields", () => {
  assert.ok(annotatedWasm({ annotations: { "module.wasm.image/variant": "compat" } }));
  assert.ok(annotatedWasm({ annotations: { "run.oci.handler": "wasm" } }));
  assert.ok(!annotatedWasm({ annotations: { "run.oci.handler": "krun" } }));
  assert.equal(memoryLimitOf({ linux: { resources: { memory: { limit: 1024 } } } }), 1024);
  assert.equal(memoryLimitOf({ linux: { resources: { memory: { limit: 0 } } } }), undefined);
  assert.equal(memoryLimitOf({}), undefined);
  assert.equal(rootfsOf("/b", { root: { path: "rootfs" } }), "/b/rootfs");
  assert.equal(rootfsOf("/b", { root: { path: "/abs" } }), "/abs");
});

Deno.test("modulePath, checkIsWasm and preopensOf against a real directory", async () => {
  const root = await Deno.makeTempDir({ prefix: "kuasar-wasm-spec-" });
  try {
    await Deno.writeFile(join(root, "m.wasm"), new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]));
    await Deno.writeTextFile(join(root, "sh"), "#!/bin/sh\n");
    await Deno.symlink("/m.wasm", join(root, "link"));
    const entry = { path: "link", func: "_start" };
    assert.equal(modulePath(root, entry), join(root, "m.wasm"));
    await checkIsWasm(join(root, "m.wasm"), entry, false);
    await assert.rejects(
      checkIsWasm(join(root, "sh"), { path: "/sh", func: "_start" }, false),
      (e) => e instanceof FailedPreconditionError && /runc handler/.test(e.message),
    );
    assert.throws(
      () => modulePath(root, { path: "../../x", func: "_start" }),
      FailedPreconditionError,
    );
    const dir = await Deno.makeTempDir({ dir: root });
    const spec: OciSpec = {
      mounts: [
        { destination: "/proc", type: "proc", source: "proc" },
        { destination: "/data", type: "bind", source: dir, options: ["rbind"] },
        { destination: "/etc/hosts", type: "bind", source: join(root, "sh"), options: ["bind"] },
        { destination: "/gone", type: "bind", source: join(root, "missing"), options: ["bind"] },
      ],
    };
    assert.deepEqual(await preopensOf(spec, root), [
      { guest: "/", host: root },
      { guest: "/data", host: dir },
    ]);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("modulePath looks a bare name up in PATH inside the rootfs", async () => {
  const root = await Deno.makeTempDir({ prefix: "kuasar-wasm-path-" });
  try {
    await Deno.mkdir(join(root, "bin"));
    await Deno.writeTextFile(join(root, "bin/sh"), "#!/bin/sh\n");
    await Deno.writeTextFile(join(root, "here.wasm"), "");
    assert.equal(modulePath(root, { path: "sh", func: "_start" }), join(root, "bin/sh"));
    assert.equal(
      modulePath(root, { path: "here.wasm", func: "_start" }, "/", ["PATH=/nowhere"]),
      join(root, "here.wasm"),
    );
    assert.throws(
      () => modulePath(root, { path: "sh", func: "_start" }, "/", ["PATH=/usr/bin"]),
      /Cannot find the entrypoint "sh"/,
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
