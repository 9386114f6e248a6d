// The Firecracker driver against its published API (Swagger document, via the contract fake):
// the VM described before InstanceStart, the agent over hybrid vsock, disks by re-pointing the
// drive slots made at boot, nothing else added later.
import assert from "node:assert/strict";
import { join } from "node:path";
import { Firecracker } from "../../src/adapters/hypervisor/firecracker/fc_hypervisor.ts";
import { AgentLinks } from "../../src/adapters/hypervisor/agent_links.ts";
import { apiRequest } from "../../src/adapters/hypervisor/api_http.ts";
import type { VmDescription } from "../../src/ports/hypervisor.ts";
import { SandboxServiceDefinition } from "../../src/gen/kuasar/sandbox.ts";
import { TtrpcServer } from "../../src/adapters/ttrpc/server.ts";
import { unaryMethods } from "../../src/adapters/ttrpc/typed.ts";
import { FcApiFake } from "../fakes/firecracker_api.ts";
import type { GuestPorts } from "../fakes/hybrid_vsock.ts";

const OPTS = { binary: "/usr/local/bin/firecracker" };

async function withFake(
  f: (fake: FcApiFake, vm: VmDescription, dir: string) => Promise<void>,
  ports: GuestPorts = {},
) {
  const dir = await Deno.makeTempDir({ prefix: "k-fc-" });
  await Deno.writeFile(join(dir, "vmlinux"), new Uint8Array(16));
  await Deno.writeFile(join(dir, "initramfs.img"), new Uint8Array(16));
  const vm: VmDescription = {
    id: "pod-f",
    name: "kuasar-pod-f",
    kernel: join(dir, "vmlinux"),
    initrd: join(dir, "initramfs.img"),
    kernelParams: "",
    memoryMiB: 512,
    vcpus: 2,
    consoleLog: join(dir, "console.log"),
    eventLog: join(dir, "vmm-events.log"),
    controlSocket: join(dir, "api.sock"),
    agentSocket: join(dir, "task.vsock"),
    nics: [{ tap: "tap0_kuasar", mac: "02:42:ac:11:00:02", queues: 2 }],
    shares: [],
    diskSlots: 2,
    stateDir: dir,
    nicSlots: 0,
  };
  const fake = new FcApiFake(vm.controlSocket, ports, vm.name);
  try {
    await f(fake, vm, dir);
  } finally {
    await fake.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("firecracker: argv, the VM described before InstanceStart, stop; all in the contract", async () => {
  let checks = 0;
  const agent = new TtrpcServer();
  agent.register(
    SandboxServiceDefinition.fullName,
    unaryMethods(SandboxServiceDefinition, { check: () => (checks++, Promise.resolve({})) }),
  );
  await withFake(async (fake, vm) => {
    const fc = new Firecracker(OPTS);
    assert.deepEqual(fc.argv(vm), [OPTS.binary, "--api-sock", vm.controlSocket, "--id", vm.name]);
    assert.deepEqual(fc.capabilities, {
      virtiofs: false,
      diskHotplug: true,
      nicHotplug: false,
      resize: false,
      serialPorts: false,
    });
    await fc.boot(vm, performance.now() + 5000);
    assert.deepEqual(fake.calls.map((c) => `${c.method} ${c.path}`), [
      "GET /",
      "PUT /machine-config",
      "PUT /boot-source",
      "PUT /vsock",
      "PUT /drives/kslot0",
      "PUT /drives/kslot1",
      "PUT /network-interfaces/eth0",
      "PUT /actions",
      "GET /",
    ]);
    assert.deepEqual(fake.config["/machine-config"], {
      vcpu_count: 2,
      mem_size_mib: 512,
      smt: false,
    });
    assert.deepEqual(fake.config["/boot-source"], {
      kernel_image_path: vm.kernel,
      initrd_path: vm.initrd,
      boot_args: "console=ttyS0 reboot=k panic=-1 i8042.noaux i8042.nomux i8042.dumbkbd quiet",
    });
    assert.deepEqual(fake.config["/vsock"], { guest_cid: 3, uds_path: vm.agentSocket });
    assert.deepEqual(fake.config["/network-interfaces/eth0"], {
      iface_id: "eth0",
      host_dev_name: "tap0_kuasar",
      guest_mac: "02:42:ac:11:00:02",
    });
    // The agent, over hybrid vsock.
    const links = new AgentLinks(() => Promise.resolve(fc.agentAddresses(vm, 1024)));
    await links.connect(vm.id, performance.now() + 5000);
    assert.equal(checks, 1);
    const info = JSON.parse((await apiRequest(vm.controlSocket, "GET", "/")).body);
    assert.equal(info.id, vm.name);
    assert.equal(info.state, "Running");
    await links.drop(vm.id);
    // Disk slots: drives on empty placeholders made at boot, re-pointed to attach a disk; the
    // serial the driver gives is the one Firecracker's guest reads for that file.
    assert.deepEqual(fake.config["/drives/kslot1"], {
      drive_id: "kslot1",
      path_on_host: join(vm.stateDir, "fc-slots", "1.img"),
      is_root_device: false,
      is_read_only: false,
    });
    assert.equal((await Deno.stat(join(vm.stateDir, "fc-slots", "1.img"))).size, 4096);
    const image = join(vm.stateDir, "bundle.img");
    await Deno.writeFile(image, new Uint8Array(1 << 20));
    const disk = { id: "kdisk0", path: image, readOnly: false, serial: "kuasar-0", slot: 1 };
    const serial = await fc.attachDisk(vm, disk);
    assert.equal(serial, fake.serialOf("kslot1"));
    assert.notEqual(serial, "kuasar-0");
    await fc.detachDisk(vm, disk);
    assert.deepEqual(fake.patches, [
      { drive: "kslot1", path: image },
      { drive: "kslot1", path: join(vm.stateDir, "fc-slots", "1.img") },
    ]);
    await assert.rejects(() => fc.attachDisk(vm, { ...disk, slot: 2 }), /no disk slot 2/);
    await assert.rejects(() => fc.attachDisk(vm, { ...disk, readOnly: true }), /read-only/);
    // Nothing else is added to a running Firecracker VM: said, not attempted.
    await assert.rejects(() => fc.attachNic(), /adds no network interfaces/);
    await assert.rejects(() => fc.resize(), { name: "FailedPreconditionError" });
    await fc.requestStop(vm);
    await fake.exited;
    assert.deepEqual(fake.violations, []);
  }, { 1024: (conn) => void agent.handle(conn) });
  agent.close();
});

Deno.test("firecracker contract: a wrong field, a mismatched id, a call out of order all fail", async () => {
  await withFake(async (fake, vm) => {
    const sock = vm.controlSocket;
    const put = (path: string, body: unknown) => apiRequest(sock, "PUT", path, body);
    // Out of order: no kernel yet.
    assert.equal((await put("/actions", { action_type: "InstanceStart" })).status, 400);
    // Not in the document: a field, an action, a path.
    assert.equal(
      (await put("/machine-config", { vcpu_count: 1, mem_size_mib: 128, cpus: 1 })).status,
      400,
    );
    assert.equal((await put("/machine-config", { vcpu_count: 33, mem_size_mib: 128 })).status, 400);
    assert.equal((await put("/actions", { action_type: "Reboot" })).status, 400);
    assert.equal((await put("/vm.boot", {})).status, 400);
    // Firecracker's own rules: the path's id is the body's; SMT wants an even vCPU count.
    const nic = { iface_id: "eth1", host_dev_name: "tap0" };
    assert.equal((await put("/network-interfaces/eth0", nic)).status, 400);
    assert.equal(
      (await put("/machine-config", { vcpu_count: 3, mem_size_mib: 128, smt: true })).status,
      400,
    );
    assert.equal(fake.violations.length, 7, fake.violations.join("\n"));
    assert.match(fake.violations[1], /cpus is not a property/);
    assert.match(fake.violations[2], /33 is above 32/);
    // Ids as Firecracker takes them; a vsock socket left from an earlier run.
    const drive = { drive_id: "drive-1", is_root_device: false };
    assert.equal((await put("/drives/drive-1", drive)).status, 400);
    await Deno.writeTextFile(vm.agentSocket, "");
    assert.match((await put("/vsock", { guest_cid: 3, uds_path: vm.agentSocket })).body, /exists/);
    await Deno.remove(vm.agentSocket);
    assert.equal(fake.violations.length, 9);
    // More vCPUs than Firecracker has: said before any call.
    await assert.rejects(
      () => new Firecracker(OPTS).boot({ ...vm, vcpus: 33 }, performance.now() + 5000),
      /at most 32 vCPUs/,
    );
    // More devices than it has interrupt lines for (drives, NICs, the vsock): said, too.
    await assert.rejects(
      () => new Firecracker(OPTS).boot({ ...vm, diskSlots: 18 }, performance.now() + 5000),
      /19 devices at most: 18 disk slots/,
    );
    // Pre-boot only: refused once started, and the driver says so with Firecracker's words.
    fake.violations.length = 0;
    const fc = new Firecracker(OPTS);
    await fc.boot(vm, performance.now() + 5000);
    await assert.rejects(
      () => fc.boot(vm, performance.now() + 5000),
      (e: Error) =>
        e.name === "FailedPreconditionError" && /not supported after starting/.test(e.message),
    );
    // Re-pointing a drive: only a drive it has, only at a file it can open, ids matching.
    const patch = (path: string, body: unknown) => apiRequest(sock, "PATCH", path, body);
    fake.violations.length = 0;
    assert.equal((await patch("/drives/kslot9", { drive_id: "kslot9" })).status, 400);
    const gone = { drive_id: "kslot0", path_on_host: join(vm.stateDir, "absent.img") };
    assert.equal((await patch("/drives/kslot0", gone)).status, 400);
    assert.equal((await patch("/drives/kslot0", { drive_id: "kslot1" })).status, 400);
    assert.equal(
      (await patch("/drives/kslot0", { drive_id: "kslot0", is_read_only: true })).status,
      400,
    );
    assert.equal(fake.violations.length, 4, fake.violations.join("\n"));
    assert.match(fake.violations[3], /is_read_only is not a property/);
    await assert.rejects(
      () =>
        fc.attachDisk(vm, {
          id: "d",
          path: gone.path_on_host,
          readOnly: false,
          serial: "s",
          slot: 0,
        }),
      /No such file/,
    );
  });
});

Deno.test("firecracker contract: drives are re-pointed only once the VM runs", async () => {
  await withFake(async (fake, vm) => {
    const body = { drive_id: "kslot0", path_on_host: vm.kernel };
    assert.equal((await apiRequest(vm.controlSocket, "PATCH", "/drives/kslot0", body)).status, 400);
    assert.match(fake.violations[0], /before starting/);
  });
});
