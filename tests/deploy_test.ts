/**
 * deploy/ as an operator copies it: each kind's systemd unit and containerd
 * 2.x drop-in are what `kuasar install` writes (src/daemon/deploy_files.ts;
 * `deno task gen:deploy` rewrites them), the drop-ins name the kind's socket
 * and stub, and the README shows the runC one byte for byte. The end-to-end
 * suites import these drop-ins (tests/support/e2e.ts).
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { parse } from "smol-toml";
import { KINDS } from "../src/daemon/kinds.ts";
import {
  containerdDropIn,
  nodeLabel,
  runtimeClass,
  systemdUnit,
  VM_POD_OVERHEAD,
} from "../src/daemon/deploy_files.ts";

const read = (rel: string) =>
  Deno.readTextFileSync(fileURLToPath(new URL(`../${rel}`, import.meta.url)));
const list = (rel: string) =>
  [...Deno.readDirSync(fileURLToPath(new URL(`../${rel}`, import.meta.url)))]
    .filter((e) => e.isFile).map((e) => e.name).sort();

Deno.test("deploy/: one unit and one drop-in per kind, as generated (deno task gen:deploy)", () => {
  assert.deepEqual(list("deploy"), KINDS.map((k) => `kuasar-${k.name}.service`).sort());
  assert.deepEqual(list("deploy/containerd"), KINDS.map((k) => `kuasar-${k.name}.toml`).sort());
  for (const kind of KINDS) {
    assert.equal(read(`deploy/kuasar-${kind.name}.service`), systemdUnit(kind), kind.name);
    assert.equal(read(`deploy/containerd/kuasar-${kind.name}.toml`), containerdDropIn(kind));
    assert.equal(read(`deploy/kubernetes/runtimeclass-${kind.name}.yaml`), runtimeClass(kind));
  }
  assert.deepEqual(
    list("deploy/kubernetes"),
    KINDS.map((k) => `runtimeclass-${k.name}.yaml`).sort(),
  );
});

Deno.test("deploy/kubernetes: each RuntimeClass names its drop-in's handler; VM pods their overhead", () => {
  for (const kind of KINDS) {
    // The YAML is one flat object: read it back as JSON-compatible lines.
    const text = read(`deploy/kubernetes/runtimeclass-${kind.name}.yaml`);
    assert.match(text, new RegExp(`^handler: kuasar-${kind.name}$`, "m"));
    assert.match(text, new RegExp(`^  name: kuasar-${kind.name}$`, "m"));
    assert.match(text, new RegExp(`^    ${nodeLabel(kind)}: "true"$`, "m"));
    assert.equal(
      /^overhead:/m.test(text),
      kind.name === "vmm",
      `${kind.name}: overhead only for VM pods`,
    );
  }
  assert.match(
    read("deploy/kubernetes/runtimeclass-vmm.yaml"),
    new RegExp(`memory: "${VM_POD_OVERHEAD.memory}"\n    cpu: "${VM_POD_OVERHEAD.cpu}"`),
  );
});

Deno.test("deploy/containerd: each drop-in has the handlers at the kind's socket and stub", () => {
  for (const kind of KINDS) {
    const name = kind.name;
    // deno-lint-ignore no-explicit-any
    const conf = parse(read(`deploy/containerd/kuasar-${name}.toml`)) as any;
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

Deno.test("deploy/: each unit runs the kind at its default socket and dir, pods kept", () => {
  for (const kind of KINDS) {
    const unit = read(`deploy/kuasar-${kind.name}.service`);
    assert.match(
      unit,
      new RegExp(
        `^ExecStart=/usr/local/bin/kuasar ${kind.name} --listen ${kind.defaultListen} --dir ` +
          `${kind.defaultDir}$`,
        "m",
      ),
    );
    assert.match(unit, /^KillMode=process$/m);
    assert.match(unit, /^Type=notify$/m);
    assert.match(unit, /^Before=containerd.service$/m);
  }
});

Deno.test("README: the containerd 2.x block is deploy/containerd/kuasar-runc.toml", () => {
  const readme = read("README.md");
  const section = readme.slice(readme.indexOf("### containerd 2.x"));
  const block = section.match(/```toml\n([\s\S]*?)```/)?.[1];
  assert.equal(block, read("deploy/containerd/kuasar-runc.toml"));
});

Deno.test("docs/kubernetes.md: the RuntimeClass shown is deploy/kubernetes/runtimeclass-vmm.yaml", () => {
  const doc = read("docs/kubernetes.md");
  const block = [...doc.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1])
    .find((b) => b.includes("kind: RuntimeClass"));
  assert.equal(block, read("deploy/kubernetes/runtimeclass-vmm.yaml"));
});
