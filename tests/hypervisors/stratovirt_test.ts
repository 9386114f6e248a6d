// The StratoVirt driver against what StratoVirt publishes: its argv checked against the
// command-line parser's options and the guidebook's device properties, its QMP commands against
// the QMP schema, by a fake that answers as StratoVirt does (tests/fakes/stratovirt_qmp.ts).
import assert from "node:assert/strict";
import { join } from "node:path";
import { StratoVirt } from "../../src/adapters/hypervisor/stratovirt/sv_hypervisor.ts";
import { QmpClient } from "../../src/adapters/hypervisor/qmp.ts";
import type { VmDescription } from "../../src/ports/hypervisor.ts";
import { checkArgv, SvQmpFake } from "../fakes/stratovirt_qmp.ts";

const OPTS = {
  binary: "/usr/bin/stratovirt",
  machine: "q35,mem-share=on",
  firmware: "/usr/share/edk2/ovmf/OVMF_CODE.fd",
  memPrealloc: false,
  debug: false,
};

function vmIn(dir: string, extra: Partial<VmDescription> = {}): VmDescription {
  return {
    id: "pod-s",
    name: "kuasar-pod-s",
    kernel: join(dir, "vmlinuz"),
    initrd: join(dir, "initramfs.img"),
    kernelParams: "task.sharefs_type=virtiofs",
    memoryMiB: 1024,
    vcpus: 2,
    consoleLog: join(dir, "console.log"),
    eventLog: join(dir, "vmm-events.log"),
    controlSocket: join(dir, "qmp.sock"),
    agentSocket: join(dir, "agent.sock"),
    vsockCid: 1234,
    nics: [{ tap: "tap0_kuasar", mac: "02:42:ac:11:00:02", queues: 2 }],
    shares: [{ socket: join(dir, "fs.sock"), tag: "kuasar" }],
    diskSlots: 2,
    stateDir: dir,
    nicSlots: 1,
    ...extra,
  };
}

async function withFake(f: (fake: SvQmpFake, vm: VmDescription, dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "k-sv-" });
  const vm = vmIn(dir);
  const fake = new SvQmpFake(vm.controlSocket, new StratoVirt(OPTS).argv(vm));
  try {
    await f(fake, vm, dir);
  } finally {
    try {
      fake.close();
    } catch { /* quit closed it */ }
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("stratovirt: argv within its parser and guidebook, every PCI device at its own slot", () => {
  const dir = "/run/kuasar-vmm/pod-s";
  const argv = new StratoVirt(OPTS).argv(vmIn(dir));
  assert.deepEqual(checkArgv(argv), []);
  assert.deepEqual(argv, [
    "/usr/bin/stratovirt",
    "-name",
    "kuasar-pod-s",
    "-machine",
    "q35,mem-share=on",
    "-smp",
    "cpus=2",
    "-m",
    "1024M",
    "-kernel",
    `${dir}/vmlinuz`,
    "-initrd",
    `${dir}/initramfs.img`,
    "-append",
    "console=ttyS0 panic=-1 quiet pcie_ports=native task.sharefs_type=virtiofs",
    "-qmp",
    `unix:${dir}/qmp.sock,server,nowait`,
    "-serial",
    `file,path=${dir}/console.log`,
    "-global",
    "pcie-root-port.fast-unplug=1",
    "-disable-seccomp",
    "-drive",
    "file=/usr/share/edk2/ovmf/OVMF_CODE.fd,if=pflash,unit=0,readonly=true",
    "-object",
    "rng-random,id=rng0,filename=/dev/urandom",
    "-device",
    "virtio-rng-pci,id=rng,rng=rng0,bus=pcie.0,addr=0x1",
    "-device",
    "vhost-vsock-pci,id=vsock0,guest-cid=1234,bus=pcie.0,addr=0x2",
    "-chardev",
    `socket,id=fs0,path=${dir}/fs.sock`,
    "-device",
    "vhost-user-fs-pci,id=fsdev0,chardev=fs0,tag=kuasar,bus=pcie.0,addr=0x3",
    "-netdev",
    "tap,id=net0,ifname=tap0_kuasar,queues=2",
    "-device",
    "virtio-net-pci,id=nic0,netdev=net0,mac=02:42:ac:11:00:02,bus=pcie.0,addr=0x4,mq=on",
    "-device",
    "pcie-root-port,id=pcie.1,port=0x5,bus=pcie.0,addr=0x5",
    "-device",
    "pcie-root-port,id=pcie.2,port=0x6,bus=pcie.0,addr=0x6",
    "-device",
    "pcie-root-port,id=pcie.3,port=0x7,bus=pcie.0,addr=0x7",
  ]);
  // Debug, prealloc, CPU room; no firmware.
  const more = new StratoVirt({ ...OPTS, firmware: "", memPrealloc: true, debug: true })
    .argv(vmIn(dir, { maxVcpus: 4 }));
  assert.deepEqual(checkArgv(more), []);
  assert.ok(more.includes("-mem-prealloc") && more.at(-1) === "-D");
  assert.ok(more.includes("cpus=2,maxcpus=4"));
  assert.ok(!more.includes("-drive"));
  // The root bus has 30 free slots: more hot-plug room than fits is said at once.
  assert.throws(
    () => new StratoVirt(OPTS).argv(vmIn(dir, { diskSlots: 30 })),
    /PCI slots on StratoVirt's root bus.*hotplug_disk_slots/,
  );
  // Many vCPUs: queue pairs capped at StratoVirt's 16.
  const big = new StratoVirt(OPTS).argv(
    vmIn(dir, { nics: [{ tap: "t", mac: "02:00:00:00:00:01", queues: 24 }] }),
  );
  assert.ok(big.includes("tap,id=net0,ifname=t,queues=16"));
  assert.deepEqual(checkArgv(big), []);
  // Without vhost-vsock there is no way to the agent: said at once.
  assert.throws(
    () => new StratoVirt(OPTS).argv(vmIn(dir, { vsockCid: undefined })),
    /vhost-vsock/,
  );
});

Deno.test("stratovirt contract: argv it would refuse is found", () => {
  assert.match(checkArgv(["sv", "-no-reboot"]).join(), /no such option/);
  assert.match(checkArgv(["sv", "-device", "virtio-net-pci,id=n,netdev=x"]).join(), /bus and addr/);
  assert.match(
    checkArgv(["sv", "-device", "virtio-rng-pci,id=r,bus=pcie.0,addr=0x1,vectors=3"]).join(),
    /no property vectors/,
  );
  assert.match(
    checkArgv([
      "sv",
      "-device",
      "virtio-rng-pci,id=r,bus=pcie.0,addr=0x1",
      "-device",
      "pcie-root-port,id=pcie.1,port=0x1,bus=pcie.0,addr=0x1",
    ]).join(),
    /pcie.0\/0x1 is taken/,
  );
});

Deno.test("stratovirt: boot, disks and NICs into root ports, stop: all within QMP's schema", async () => {
  await withFake(async (fake, vm, dir) => {
    const sv = new StratoVirt(OPTS);
    await sv.boot(vm, performance.now() + 5000);
    const image = join(dir, "vol.img");
    await Deno.writeFile(image, new Uint8Array(4096));
    await sv.attachDisk(vm, {
      id: "kd0",
      path: image,
      readOnly: false,
      serial: "kuasar-kd0",
      slot: 1,
    });
    assert.deepEqual(fake.devices, ["kd0"]);
    const add = fake.calls.find((c) => c.execute === "device_add")!;
    assert.deepEqual(add.arguments, {
      id: "kd0",
      driver: "virtio-blk-pci",
      drive: "kd0",
      bus: "pcie.2",
      addr: "0x0",
      serial: "kuasar-kd0",
    });
    await sv.detachDisk(vm, { id: "kd0" });
    assert.deepEqual(fake.devices, [], "detach returns once the guest let it go");
    assert.deepEqual(fake.blockdevs, []);
    // Already gone (a restarted daemon finishing a detach): StratoVirt's words for it are known.
    await sv.detachDisk(vm, { id: "kd0" });
    fake.violations.length = 0; // those refusals were the point
    // A late NIC, multi-queue, into the first port after the disks'.
    await sv.attachNic(vm, { tap: "tap1_kuasar", mac: "02:42:ac:11:00:03", queues: 2, slot: 0 });
    const nic = fake.calls.filter((c) => c.execute === "device_add").at(-1)!;
    assert.equal(nic.arguments.bus, "pcie.3");
    assert.equal(nic.arguments.mq, "on");
    assert.equal(fake.calls.find((c) => c.execute === "netdev_add")!.arguments.queues, 2);
    // An image file is opened without O_DIRECT (tmpfs refuses it).
    assert.deepEqual(fake.calls.find((c) => c.execute === "blockdev-add")!.arguments.cache, {
      direct: false,
    });
    await assert.rejects(() => sv.resize(), { name: "FailedPreconditionError" });
    await sv.requestStop(vm);
    await fake.exited;
    assert.deepEqual(fake.violations, []);
  });
});

Deno.test("stratovirt contract: a wrong field, a wrong type, a command out of order all fail", async () => {
  await withFake(async (fake, vm, dir) => {
    const qmp = await QmpClient.connect(vm.controlSocket, 2000);
    try {
      // mq is a string in StratoVirt's schema ("on"), not a boolean as in QEMU's.
      await assert.rejects(
        () =>
          qmp.execute("device_add", {
            id: "n",
            driver: "virtio-net-pci",
            netdev: "x",
            bus: "pcie.1",
            addr: "0x0",
            mq: true,
          }),
        /mq: invalid type/,
      );
      await assert.rejects(
        () => qmp.execute("blockdev-add", { "node-name": "b", file: { filename: "/x" } }),
        /missing field `driver`/,
      );
      await assert.rejects(
        () => qmp.execute("device_del", { id: "b", force: true }),
        /unknown field/,
      );
      // A device on pcie.0 (not hot-pluggable), at a slot other than 0, twice on one port.
      const image = join(dir, "d.img");
      await Deno.writeFile(image, new Uint8Array(512));
      await qmp.execute("blockdev-add", {
        "node-name": "b",
        file: { driver: "file", filename: image },
      });
      const blk = { id: "b", driver: "virtio-blk-pci", drive: "b" };
      await assert.rejects(() => qmp.execute("device_add", { ...blk, bus: "pcie.0", addr: "0x9" }));
      await assert.rejects(() => qmp.execute("device_add", { ...blk, bus: "pcie.1", addr: "0x1" }));
      await qmp.execute("device_add", { ...blk, bus: "pcie.1", addr: "0x0" });
      await assert.rejects(
        () => qmp.execute("device_add", { ...blk, id: "c", bus: "pcie.1", addr: "0x0" }),
        /already has a device/,
      );
      assert.equal(fake.violations.length, 6, fake.violations.join("\n"));
    } finally {
      qmp.close();
    }
  });
});
