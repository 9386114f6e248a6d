import assert from "node:assert/strict";
import { join } from "node:path";
import type { VmDescription, VmTemplating } from "../../ports/hypervisor.ts";
import { QemuHypervisor } from "./qemu/qemu_hypervisor.ts";
import { removeOwnTemplates, VmTemplates } from "./vm_templates.ts";

Deno.test("VM templates: the key is the VM's shape, image and VMM, not its own paths", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kuasar-tpl-" });
  try {
    const kernel = join(dir, "vmlinuz"), initrd = join(dir, "initramfs.img");
    await Deno.writeTextFile(kernel, "k");
    await Deno.writeTextFile(initrd, "i");
    let identity = "QEMU emulator version 7.2";
    const qemu = new QemuHypervisor({ binary: "qemu-system-x86_64", accel: "tcg" });
    const templating: VmTemplating = {
      ...qemu.templating,
      identity: () => Promise.resolve(identity),
    };
    const t = new VmTemplates({
      dir: join(dir, "t"),
      templating,
      bootTimeoutMs: 1000,
      agentAnswers: () => Promise.reject(new Error("not booted here")),
      withoutDaemonFds: (a) => [...a],
      owner: "/run/kuasar-vmm",
    });
    const vm = (id: string, more: Partial<VmDescription> = {}): VmDescription => ({
      id,
      name: `kuasar-${id}`,
      kernel,
      initrd,
      kernelParams: "kuasar.oci_runtime=crun",
      memoryMiB: 512,
      vcpus: 1,
      consoleLog: `/run/${id}/console.log`,
      eventLog: `/run/${id}/events.log`,
      controlSocket: `/run/s/${id}.qmp`,
      agentSocket: `/run/s/${id}.agent`,
      nics: [],
      shares: [],
      diskSlots: 8,
      stateDir: `/run/${id}`,
      nicSlots: 2,
      ...more,
    });
    const key = await t.key(vm("a"));
    assert.match(key, /^[0-9a-f]{32}$/);
    assert.equal(await t.key(vm("b")), key, "another pod, same shape");
    for (
      const other of [
        { vcpus: 2 },
        { memoryMiB: 1024 },
        { diskSlots: 3 },
        { kernelParams: "kuasar.oci_runtime=runc" },
        { debugSocket: "/run/s/a.debug" },
      ]
    ) {
      assert.notEqual(await t.key(vm("a", other)), key, JSON.stringify(other));
    }
    identity = "QEMU emulator version 8.2";
    assert.notEqual(await t.key(vm("a")), key, "another QEMU");
    identity = "QEMU emulator version 7.2";
    await Deno.writeTextFile(initrd, "a new image");
    assert.notEqual(await t.key(vm("a")), key, "another guest image");
    assert.equal(await t.ready(vm("a")), undefined, "nothing built");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** A VmTemplates on `dir` whose template VM is `argv` (never QEMU here). */
async function fixture(dir: string, argv: string[] = ["false"], shapes?: number) {
  const kernel = join(dir, "vmlinuz"), initrd = join(dir, "initramfs.img");
  // The same image for a second fixture on `dir` (a restarted sandboxer).
  await Deno.writeTextFile(kernel, "k", { createNew: true }).catch(() => {});
  await Deno.writeTextFile(initrd, "i", { createNew: true }).catch(() => {});
  const qemu = new QemuHypervisor({ binary: "qemu-system-x86_64", accel: "tcg" });
  const templating: VmTemplating = {
    ...qemu.templating!,
    identity: () => Promise.resolve("QEMU emulator version 7.2"),
    // QEMU's for keys (the VM "template"), `argv` for the template VMs built.
    argv: (vm, memory, mode) =>
      vm.id === "template" ? qemu.templating!.argv(vm, memory, mode) : argv,
  };
  const templates = join(dir, "t");
  const t = new VmTemplates({
    dir: templates,
    templating,
    bootTimeoutMs: 5000,
    agentAnswers: () => new Promise(() => {}),
    withoutDaemonFds: (a) => [...a],
    owner: "/run/kuasar-vmm",
    shapes,
  });
  const vm: VmDescription = {
    id: "a",
    name: "kuasar-a",
    kernel,
    initrd,
    kernelParams: "",
    memoryMiB: 512,
    vcpus: 1,
    consoleLog: join(dir, "a.log"),
    eventLog: join(dir, "a.events"),
    controlSocket: join(dir, "a.qmp"),
    agentSocket: join(dir, "a.agent"),
    nics: [],
    shares: [],
    diskSlots: 8,
    stateDir: join(dir, "a"),
    nicSlots: 2,
  };
  return { t, vm, templates, key: await t.key(vm) };
}

/** A built template as the sandboxer leaves one (of `lineage` when given). */
async function built(
  templates: string,
  key: string,
  when: string,
  lineage?: string,
): Promise<string> {
  const d = join(templates, key);
  await Deno.mkdir(d, { recursive: true, mode: 0o700 });
  await Deno.chmod(templates, 0o700);
  for (const f of ["memory", "state", "owner"]) {
    await Deno.writeTextFile(join(d, f), "x", { mode: 0o600 });
  }
  await Deno.writeTextFile(
    join(d, "template.json"),
    JSON.stringify({ key, built: when, lineage }),
    {
      mode: 0o600,
    },
  );
  return d;
}

/** `vm` with another memory size: another shape of it. */
function shaped(vm: VmDescription, memoryMiB: number): VmDescription {
  return { ...vm, id: `pod-${memoryMiB}`, memoryMiB };
}

/** A template of `lineage` built by the fixture's sandboxer, its RAM file `fillMiB` written. */
async function builtOurs(templates: string, key: string, lineage: string, fillMiB = 0) {
  const d = await built(templates, key, "2026-12-08T00:00:00.000Z", lineage);
  await Deno.writeTextFile(join(d, "owner"), "/run/kuasar-vmm");
  if (fillMiB) await Deno.writeFile(join(d, "memory"), new Uint8Array(fillMiB << 20).fill(1));
}

Deno.test("VM templates: one not the sandboxer's alone is not used", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kuasar-tpl-" });
  try {
    const { t, vm, templates, key } = await fixture(dir);
    const d = await built(templates, key, "2026-12-06T00:00:00.000Z");
    assert.equal((await t.ready(vm))?.built, "2026-12-06T00:00:00.000Z");
    await Deno.chmod(join(d, "memory"), 0o666);
    assert.equal(await t.ready(vm), undefined, "its RAM writable by others");
    await Deno.chmod(join(d, "memory"), 0o600);
    await Deno.chmod(templates, 0o1777);
    assert.equal(await t.ready(vm), undefined, "in a directory anyone writes to");
    await Deno.chmod(templates, 0o700);
    await Deno.remove(join(d, "state"));
    await Deno.symlink("/etc/hostname", join(d, "state"));
    assert.equal(await t.ready(vm), undefined, "a link in it");
    await Deno.remove(join(d, "state"));
    await Deno.writeTextFile(join(d, "state"), "x", { mode: 0o600 });
    if (Deno.uid() === 0) {
      await Deno.chown(join(d, "template.json"), 65534, 65534);
      assert.equal(await t.ready(vm), undefined, "a file of another user");
      await Deno.chown(join(d, "template.json"), 0, 0);
    }
    assert.ok(await t.ready(vm));
    // No template is built in such a directory either.
    await Deno.chmod(templates, 0o777);
    await assert.rejects(t.ensure({ ...vm, memoryMiB: 256 }), /writable by others/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("VM templates: a failed clone drops the build it used, not a newer one", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kuasar-tpl-" });
  try {
    const { t, vm, templates, key } = await fixture(dir);
    await built(templates, key, "2026-12-06T00:00:00.000Z");
    const used = await t.ready(vm);
    assert.ok(used);
    // Rebuilt meanwhile (the first failed clone's doing).
    await built(templates, key, "2026-12-06T00:01:00.000Z");
    await t.discard(used);
    assert.equal((await t.ready(vm))?.built, "2026-12-06T00:01:00.000Z", "the rebuild stays");
    await t.discard((await t.ready(vm))!);
    assert.equal(await t.ready(vm), undefined);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("VM templates: a build removes its sandboxer's older templates and abandoned ones", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kuasar-tpl-" });
  try {
    const { t, vm, templates } = await fixture(dir);
    const mine = await built(templates, "0".repeat(32), "2026-12-06T00:00:00.000Z");
    await Deno.writeTextFile(join(mine, "owner"), "/run/kuasar-vmm");
    const theirs = await built(templates, "1".repeat(32), "2026-12-06T00:00:00.000Z");
    await Deno.writeTextFile(join(theirs, "owner"), dir);
    const gone = await built(templates, "2".repeat(32), "2026-12-06T00:00:00.000Z");
    await Deno.writeTextFile(join(gone, "owner"), join(dir, "no-such-sandboxer"));
    const building = await built(templates, "3".repeat(32), "2026-12-06T00:00:00.000Z");
    await Deno.remove(join(building, "owner"));
    const old = await built(templates, "4".repeat(32), "2026-12-06T00:00:00.000Z");
    await Deno.remove(join(old, "owner"));
    await Deno.utime(old, new Date(Date.now() - 3_600_000), new Date(Date.now() - 3_600_000));
    await Deno.mkdir(join(templates, "operator-notes"));
    // The template VM (`false`) exits at once: the build fails, after its sweep.
    await assert.rejects(t.ensure(vm), /exited \(1\) while booting/);
    const left = (await Array.fromAsync(Deno.readDir(templates))).map((e) => e.name).sort();
    // Another sandboxer's (its state directory is there), and one being built now, stay.
    assert.deepEqual(left, ["1".repeat(32), "3".repeat(32), "operator-notes"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("VM templates: other shapes of a lineage stay up to `shapes`, the least recently used going first, the pinned one always", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kuasar-tpl-" });
  try {
    const { t, vm, templates, key } = await fixture(dir, ["false"], 3);
    const shape = (memoryMiB: number) => shaped(vm, memoryMiB);
    const lineage = await t.lineage(vm);
    assert.equal(await t.lineage({ ...vm, vcpus: 2, memoryMiB: 768 }), lineage, "a shape");
    assert.notEqual(await t.key(shape(768)), key);
    assert.notEqual(await t.lineage({ ...vm, kernelParams: "kuasar.oci_runtime=runc" }), lineage);
    const ours = (k: string, l = lineage) => builtOurs(templates, k, l);
    await ours(key);
    for (const m of [600, 700]) await ours(await t.key(shape(m)));
    const oldLineage = "5".repeat(32);
    await ours(oldLineage, "f".repeat(32));
    // The config's shape pinned (built: found ready), then 700 used before 600.
    assert.ok(await t.ensure(vm, true));
    assert.ok(await t.ready(shape(700)));
    await new Promise((r) => setTimeout(r, 20));
    assert.ok(await t.ready(shape(600)));
    // A fourth shape: room for 3 in all, the pinned one among them; its VM (`false`) fails.
    await assert.rejects(t.ensure(shape(800)), /exited \(1\) while booting/);
    const left = (await Array.fromAsync(Deno.readDir(templates))).map((e) => e.name).sort();
    assert.deepEqual(left, [key, await t.key(shape(600))].sort(), "700 (least recent) went");
    // Building the pinned one's key again (its RAM file gone) keeps the other shape.
    await Deno.remove(join(templates, key, "template.json"));
    await assert.rejects(t.ensure(vm, true), /exited \(1\) while booting/);
    assert.deepEqual(
      (await Array.fromAsync(Deno.readDir(templates))).map((e) => e.name),
      [await t.key(shape(600))],
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("VM templates: at start, unfinished ones and shapes beyond a lowered `shapes` go, the least recently used (as the directory says) first", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kuasar-tpl-" });
  try {
    const { t, vm, templates, key } = await fixture(dir, ["false"], 3);
    const shape = (memoryMiB: number) => shaped(vm, memoryMiB);
    const lineage = await t.lineage(vm);
    for (const k of [key, await t.key(shape(600)), await t.key(shape(700))]) {
      await builtOurs(templates, k, lineage);
    }
    const unfinished = join(templates, "6".repeat(32));
    await Deno.mkdir(unfinished);
    await Deno.writeTextFile(join(unfinished, "owner"), "/run/kuasar-vmm");
    assert.ok(await t.ready(shape(600)));
    await new Promise((r) => setTimeout(r, 20));
    assert.ok(await t.ready(shape(700)));
    // A restarted sandboxer (a new VmTemplates) with room for two.
    const { t: t2 } = await fixture(dir, ["false"], 2);
    await t2.trim(vm);
    const names = async () => (await Array.fromAsync(Deno.readDir(templates))).map((e) => e.name);
    assert.deepEqual((await names()).sort(), [key, await t.key(shape(700))].sort());
    // And with room for one: the config's alone.
    const { t: t1 } = await fixture(dir, ["false"], 1);
    await t1.trim(vm);
    assert.deepEqual(await names(), [key]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("VM templates: a new guest image's config template takes the old one's place, not another shape's room", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kuasar-tpl-" });
  try {
    const { t, vm, templates, key } = await fixture(dir, ["false"], 3);
    const shape = (memoryMiB: number) => shaped(vm, memoryMiB);
    const ours = (k: string, l: string) => builtOurs(templates, k, l);
    await ours(key, await t.lineage(vm));
    assert.ok(await t.ensure(vm, true));
    // A new image: a new key and lineage for the config's shape; its build fails here.
    await Deno.writeTextFile(vm.initrd, "a new image");
    const key2 = await t.key(vm);
    await assert.rejects(t.ensure(vm, true), /exited \(1\)/);
    await ours(key2, await t.lineage(vm));
    await ours(await t.key(shape(600)), await t.lineage(vm));
    // A third shape: with the config's and 600, three in all: 600 stays.
    await assert.rejects(t.ensure(shape(700)), /exited \(1\)/);
    const left = (await Array.fromAsync(Deno.readDir(templates))).map((e) => e.name).sort();
    assert.deepEqual(left, [key2, await t.key(shape(600))].sort());
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("VM templates: none bigger than a quarter of the host's available memory", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kuasar-tpl-" });
  try {
    const { t, vm } = await fixture(dir, ["true"]);
    await assert.rejects(
      t.ensure({ ...vm, memoryMiB: 1 << 30 }),
      /a 1073741824 MiB VM template would hold more than a quarter of the host's available memory/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "VM templates: no build without room for its whole RAM file; a template a clone still maps frees nothing, so it is not removed for one",
  ignore: Deno.uid() !== 0,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "kuasar-tpl-" });
    const templates = join(dir, "t");
    await Deno.mkdir(templates, { mode: 0o700 });
    const mount = await new Deno.Command("mount", {
      args: ["-t", "tmpfs", "-o", "size=300m,mode=0700", "tmpfs", templates],
    }).output();
    assert.ok(mount.success);
    let clone: Deno.ChildProcess | undefined;
    try {
      const { t, vm, key } = await fixture(dir, ["false"], 2);
      const shape = (memoryMiB: number) => shaped(vm, memoryMiB);
      const ours = async (k: string, fill = 0) =>
        builtOurs(templates, k, await t.lineage(vm), fill);
      await ours(key);
      const k150 = await t.key(shape(150));
      await ours(k150, 150);
      assert.ok(await t.ensure(vm, true));
      // 150 MiB free: a 100 MiB one needs 164. The 150 MiB template must go for it, but a
      // clone maps it.
      clone = new Deno.Command("python3", {
        args: [
          "-c",
          "import mmap,sys,time; f=open(sys.argv[1],'rb'); " +
          "m=mmap.mmap(f.fileno(),0,prot=mmap.PROT_READ); print('mapped',flush=True); time.sleep(120)",
          join(templates, k150, "memory"),
        ],
        stdout: "piped",
      }).spawn();
      const reader = clone.stdout.getReader();
      assert.match(new TextDecoder().decode((await reader.read()).value), /mapped/);
      await assert.rejects(t.ensure(shape(100)), /no room for a 100 MiB VM template/);
      assert.ok(await t.ready(shape(150)), "kept: removing it would have freed nothing");
      clone.kill("SIGKILL");
      await clone.status;
      reader.releaseLock();
      clone = undefined;
      // Not mapped: it goes, and the build goes on (its VM, `false`, then fails).
      await assert.rejects(t.ensure(shape(100)), /exited \(1\) while booting/);
      assert.equal(await t.ready(shape(150)), undefined);
    } finally {
      if (clone) {
        clone.kill("SIGKILL");
        await clone.status;
      }
      await new Deno.Command("umount", { args: [templates] }).output();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "VM templates: a tmpfs without a size limit has room",
  ignore: Deno.uid() !== 0,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "kuasar-tpl-" });
    const templates = join(dir, "t");
    await Deno.mkdir(templates, { mode: 0o700 });
    const mount = await new Deno.Command("mount", {
      args: ["-t", "tmpfs", "-o", "size=0,mode=0700", "tmpfs", templates],
    }).output();
    assert.ok(mount.success);
    try {
      const { t, vm } = await fixture(dir, ["false"]);
      // Past the room check: the template VM (`false`) runs and exits.
      await assert.rejects(t.ensure(vm), /exited \(1\) while booting/);
    } finally {
      await new Deno.Command("umount", { args: [templates] }).output();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("VM templates: turned off, the sandboxer's own go, others' stay; a directory not its own is left alone", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kuasar-tpl-" });
  try {
    const { t, vm, templates, key } = await fixture(dir);
    await builtOurs(templates, key, await t.lineage(vm));
    await builtOurs(templates, "7".repeat(32), "x");
    const theirs = await built(templates, "1".repeat(32), "2026-12-08T00:00:00.000Z");
    await Deno.writeTextFile(join(theirs, "owner"), "/run/kuasar-vmm-other");
    await Deno.mkdir(join(templates, "operator-notes"));
    await Deno.chmod(templates, 0o777);
    assert.equal(await removeOwnTemplates(templates, "/run/kuasar-vmm"), 0, "anyone writes there");
    await Deno.chmod(templates, 0o700);
    assert.equal(await removeOwnTemplates(templates, "/run/kuasar-vmm"), 2);
    const left = (await Array.fromAsync(Deno.readDir(templates))).map((e) => e.name).sort();
    assert.deepEqual(left, ["1".repeat(32), "operator-notes"]);
    assert.equal(await removeOwnTemplates(join(dir, "none"), "/run/kuasar-vmm"), 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
