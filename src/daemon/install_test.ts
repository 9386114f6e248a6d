import assert from "node:assert/strict";
import { join } from "node:path";
import { KINDS } from "./kinds.ts";
import { install, type InstallOptions, MANIFEST, uninstall } from "./install.ts";

/** A bundle-form program in a temp dir: what `kuasar install` copies. */
async function fixture(): Promise<
  { opts: InstallOptions; root: string; cleanup: () => Promise<void> }
> {
  const src = await Deno.makeTempDir();
  const root = await Deno.makeTempDir();
  await Deno.writeTextFile(join(src, "kuasar.js"), "console.log('kuasar');\n");
  await Deno.writeTextFile(join(src, "kuasar-wasm-worker.js"), "// worker\n");
  await Deno.writeTextFile(join(src, "deno"), "#!/bin/sh\n", { mode: 0o755 });
  await Deno.mkdir(join(src, "guest"));
  await Deno.writeTextFile(join(src, "guest", "vmlinuz"), "kernel");
  return {
    root,
    opts: {
      root,
      prefix: "/usr/local",
      kinds: KINDS,
      program: { form: "bundle", dir: src, deno: join(src, "deno") },
      helper: { bytes: new TextEncoder().encode("helper"), sha256: "ab".repeat(32) },
      guestImage: join(src, "guest"),
    },
    cleanup: async () => {
      await Deno.remove(src, { recursive: true });
      await Deno.remove(root, { recursive: true });
    },
  };
}

/** Every path under `dir`, relative, sorted. */
async function tree(dir: string, rel = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(join(dir, rel))) {
    const p = join(rel, e.name);
    out.push(p);
    if (e.isDirectory) out.push(...await tree(dir, p));
  }
  return out.sort();
}

Deno.test("install: the node's files under the root, modes exact, links relative", async () => {
  const f = await fixture();
  try {
    const r = await install(f.opts);
    assert.deepEqual(r.kept, []);
    const files = await tree(f.root);
    for (
      const p of [
        "usr/local/bin/kuasar",
        "usr/local/bin/runc-sandboxer",
        "usr/local/bin/kuasar-ctl",
        "usr/local/lib/kuasar/deno",
        "usr/local/lib/kuasar/kuasar.js",
        "var/lib/kuasar/bin/kuasar-helper-abababababababab",
        "var/lib/kuasar/bin/containerd-shim-kuasar-runc-v1",
        "var/lib/kuasar/bin/containerd-shim-kuasar-vmm-v2",
        "etc/systemd/system/kuasar-wasm.service",
        "etc/containerd/conf.d/kuasar-gvisor.toml",
        "var/lib/kuasar/config.toml",
        "var/lib/kuasar/guest/vmlinuz",
        MANIFEST.slice(1),
      ]
    ) assert.ok(files.includes(p), p);
    assert.equal(Deno.statSync(join(f.root, "usr/local/bin/kuasar")).mode! & 0o7777, 0o755);
    assert.equal(
      Deno.statSync(join(f.root, "etc/systemd/system/kuasar-runc.service")).mode! & 0o7777,
      0o644,
    );
    assert.equal(Deno.readLinkSync(join(f.root, "usr/local/bin/vmm-sandboxer")), "kuasar");
    assert.match(
      Deno.readTextFileSync(join(f.root, "usr/local/bin/kuasar")),
      /KUASAR_ARGV0=.*exec "\$lib\/deno" run -A/s,
    );
  } finally {
    await f.cleanup();
  }
});

Deno.test("install again: nothing rewritten; an edited config and a foreign file are kept", async () => {
  const f = await fixture();
  try {
    await install(f.opts);
    const again = await install(f.opts);
    assert.deepEqual(again.written, []);
    assert.deepEqual(again.kept, []);

    const dropIn = join(f.root, "etc/containerd/conf.d/kuasar-runc.toml");
    await Deno.writeTextFile(dropIn, "# mine\n", { append: true });
    const edited = await install(f.opts);
    assert.deepEqual(edited.kept.map((k) => k.path), ["/etc/containerd/conf.d/kuasar-runc.toml"]);
    assert.match(Deno.readTextFileSync(dropIn), /# mine/);

    // A unit an operator wrote by hand before installing is not ours to replace.
    const other = await fixture();
    try {
      const unit = join(other.root, "etc/systemd/system/kuasar-runc.service");
      await Deno.mkdir(join(other.root, "etc/systemd/system"), { recursive: true });
      await Deno.writeTextFile(unit, "[Unit]\n");
      const r = await install(other.opts);
      assert.deepEqual(r.kept.map((k) => k.path), ["/etc/systemd/system/kuasar-runc.service"]);
      assert.equal(Deno.readTextFileSync(unit), "[Unit]\n");
      const forced = await install({ ...other.opts, force: true });
      assert.ok(forced.written.includes("/etc/systemd/system/kuasar-runc.service"));
    } finally {
      await other.cleanup();
    }
  } finally {
    await f.cleanup();
  }
});

Deno.test("install with fewer kinds removes the others; uninstall empties the root", async () => {
  const f = await fixture();
  try {
    await install(f.opts);
    const fewer = await install({ ...f.opts, kinds: KINDS.filter((k) => k.name === "runc") });
    assert.ok(fewer.removed.includes("/etc/systemd/system/kuasar-vmm.service"));
    assert.ok(fewer.removed.includes("/var/lib/kuasar/guest"), "its directory too");
    assert.ok(!(await tree(f.root)).some((p) => p.includes("vmm")));

    // What a sandboxer adds to its helper dir at run time goes too; a pod's state is elsewhere.
    const helperDir = join(f.root, "var/lib/kuasar/bin");
    await Deno.writeTextFile(join(helperDir, "containerd-shim-kuasar-runc-v2.sandboxer"), "x\n");
    await Deno.writeTextFile(join(helperDir, "kuasar-helper-0123456789abcdef"), "old");
    const un = await uninstall(f.root);
    assert.deepEqual(un.kept, []);
    assert.deepEqual(await tree(f.root), []);
    assert.match((await uninstall(f.root)).notes.join(), /nothing to do/);
  } finally {
    await f.cleanup();
  }
});

Deno.test("uninstall keeps what changed since install, and what it did not create", async () => {
  const f = await fixture();
  try {
    await Deno.mkdir(join(f.root, "etc/containerd/conf.d"), { recursive: true });
    await Deno.writeTextFile(join(f.root, "etc/containerd/config.toml"), "version = 3\n");
    await install(f.opts);
    await Deno.writeTextFile(join(f.root, "var/lib/kuasar/config.toml"), "[sandbox]\n");
    const un = await uninstall(f.root);
    assert.deepEqual(un.kept.map((k) => k.path), ["/var/lib/kuasar/config.toml"]);
    assert.deepEqual(await tree(f.root), [
      "etc",
      "etc/containerd",
      "etc/containerd/conf.d",
      "etc/containerd/config.toml",
      "var",
      "var/lib",
      "var/lib/kuasar",
      "var/lib/kuasar/config.toml",
    ]);
  } finally {
    await f.cleanup();
  }
});

Deno.test("install and uninstall stay under the root: planted links, manifest paths", async () => {
  const f = await fixture();
  const victim = await Deno.makeTempDir();
  try {
    await Deno.mkdir(join(f.root, "usr/local"), { recursive: true });
    await Deno.symlink(victim, join(f.root, "usr/local/bin"));
    await assert.rejects(() => install(f.opts), /leads out of the root/);
    assert.deepEqual(await tree(victim), []);
    await Deno.remove(join(f.root, "usr/local/bin"));
    await Deno.writeTextFile(join(victim, "file"), "x");
    await Deno.mkdir(join(f.root, "var/lib/kuasar"), { recursive: true });
    await Deno.writeTextFile(
      join(f.root, MANIFEST),
      JSON.stringify({ version: 1, entries: [{ type: "symlink", path: "../x", target: "y" }] }),
    );
    await assert.rejects(() => uninstall(f.root), /unreadable/);
    await assert.rejects(() => install({ ...f.opts, root: "" }), /--root is empty/);
    await assert.rejects(() => install({ ...f.opts, prefix: "opt/k" }), /absolute/);
  } finally {
    await f.cleanup();
    await Deno.remove(victim, { recursive: true });
  }
});

Deno.test("a foreign link is kept; an install cut short is owned by the next one", async () => {
  const f = await fixture();
  try {
    await Deno.mkdir(join(f.root, "usr/local/bin"), { recursive: true });
    await Deno.symlink("/opt/kuasar/runc-sandboxer", join(f.root, "usr/local/bin/runc-sandboxer"));
    const r = await install(f.opts);
    assert.ok(r.kept.some((k) => k.path === "/usr/local/bin/runc-sandboxer"));
    await uninstall(f.root);
    await Deno.remove(join(f.root, "usr/local/bin/runc-sandboxer"));
    // Killed half-way (the 8th rename fails): the manifest saved before each write names them.
    const rename = Deno.rename;
    let n = 0;
    Object.assign(Deno, {
      rename: (a: string, b: string) =>
        ++n === 8 ? Promise.reject(new Error("killed")) : rename(a, b),
    });
    try {
      await assert.rejects(() => install(f.opts), /killed/);
    } finally {
      Object.assign(Deno, { rename });
    }
    await install(f.opts);
    await uninstall(f.root);
    // What the test made itself stays.
    assert.deepEqual(await tree(f.root), ["usr", "usr/local", "usr/local/bin"]);
  } finally {
    await f.cleanup();
  }
});
