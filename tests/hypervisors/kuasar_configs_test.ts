// Kuasar's shipped vmm-sandboxer config files (tests/fixtures/kuasar-configs/, unchanged) load
// through the daemon's own loader, name the VMM they are for, and start the daemon up to what
// this node lacks (the VMM binary), with that as the error.
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { loadConfig } from "../../src/daemon/config.ts";
import {
  type HypervisorSettings,
  hypervisorSettings,
  unusedKeys,
  vmmOf,
} from "../../src/adapters/hypervisor/vmm_config.ts";

const FIXTURES = fileURLToPath(new URL("../fixtures/kuasar-configs/", import.meta.url));
const MAIN = fileURLToPath(new URL("../../src/main.ts", import.meta.url));

async function load(file: string): Promise<HypervisorSettings> {
  const c = await loadConfig(FIXTURES + file, "hypervisor", hypervisorSettings, true);
  return c.kind as HypervisorSettings;
}

Deno.test("Kuasar's config files: each loads and names its VMM", async () => {
  const clh = await load("config_clh.toml");
  assert.equal(vmmOf(clh), "cloud-hypervisor");
  // Read for Cloud Hypervisor; its pmem rootfs image is not this sandboxer's guest.
  assert.ok(!unusedKeys(clh).includes("hugepages"));
  assert.ok(!unusedKeys(clh).includes("entropy_source"));
  assert.ok(unusedKeys(clh).includes("image_path"));
  assert.equal(vmmOf(await load("config_qemu_x86_64.toml")), "qemu");
  for (const f of ["config_stratovirt_x86_64.toml", "config_stratovirt_aarch64.toml"]) {
    const s = await load(f);
    assert.equal(vmmOf(s), "stratovirt");
    assert.equal(s.virtiofsd_conf?.path, "/usr/bin/vhost_user_fs");
  }
});

Deno.test("vmm config: which VMM a [hypervisor] table is for", () => {
  const of = (s: unknown) => vmmOf(hypervisorSettings.parse(s));
  assert.equal(of({}), "qemu");
  assert.equal(of({ path: "/opt/bin/cloud-hypervisor" }), "cloud-hypervisor");
  assert.equal(of({ path: "/usr/bin/firecracker" }), "firecracker");
  assert.equal(of({ path: "/opt/vmm-v48", vmm: "cloud-hypervisor" }), "cloud-hypervisor");
  assert.throws(() => of({ path: "/opt/vmm-v48" }), /does not say which VMM.*\[hypervisor\] vmm/);
  assert.throws(() => of({ vmm: "xen" }));
  assert.equal(of({ path: "/usr/local/bin/cloud-hypervisor-static" }), "cloud-hypervisor");
  // Two VMMs in one table: said, not chosen.
  assert.throws(
    () => of({ qemu_path: "/usr/bin/qemu-system-x86_64", path: "/usr/bin/cloud-hypervisor" }),
    /cloud-hypervisor but the table is for qemu/,
  );
  assert.throws(
    () => of({ vmm: "cloud-hypervisor", qemu_path: "/usr/bin/qemu-system-x86_64" }),
    /qemu_path is set but the table is for cloud-hypervisor/,
  );
});

for (
  const [file, binary] of [
    ["config_clh.toml", "/usr/local/bin/cloud-hypervisor"],
    ["config_stratovirt_x86_64.toml", "/usr/bin/stratovirt"],
  ]
) {
  Deno.test(`Kuasar's ${file} starts the daemon up to the missing binary, said plainly`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "k-cfg-" });
    try {
      const r = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          MAIN,
          "vmm",
          "--config",
          FIXTURES + file,
          "--listen",
          `${dir}/never.sock`,
          "--dir",
          `${dir}/state`,
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const err = new TextDecoder().decode(r.stderr);
      assert.notEqual(r.code, 0);
      assert.ok(err.includes(`hypervisor.path: "${binary}" is not an executable`), err);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}
