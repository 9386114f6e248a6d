import assert from "node:assert/strict";
import {
  bundlesOnDisks,
  guestKernelParams,
  hypervisorSettings,
  templateRefusal,
  unusedKeys,
  virtiofsdOptions,
} from "./vmm_config.ts";

// Kuasar's shipped config_qemu_x86_64.toml, as parsed TOML (kuasar-spec §3.4).
const KUASAR_QEMU = {
  machine_accelerators: "",
  firmware_path: "",
  cpu_features: "",
  cpu_model: "host",
  qemu_path: "/usr/bin/qemu-system-x86_64",
  machine_type: "pc",
  default_bridges: 1,
  default_max_vcpus: 0,
  entropy_source: "/dev/urandom",
  mem_slots: 1,
  mem_offset: 0,
  memory_path: "",
  file_backend_mem_path: "",
  mem_prealloc: false,
  hugepages: false,
  enable_vhost_user_store: false,
  enable_swap: false,
  msize_9p: 8192,
  virtio_9p_direct_io: false,
  virtio_9p_multidevs: "remap",
  enable_iothreads: false,
  block_device_driver: "VirtioBlk",
  disable_nvdimm: true,
  share_fs: "Virtio9P",
  use_vsock: true,
  vcpus: 1,
  memory_in_mb: 2048,
  initrd_path: "/var/lib/kuasar/kuasar.initrd",
  kernel_params: "task.log_level=debug",
  virtiofsd: {
    path: "/usr/local/bin/virtiofsd",
    log_level: "info",
    cache: "never",
    thread_pool_size: 4,
  },
};

Deno.test("vmm config: Kuasar's QEMU file loads; the keys it sets but we do not use are named", () => {
  const s = hypervisorSettings.parse(KUASAR_QEMU);
  const unused = unusedKeys(s);
  assert.ok(unused.includes("share_fs"));
  assert.ok(unused.includes("machine_type"));
  assert.ok(!unused.includes("vcpus") && !unused.includes("virtiofsd"));
});

Deno.test("vmm config: an unknown or mistyped key is an error", () => {
  assert.throws(() => hypervisorSettings.parse({ vcpu: 1 }));
  assert.throws(() => hypervisorSettings.parse({ vcpus: "one" }));
  assert.throws(() => hypervisorSettings.parse({ share_fs: "nfs" }));
  assert.throws(() => hypervisorSettings.parse({ virtiofsd: { cache_mode: "none" } }));
});

Deno.test("vmm config: virtiofsd options from [hypervisor.virtiofsd]", () => {
  assert.deepEqual(virtiofsdOptions({}), ["-o", "cache=none"]);
  assert.deepEqual(
    virtiofsdOptions(
      hypervisorSettings.parse({ virtiofsd: { cache: "never", thread_pool_size: 4 } }),
    ),
    ["-o", "cache=none", "--thread-pool-size=4"],
  );
  assert.deepEqual(virtiofsdOptions(hypervisorSettings.parse({ virtiofsd: { cache: "auto" } })), [
    "-o",
    "cache=auto",
  ]);
  assert.throws(
    () => virtiofsdOptions(hypervisorSettings.parse({ virtiofsd: { cache: "sometimes" } })),
    /virtiofsd\.cache/,
  );
});

Deno.test("vmm config: share_fs None puts bundles on disks; Firecracker always, nothing else", () => {
  const parse = (o: Record<string, unknown>) => bundlesOnDisks(hypervisorSettings.parse(o));
  assert.equal(parse({}), false);
  assert.equal(parse({ share_fs: "VirtioFS" }), false);
  assert.equal(parse({ share_fs: "None" }), true);
  assert.equal(parse({ vmm: "cloud-hypervisor", share_fs: "None" }), true);
  assert.equal(parse({ path: "/usr/bin/firecracker" }), true);
  assert.equal(parse({ vmm: "firecracker", share_fs: "None" }), true);
  assert.throws(() => parse({ vmm: "firecracker", share_fs: "VirtioFS" }), /no virtiofs/);
  // Read when it chooses something; Virtio9P (served by virtiofs) is named as unused.
  assert.ok(!unusedKeys(hypervisorSettings.parse({ share_fs: "None" })).includes("share_fs"));
  assert.ok(unusedKeys(hypervisorSettings.parse({ share_fs: "Virtio9P" })).includes("share_fs"));
});

Deno.test("vmm config: the guest's OCI runtime goes on the kernel command line, before kernel_params", () => {
  const params = (o: Record<string, unknown>) => guestKernelParams(hypervisorSettings.parse(o));
  assert.equal(params({}), "kuasar.oci_runtime=crun");
  assert.equal(params({ task: { oci_runtime: "runc" } }), "kuasar.oci_runtime=runc");
  assert.equal(
    params({ kernel_params: "quiet loglevel=3", task: { debug: true } }),
    "kuasar.oci_runtime=crun quiet loglevel=3",
  );
  assert.throws(() => hypervisorSettings.parse({ task: { oci_runtime: "youki" } }));
  assert.ok(
    !unusedKeys(hypervisorSettings.parse({ task: { oci_runtime: "runc" } })).includes("task"),
  );
});

Deno.test("vmm config: templates are QEMU's, with bundles on disks and the agent on virtio-serial", () => {
  const refusal = (o: Record<string, unknown>) => templateRefusal(hypervisorSettings.parse(o));
  const ok = { template: true, share_fs: "None", use_vsock: false };
  assert.equal(refusal({}), undefined);
  assert.equal(refusal({ ...ok, template: false, share_fs: "VirtioFS" }), undefined);
  assert.equal(refusal(ok), undefined);
  assert.match(refusal({ ...ok, share_fs: "VirtioFS" })!, /share_fs = "None"/);
  assert.match(refusal({ ...ok, use_vsock: true })!, /use_vsock = false/);
  assert.match(refusal({ template: true, share_fs: "None" })!, /use_vsock = false/);
  assert.match(refusal({ ...ok, vmm: "firecracker" })!, /QEMU's/);
  assert.throws(() => hypervisorSettings.parse({ template_dir: "relative/dir" }));
  assert.deepEqual(unusedKeys(hypervisorSettings.parse({ ...ok, template_dir: "/t" })), []);
  // The pool of VMs made ahead comes from the template.
  assert.equal(refusal({ ...ok, template_pool: 2 }), undefined);
  assert.match(refusal({ template_pool: 2 })!, /template_pool needs template = true/);
  assert.equal(refusal({ template_pool: 0 }), undefined);
  assert.throws(() => hypervisorSettings.parse({ ...ok, template_pool: -1 }));
  assert.throws(() => hypervisorSettings.parse({ ...ok, template_pool: 1.5 }));
  assert.deepEqual(unusedKeys(hypervisorSettings.parse({ ...ok, template_pool: 1 })), []);
  assert.equal(refusal({ ...ok, template_shapes: 3 }), undefined);
  assert.match(refusal({ template_shapes: 3 })!, /template_shapes needs template = true/);
  for (const bad of [0, 17, 2.5, "2"]) {
    assert.throws(() => hypervisorSettings.parse({ ...ok, template_shapes: bad }), String(bad));
  }
  assert.deepEqual(unusedKeys(hypervisorSettings.parse({ ...ok, template_shapes: 1 })), []);
});
