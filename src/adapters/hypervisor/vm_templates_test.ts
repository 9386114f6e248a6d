import assert from "node:assert/strict";
import { join } from "node:path";
import type { VmDescription, VmTemplating } from "../../ports/hypervisor.ts";
import { QemuHypervisor } from "./qemu/qemu_hypervisor.ts";
import { VmTemplates } from "./vm_templates.ts";

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
