import assert from "node:assert/strict";
import { wasmedgeArgv, wasmtimeRunArgv } from "./cli_engine.ts";
import type { TaskSpec } from "./protocol.ts";

const spec: TaskSpec = {
  token: "p/c",
  exitFile: "/run/x/exits/c@c",
  engine: "wasmedge",
  module: "/b/rootfs/app.wasm",
  func: "_start",
  args: ["/app.wasm", "a", "b c"],
  env: ["A=1", "B=x y"],
  preopens: [{ guest: "/", host: "/b/rootfs" }, { guest: "/data", host: "/srv/d" }],
  memoryLimit: 64 << 20,
};

// Flags as documented by `wasmedge --help` (0.13/0.14): --dir guest:host, --env, --memory-page-limit, --reactor.
Deno.test("wasmedge argv: preopens, env, page limit, module then its arguments", () => {
  assert.deepEqual(wasmedgeArgv(spec), [
    "--dir",
    "/:/b/rootfs",
    "--dir",
    "/data:/srv/d",
    "--env",
    "A=1",
    "--env",
    "B=x y",
    "--memory-page-limit",
    "1024",
    "/b/rootfs/app.wasm",
    "a",
    "b c",
  ]);
  const reactor = wasmedgeArgv({
    ...spec,
    func: "run",
    memoryLimit: undefined,
    env: [],
    preopens: [],
  });
  assert.deepEqual(reactor, ["--reactor", "/b/rootfs/app.wasm", "run", "a", "b c"]);
});

// Flags of `wasmtime run` (v14+): --dir host::guest, --env, -W max-memory-size, --invoke, --argv0.
Deno.test("wasmtime run argv: host::guest dirs, memory in bytes, argv0 from the OCI args", () => {
  assert.deepEqual(wasmtimeRunArgv(spec), [
    "run",
    "--dir",
    "/b/rootfs::/",
    "--dir",
    "/srv/d::/data",
    "--env",
    "A=1",
    "--env",
    "B=x y",
    "-W",
    `max-memory-size=${64 << 20}`,
    "--argv0",
    "/app.wasm",
    "/b/rootfs/app.wasm",
    "a",
    "b c",
  ]);
  assert.deepEqual(
    wasmtimeRunArgv({ ...spec, func: "run", env: [], preopens: [], memoryLimit: undefined }),
    ["run", "--invoke", "run", "--argv0", "/app.wasm", "/b/rootfs/app.wasm", "a", "b c"],
  );
});
