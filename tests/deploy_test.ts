/**
 * The containerd 2.x drop-ins of `deploy/containerd/`, as an operator copies
 * them: one per kind this machine runs, each the same handlers at the kind's
 * default socket, and the README shows the runC one byte for byte. The
 * end-to-end suites import these files (tests/support/e2e.ts).
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { parse } from "smol-toml";
import { KINDS } from "../src/daemon/kinds.ts";

const read = (rel: string) =>
  Deno.readTextFileSync(fileURLToPath(new URL(`../${rel}`, import.meta.url)));

/** Kinds with a drop-in: Quark is absent, as it cannot run under containerd here. */
const DROP_IN_KINDS = ["runc", "wasm", "gvisor", "vmm"];

Deno.test("deploy/containerd: one drop-in per kind, the same handlers at the kind's socket", () => {
  const runc = read("deploy/containerd/kuasar-runc.toml");
  const files = [
    ...Deno.readDirSync(fileURLToPath(new URL("../deploy/containerd", import.meta.url))),
  ]
    .map((e) => e.name).sort();
  assert.deepEqual(files, DROP_IN_KINDS.map((k) => `kuasar-${k}.toml`).sort());
  for (const name of DROP_IN_KINDS) {
    const kind = KINDS.find((k) => k.name === name);
    assert.ok(kind, name);
    const text = read(`deploy/containerd/kuasar-${name}.toml`);
    assert.equal(
      text,
      runc.replaceAll("runc", name),
      `kuasar-${name}.toml follows kuasar-runc.toml`,
    );
    // deno-lint-ignore no-explicit-any
    const conf = parse(text) as any;
    assert.equal(conf.version, 3);
    assert.deepEqual({ ...conf.proxy_plugins[`kuasar-${name}`] }, {
      type: "sandbox",
      address: kind.defaultListen,
    });
    const runtimes = conf.plugins["io.containerd.cri.v1.runtime"].containerd.runtimes;
    const stub = `/var/lib/kuasar/bin/containerd-shim-kuasar-${name}-v1`;
    assert.deepEqual({ ...runtimes[`kuasar-${name}`] }, {
      runtime_type: stub,
      sandboxer: `kuasar-${name}`,
      disable_pause_image_pull: true,
    });
    assert.deepEqual({ ...runtimes[`kuasar-${name}-stream`] }, {
      runtime_type: stub,
      sandboxer: `kuasar-${name}`,
      io_type: "streaming",
      disable_pause_image_pull: true,
    });
  }
});

Deno.test("README: the containerd 2.x block is deploy/containerd/kuasar-runc.toml", () => {
  const readme = read("README.md");
  const section = readme.slice(readme.indexOf("### containerd 2.x"));
  const block = section.match(/```toml\n([\s\S]*?)```/)?.[1];
  assert.equal(block, read("deploy/containerd/kuasar-runc.toml"));
});
