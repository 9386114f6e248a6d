// The Cloud Hypervisor driver against its published contract: what it sends
// is checked by the contract fake (OpenAPI document + the VMM's own rules),
// its argv and VmConfig are pinned, and hybrid vsock reaches an agent.
import assert from "node:assert/strict";
import { join } from "node:path";
import { CloudHypervisor } from "../../src/adapters/hypervisor/cloud_hypervisor/ch_hypervisor.ts";
import { chVmConfig } from "../../src/adapters/hypervisor/cloud_hypervisor/ch_config.ts";
import { AgentLinks } from "../../src/adapters/hypervisor/agent_links.ts";
import { apiRequest } from "../../src/adapters/hypervisor/api_http.ts";
import type { VmDescription } from "../../src/ports/hypervisor.ts";
import { SandboxServiceDefinition } from "../../src/gen/kuasar/sandbox.ts";
import { TtrpcServer } from "../../src/adapters/ttrpc/server.ts";
import { unaryMethods } from "../../src/adapters/ttrpc/typed.ts";
import { ChApiFake } from "../fakes/cloud_hypervisor_api.ts";

const OPTS = {
  binary: "/usr/local/bin/cloud-hypervisor",
  hugepages: false,
  entropySource: "/dev/urandom",
  debug: false,
};

/** A pod's VM in a temporary directory: kernel, initramfs and virtiofsd's socket exist. */
async function vmIn(dir: string, extra: Partial<VmDescription> = {}): Promise<VmDescription> {
  await Deno.writeFile(join(dir, "vmlinux"), new Uint8Array(16));
  await Deno.writeFile(join(dir, "initramfs.img"), new Uint8Array(16));
  const fs = join(dir, "fs.sock");
  Deno.listen({ transport: "unix", path: fs }); // virtiofsd stand-in: the socket answers
  return {
    id: "pod-a",
    name: "kuasar-pod-a",
    kernel: join(dir, "vmlinux"),
    initrd: join(dir, "initramfs.img"),
    kernelParams: "task.sharefs_type=virtiofs",
    memoryMiB: 512,
    vcpus: 1,
    consoleLog: join(dir, "console.log"),
    eventLog: join(dir, "vmm-events.log"),
    controlSocket: join(dir, "api.sock"),
    agentSocket: join(dir, "task.vsock"),
    nics: [{ tap: "tap0_kuasar", mac: "02:42:ac:11:00:02", queues: 1 }],
    shares: [{ socket: fs, tag: "kuasar" }],
    diskSlots: 3,
    stateDir: dir,
    nicSlots: 1,
    ...extra,
  };
}

async function withFake(
  f: (fake: ChApiFake, vm: VmDescription, dir: string) => Promise<void>,
  extra: Partial<VmDescription> = {},
  opts: ConstructorParameters<typeof ChApiFake>[1] = {},
) {
  const dir = await Deno.makeTempDir({ prefix: "k-ch-" });
  const vm = await vmIn(dir, extra);
  const fake = new ChApiFake(vm.controlSocket, opts);
  try {
    await f(fake, vm, dir);
  } finally {
    await fake.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("cloud-hypervisor: argv is the API socket; the VM is a VmConfig of the document", async () => {
  await withFake((fake, vm) => {
    const ch = new CloudHypervisor(OPTS);
    assert.deepEqual(ch.argv(vm), [
      OPTS.binary,
      "--api-socket",
      `path=${vm.controlSocket}`,
      "--event-monitor",
      `path=${vm.eventLog}`,
    ]);
    assert.deepEqual(new CloudHypervisor({ ...OPTS, debug: true }).argv(vm).at(-1), "-vv");
    const grown = { ...vm, vcpus: 2, maxVcpus: 4, memoryMiB: 1024, maxMemoryMiB: 1500 };
    const config = chVmConfig({ ...OPTS, hugepages: true }, grown);
    assert.deepEqual(
      fake.contract.validate({ $ref: "#/components/schemas/VmConfig" }, config, "VmConfig"),
      [],
    );
    assert.deepEqual(config, {
      cpus: { boot_vcpus: 2, max_vcpus: 4 },
      memory: {
        size: 1024 << 20,
        shared: true,
        hugepages: true,
        hotplug_method: "Acpi",
        // 476 MiB of room, in whole 128 MiB blocks.
        hotplug_size: 512 << 20,
      },
      payload: {
        kernel: vm.kernel,
        initramfs: vm.initrd,
        cmdline: "console=ttyS0 panic=-1 quiet task.sharefs_type=virtiofs",
      },
      serial: { mode: "File", file: vm.consoleLog },
      console: { mode: "Off" },
      rng: { src: "/dev/urandom" },
      vsock: { cid: 3, socket: vm.agentSocket, id: "vsock0" },
      fs: [{
        tag: "kuasar",
        socket: vm.shares[0].socket,
        num_queues: 1,
        queue_size: 1024,
        id: "fs0",
      }],
      net: [{ tap: "tap0_kuasar", mac: "02:42:ac:11:00:02", num_queues: 2, id: "net0" }],
    });
    // No entropy source: no rng device.
    assert.equal(chVmConfig({ ...OPTS, entropySource: "" }, vm).rng, undefined);
    return Promise.resolve();
  });
});

Deno.test("cloud-hypervisor: boot, disks, NICs, growth and stop, all within the contract", async () => {
  await withFake(async (fake, vm, dir) => {
    const ch = new CloudHypervisor(OPTS);
    await ch.boot(vm, performance.now() + 5000);
    assert.equal(fake.state, "Running");
    assert.deepEqual(
      fake.calls.map((c) => `${c.method} ${c.path}`),
      [
        "GET /api/v1/vmm.ping",
        "PUT /api/v1/vm.create",
        "PUT /api/v1/vm.boot",
        "GET /api/v1/vm.info",
      ],
    );
    // A block volume: attached with its serial, detached once the guest ejected it.
    const image = join(dir, "vol.img");
    await Deno.writeFile(image, new Uint8Array(4096));
    await ch.attachDisk(vm, {
      id: "kd0",
      path: image,
      readOnly: true,
      serial: "kuasar-kd0",
      slot: 0,
    });
    const add = fake.calls.find((c) => c.path.endsWith("vm.add-disk"))!;
    assert.deepEqual(add.body, {
      path: image,
      readonly: true,
      direct: false,
      image_type: "Raw",
      serial: "kuasar-kd0",
      id: "kd0",
    });
    assert.ok(fake.devices.includes("kd0"));
    await ch.detachDisk(vm, { id: "kd0" });
    assert.ok(!fake.devices.includes("kd0"), "detach returns once the device left the VM");
    // A disk already gone (a restarted daemon finishing an unplug) is not an error, and not
    // asked for again (released versions answer an unknown id with a bare 500).
    const removes = fake.calls.filter((c) => c.path.endsWith("vm.remove-device")).length;
    await ch.detachDisk(vm, { id: "kd0" });
    assert.equal(fake.calls.filter((c) => c.path.endsWith("vm.remove-device")).length, removes);
    // A late interface.
    await ch.attachNic(vm, { tap: "tap1_kuasar", mac: "02:42:ac:11:00:03", queues: 2, slot: 0 });
    assert.ok(fake.devices.includes("hnic0"));
    await ch.requestStop(vm);
    await fake.exited;
    assert.deepEqual(fake.violations, []);
  });
});

Deno.test("cloud-hypervisor: growth within the VM's room; beyond it, the VMM's refusal", async () => {
  await withFake(
    async (fake, vm) => {
      const ch = new CloudHypervisor(OPTS);
      await ch.boot(vm, performance.now() + 5000);
      assert.deepEqual(await ch.resize(vm, { vcpus: 1, memoryMiB: 512 }), {
        vcpus: 1,
        memoryMiB: 512,
      });
      assert.ok(!fake.calls.some((c) => c.path.endsWith("vm.resize")), "nothing to grow: no call");
      assert.deepEqual(await ch.resize(vm, { vcpus: 2, memoryMiB: 700 }), {
        vcpus: 2,
        memoryMiB: 768,
      });
      assert.deepEqual(fake.calls.at(-2)!.body, { desired_vcpus: 2, desired_ram: 768 << 20 });
      // Asked again (a restarted daemon): read back, not grown twice.
      await ch.resize(vm, { vcpus: 2, memoryMiB: 700 });
      assert.equal(fake.calls.filter((c) => c.path.endsWith("vm.resize")).length, 1);
      await assert.rejects(
        () => ch.resize(vm, { vcpus: 3, memoryMiB: 700 }),
        (e: Error) =>
          e.name === "FailedPreconditionError" && /DesiredVCpuCountExceedsMax/.test(e.message),
      );
      assert.equal(fake.violations.length, 1);
    },
    { maxVcpus: 2, maxMemoryMiB: 1024, memorySlots: 1 },
  );
});

Deno.test("cloud-hypervisor: memory grows by whole blocks from any size", async () => {
  await withFake(
    async (fake, vm) => {
      const ch = new CloudHypervisor(OPTS);
      await ch.boot(vm, performance.now() + 5000);
      assert.deepEqual(await ch.resize(vm, { vcpus: 1, memoryMiB: 1100 }), {
        vcpus: 1,
        memoryMiB: 1128,
      });
      assert.deepEqual(fake.violations, []);
    },
    { memoryMiB: 1000, maxMemoryMiB: 2000, memorySlots: 1 },
  );
});

Deno.test("cloud-hypervisor: the agent over hybrid vsock; a port nobody listens on is refused", async () => {
  let checks = 0;
  const agent = new TtrpcServer();
  agent.register(
    SandboxServiceDefinition.fullName,
    unaryMethods(SandboxServiceDefinition, { check: () => (checks++, Promise.resolve({})) }),
  );
  await withFake(
    async (fake, vm) => {
      const ch = new CloudHypervisor(OPTS);
      await ch.boot(vm, performance.now() + 5000);
      const links = new AgentLinks(() => Promise.resolve(ch.agentAddresses(vm, 1024)));
      const link = await links.connect(vm.id, performance.now() + 5000);
      assert.equal(checks, 1);
      await links.drop(vm.id);
      assert.ok(link.client.closed);
      const nobody = new AgentLinks(() => Promise.resolve(ch.agentAddresses(vm, 1025)));
      await assert.rejects(
        () => nobody.connect(vm.id, performance.now() + 500),
        /refused|did not answer/,
      );
      assert.deepEqual(fake.violations, []);
    },
    {},
    { guestPorts: { 1024: (conn) => void agent.handle(conn) } },
  );
  agent.close();
});

Deno.test("cloud-hypervisor contract: a wrong field, a wrong method, a missing call all fail", async () => {
  await withFake(async (fake, vm, dir) => {
    const sock = vm.controlSocket;
    // A field of the wrong type, and one the document does not have.
    let r = await apiRequest(sock, "PUT", "/api/v1/vm.add-disk", { path: 1, id: "x" });
    assert.equal(r.status, 400);
    r = await apiRequest(sock, "PUT", "/api/v1/vm.add-disk", { path: "/x", read_only: true });
    assert.equal(r.status, 400);
    // A method the path does not have; a path the API does not have.
    r = await apiRequest(sock, "GET", "/api/v1/vm.boot");
    assert.equal(r.status, 400);
    r = await apiRequest(sock, "PUT", "/api/v1/vm.start");
    assert.equal(r.status, 404);
    // vm.boot without vm.create: the driver's error carries the VMM's words.
    r = await apiRequest(sock, "PUT", "/api/v1/vm.boot");
    assert.equal(r.status, 404);
    // A VmConfig the VMM's validation refuses: virtiofs without shared memory.
    const config = chVmConfig(OPTS, vm) as { memory: Record<string, unknown> };
    r = await apiRequest(sock, "PUT", "/api/v1/vm.create", {
      ...config,
      memory: { ...config.memory, shared: false },
    });
    assert.equal(r.status, 500);
    assert.match(r.body, /VhostUserRequiresSharedMemory/);
    assert.equal(fake.violations.length, 6, fake.violations.join("\n"));
    assert.match(fake.violations[0], /path: not a string/);
    assert.match(fake.violations[1], /read_only is not a property/);
    // The driver turns a refusal into a typed error.
    fake.violations.length = 0;
    const ch = new CloudHypervisor(OPTS);
    await ch.boot(vm, performance.now() + 5000);
    await assert.rejects(
      () =>
        ch.attachDisk(vm, {
          id: "kd1",
          path: join(dir, "absent"),
          readOnly: false,
          serial: "s",
          slot: 0,
        }),
      (e: Error) => e.name === "InternalError" && /cannot open disk path/.test(e.message),
    );
  });
});
