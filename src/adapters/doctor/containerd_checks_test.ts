import assert from "node:assert/strict";
import { join } from "node:path";
import {
  checkSandboxHandlers,
  checkShimModeHandlers,
  type ConfigFile,
  parseContainerdVersion,
  readContainerdConfig,
  resolveShim,
} from "./containerd_checks.ts";
import { parse } from "smol-toml";

const LISTEN = "/run/runc-sandboxer.sock";
const RT = `plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes`;

function files(...texts: string[]): ConfigFile[] {
  return texts.map((t, i) => ({
    path: `/etc/c${i}.toml`,
    doc: parse(t) as Record<string, unknown>,
  }));
}

async function withStub(fn: (stub: string) => void | Promise<void>) {
  const dir = await Deno.makeTempDir();
  const stub = join(dir, "containerd-shim-kuasar-runc-v1");
  await Deno.writeTextFile(stub, "#!/bin/sh\n", { mode: 0o755 });
  try {
    await fn(stub);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const proxy = `[proxy_plugins.kuasar-runc]\ntype = "sandbox"\naddress = "${LISTEN}"\n`;

Deno.test("containerd version lines of 2.x, 1.7 and Debian's 1.6", () => {
  assert.deepEqual(
    parseContainerdVersion("containerd github.com/containerd/containerd/v2 v2.4.2 abc"),
    { major: 2, minor: 4, text: "v2.4.2" },
  );
  assert.equal(parseContainerdVersion("containerd github.com/x 1.7.35+unknown")?.minor, 7);
  assert.equal(parseContainerdVersion("containerd x 1.6.20~ds1 1.6.20~ds1-1")?.major, 1);
  assert.equal(parseContainerdVersion("nonsense"), undefined);
});

Deno.test("containerd config: a handler as deploy/containerd gives it passes", async () => {
  await withStub((stub) => {
    const checks = checkSandboxHandlers(
      files(
        proxy,
        `[${RT}.kuasar-runc]\nruntime_type = "${stub}"\nsandboxer = "kuasar-runc"\n` +
          `disable_pause_image_pull = true\n`,
      ),
      { kind: "runc", listen: LISTEN },
      undefined,
    );
    assert.deepEqual(checks.map((c) => [c.id, c.status]), [
      ["containerd.proxy-plugin", "ok"],
      ["containerd.handler", "ok"],
    ]);
  });
});

Deno.test("containerd config: each gap of the README's old snippet is named with its fix", () => {
  // No proxy plugin at this socket.
  let checks = checkSandboxHandlers(files(""), { kind: "runc", listen: LISTEN }, undefined);
  assert.equal(checks[0].status, "fail");
  assert.match(checks[0].fix!, /kuasar-runc\.toml/);
  // A proxy plugin, no handler naming it.
  checks = checkSandboxHandlers(files(proxy), { kind: "runc", listen: LISTEN }, undefined);
  assert.deepEqual(checks.map((c) => c.status), ["ok", "fail"]);
  // The old snippet: a runtime name whose stub is on no PATH, and the pause image pulled.
  checks = checkSandboxHandlers(
    files(
      proxy,
      `[${RT}.kuasar-runc]\nruntime_type = "io.containerd.kuasar-nothere.v1"\n` +
        `sandboxer = "kuasar-runc"\n`,
    ),
    { kind: "runc", listen: LISTEN },
    "/nonexistent/containerd",
  );
  const h = checks[1];
  assert.equal(h.status, "fail");
  assert.match(h.detail, /pause image/);
  assert.match(h.detail, /containerd-shim-kuasar-nothere-v1 is on neither/);
  assert.match(h.fix!, /disable_pause_image_pull = true/);
  assert.match(h.fix!, /absolute path/);
  // An absolute stub not installed yet.
  checks = checkSandboxHandlers(
    files(
      proxy,
      `[${RT}.kuasar-runc]\nruntime_type = "/nonexistent/stub"\n` +
        `sandboxer = "kuasar-runc"\ndisable_pause_image_pull = true\n`,
    ),
    { kind: "runc", listen: LISTEN },
    undefined,
  );
  assert.match(checks[1].fix!, /start the sandboxer before containerd/);
});

Deno.test("containerd config: v2 tables (migrated by containerd 2.x) and later files override", async () => {
  await withStub((stub) => {
    const checks = checkSandboxHandlers(
      files(
        proxy + `[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kuasar-runc]\n` +
          `runtime_type = "${stub}"\nsandboxer = "kuasar-runc"\n`,
        `[${RT}.kuasar-runc]\ndisable_pause_image_pull = true\n`,
      ),
      { kind: "runc", listen: LISTEN },
      undefined,
    );
    assert.deepEqual(checks.map((c) => c.status), ["ok", "ok"]);
  });
});

Deno.test("containerd 1.7: docs/engines.md's shim-mode handler is recognised", async () => {
  const doc = await Deno.readTextFile(new URL("../../../docs/engines.md", import.meta.url));
  const block = [...doc.matchAll(/```toml\n([\s\S]*?)```/g)].map((m) => m[1])
    .find((b) => b.includes(`sandbox_mode = "shim"`));
  assert.ok(block);
  const checks = checkShimModeHandlers(files(block), "runc", undefined);
  assert.equal(checks.length, 1);
  // The documented stub path exists only once a sandboxer has run on the node.
  const installed = "path" in
    resolveShim("/var/lib/kuasar/bin/containerd-shim-kuasar-runc-v2", undefined);
  assert.equal(checks[0].status, installed ? "ok" : "fail");

  assert.equal(checkShimModeHandlers(files(""), "runc", undefined)[0].status, "fail");
});

Deno.test("containerd config: imports by glob, relative to the main file, parse errors named", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.mkdir(join(dir, "conf.d"));
    await Deno.writeTextFile(
      join(dir, "config.toml"),
      `version = 3\nimports = ["conf.d/*.toml"]\n`,
    );
    await Deno.writeTextFile(join(dir, "conf.d", "b.toml"), proxy);
    await Deno.writeTextFile(join(dir, "conf.d", "a.toml"), "version = 3\n");
    await Deno.writeTextFile(join(dir, "conf.d", "skip.txt"), "not toml");
    const found = readContainerdConfig(join(dir, "config.toml")).map((f) => f.path);
    assert.deepEqual(
      found,
      ["config.toml", "conf.d/a.toml", "conf.d/b.toml"].map((p) => join(dir, p)),
    );
    await Deno.writeTextFile(join(dir, "conf.d", "c.toml"), "[broken");
    assert.throws(
      () => readContainerdConfig(join(dir, "config.toml")),
      /c\.toml is not valid TOML/,
    );
    // A missing main file is containerd's defaults.
    assert.deepEqual(readContainerdConfig(join(dir, "none.toml")).map((f) => f.path), [
      join(dir, "none.toml"),
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("containerd config: imports of imports are read, breadth-first, cycles once", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(join(dir, "config.toml"), `imports = ["a.toml"]\n`);
    await Deno.writeTextFile(join(dir, "a.toml"), `imports = ["b.toml", "config.toml"]\n`);
    await Deno.writeTextFile(join(dir, "b.toml"), `imports = ["a.toml"]\n`);
    assert.deepEqual(
      readContainerdConfig(join(dir, "config.toml")).map((f) => f.path),
      ["config.toml", "a.toml", "b.toml"].map((n) => join(dir, n)),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
