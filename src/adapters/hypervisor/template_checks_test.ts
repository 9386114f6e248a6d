import assert from "node:assert/strict";
import { join } from "node:path";
import { templateChecks } from "./template_checks.ts";

const KEY = "0123456789abcdef0123456789abcdef";

Deno.test("doctor: a config that cannot have templates fails with the reason", async () => {
  const [c, ...rest] = await templateChecks({
    refusal: 'templates need share_fs = "None" (bundles on disks)',
    dir: "/nonexistent",
    memoryMiB: 512,
    shapes: 4,
    image: [],
  });
  assert.deepEqual(rest, []);
  assert.deepEqual(c.status, "fail");
  assert.match(c.detail, /share_fs = "None".*refuses to start/);
});

Deno.test("doctor: templates listed, unfinished and stale ones said so", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const image = join(dir, "initramfs.img");
    await Deno.writeTextFile(image, "x");
    let [space, built] = await templateChecks({
      dir: join(dir, "t"),
      memoryMiB: 1,
      shapes: 4,
      image: [image],
    });
    // The space check runs df on what exists of the path.
    assert.deepEqual(space.id, "template.dir");
    assert.ok(
      space.status === "skip" ||
        /MiB free.*up to 4 templates \(template_shapes\)/.test(space.detail),
      space.detail,
    );
    assert.deepEqual(built.status, "ok");
    assert.match(built.detail, /none in .* yet/);

    await Deno.mkdir(join(dir, "t", KEY), { recursive: true });
    await Deno.mkdir(join(dir, "t", "not-a-template"));
    [, built] = await templateChecks({
      dir: join(dir, "t"),
      memoryMiB: 1,
      shapes: 4,
      image: [image],
    });
    assert.match(built.detail, new RegExp(`${KEY} \\(unfinished`));
    assert.ok(!built.detail.includes("not-a-template"));

    const info = { vcpus: 1, memoryMiB: 512, bootMs: 9000, stateBytes: 380_000 };
    const write = (built: string) =>
      Deno.writeTextFile(join(dir, "t", KEY, "template.json"), JSON.stringify({ ...info, built }));
    await write(new Date(Date.now() + 60_000).toISOString());
    [, built] = await templateChecks({
      dir: join(dir, "t"),
      memoryMiB: 1,
      shapes: 4,
      image: [image],
    });
    assert.deepEqual(built.status, "ok");
    assert.match(built.detail, /1 vCPU, 512 MiB, built .* in 9000 ms, device state 371 KiB\)/);

    // The guest image is newer than the template.
    await write(new Date(Date.now() - 3_600_000).toISOString());
    [, built] = await templateChecks({
      dir: join(dir, "t"),
      memoryMiB: 1,
      shapes: 4,
      image: [image],
    });
    assert.deepEqual(built.status, "warn");
    assert.match(built.detail, /older than the guest image/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("doctor: a template directory others can write to fails", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.chmod(dir, 0o1777);
    const [space] = await templateChecks({ dir, memoryMiB: 1, shapes: 1, image: [] });
    assert.equal(space.status, "fail");
    assert.match(space.detail, /writable by others/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("doctor: the pool's ready VMs counted, not those being made or taken", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const pool = async () =>
      (await templateChecks({
        dir: join(dir, "t"),
        memoryMiB: 1,
        shapes: 1,
        image: [],
        pool: { stateDir: dir, size: 3 },
      })).find((c) => c.id === "template.pool")!;
    let c = await pool();
    assert.equal(c.status, "warn");
    assert.match(c.detail, /^0 of 3 VMs ready/);
    // `ready` holds the VM's QEMU's pid: here a live process (this one) or a gone one.
    const vm = (name: string, ...files: string[]) =>
      Deno.mkdir(join(dir, `.vm-pool-${name}`)).then(() =>
        Promise.all(files.map((f) => {
          const [file, pid] = f.split("=");
          return Deno.writeTextFile(join(dir, `.vm-pool-${name}`, file), pid ?? "");
        }))
      );
    await vm("0123456789ab", `ready=${Deno.pid}`);
    await vm("0123456789ac"); // being made
    await vm("0123456789ad", `ready=${Deno.pid}`, "taken"); // a pod's now
    await vm("0123456789ae", "ready=999999999"); // died (the daemon down since)
    await vm("0123456789af", "ready="); // no pid
    await vm("not-a-pool-vm", `ready=${Deno.pid}`);
    c = await pool();
    assert.equal(c.status, "ok");
    assert.match(c.detail, /^1 of 3 VMs ready ahead of pods/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
