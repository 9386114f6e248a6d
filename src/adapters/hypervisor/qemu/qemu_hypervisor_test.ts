import assert from "node:assert/strict";
import { join } from "node:path";
import type { VmDescription } from "../../../ports/hypervisor.ts";
import { QemuHypervisor } from "./qemu_hypervisor.ts";

function vm(dir: string, over: Partial<VmDescription> = {}): VmDescription {
  return {
    id: "a".repeat(64),
    name: "kuasar-aaaaaaaaaaaa",
    kernel: "/g/vmlinuz",
    initrd: "/g/initramfs.img",
    kernelParams: "",
    memoryMiB: 512,
    vcpus: 2,
    consoleLog: join(dir, "console.log"),
    eventLog: join(dir, "vmm-events.log"),
    controlSocket: join(dir, "qmp.sock"),
    agentSocket: join(dir, "agent.sock"),
    nics: [],
    shares: [],
    diskSlots: 0,
    stateDir: dir,
    nicSlots: 0,
    ...over,
  };
}

/**
 * A QMP endpoint as QEMU 7.2 answers: the greeting, then a `return` per command, only after
 * `qmp_capabilities`; records the commands.
 */
function fakeQmp(
  path: string,
  answers: Record<string, unknown> = {},
  errors: Record<string, { class: string; desc: string }> = {},
): { commands: string[]; calls: Record<string, unknown>[]; close(): void } {
  const commands: string[] = [];
  const calls: Record<string, unknown>[] = [];
  const listener = Deno.listen({ transport: "unix", path });
  (async () => {
    for await (const conn of listener) {
      (async () => {
        const w = (o: unknown) => conn.write(new TextEncoder().encode(JSON.stringify(o) + "\r\n"));
        await w({
          QMP: { version: { qemu: { major: 7, minor: 2, micro: 22 } }, capabilities: [] },
        });
        let negotiated = false;
        let quit = false;
        let buf = "";
        const chunk = new Uint8Array(4096);
        while (!quit) {
          const n = await conn.read(chunk).catch(() => null);
          if (n === null) break;
          buf += new TextDecoder().decode(chunk.subarray(0, n));
          let nl;
          while ((nl = buf.indexOf("\n")) >= 0) {
            const call = JSON.parse(buf.slice(0, nl));
            const cmd = call.execute as string;
            buf = buf.slice(nl + 1);
            commands.push(cmd);
            calls.push(call);
            if (cmd === "qmp_capabilities") negotiated = true;
            else if (!negotiated) {
              await w({ error: { class: "CommandNotFound", desc: "Expecting capabilities" } });
              continue;
            }
            if (errors[cmd]) {
              await w({ error: errors[cmd] });
              continue;
            }
            await w({ return: answers[cmd] ?? {} });
            if (cmd === "quit") quit = true;
            // As QEMU: the unplug completes later, once the guest has released the device.
            if (cmd === "device_del") {
              await w({ event: "DEVICE_DELETED", data: { device: call.arguments.id } });
            }
          }
        }
        conn.close();
      })().catch(() => {});
    }
  })().catch(() => {});
  let open = true;
  return {
    commands,
    calls,
    close: () => {
      if (open) listener.close();
      open = false;
    },
  };
}

Deno.test("QEMU: argv carries the description (control socket, agent port, vsock, shares)", () => {
  const q = new QemuHypervisor({ binary: "/usr/bin/qemu-system-x86_64", accel: "tcg" });
  const a = q.argv(vm("/run/x", {
    vsockCid: 7,
    nics: [{ tap: "tap0", mac: "02:00:00:00:00:01" }],
    shares: [{ socket: "/run/x/fs.sock", tag: "kuasar" }],
  }));
  assert.equal(a[0], "/usr/bin/qemu-system-x86_64");
  assert.ok(a.includes("unix:/run/x/qmp.sock,server=on,wait=off"));
  assert.ok(a.includes("socket,id=agent,path=/run/x/agent.sock,server=on,wait=off"));
  assert.ok(a.includes("vhost-vsock-pci,id=vsock0,guest-cid=7"));
  assert.ok(a.includes("tap,id=net0,ifname=tap0,script=no,downscript=no"));
  assert.ok(a.includes("vhost-user-fs-pci,chardev=fs0,tag=kuasar"));
  assert.ok(a.includes("q35,accel=tcg"));
  assert.deepEqual(q.capabilities, {
    virtiofs: true,
    diskHotplug: true,
    nicHotplug: true,
    resize: true,
    serialPorts: true,
  });
});

Deno.test("QEMU: the agent over vsock first when the VM has it, the serial socket always", () => {
  const q = new QemuHypervisor({ binary: "qemu", accel: "kvm" });
  assert.deepEqual(q.agentAddresses(vm("/r"), 1024), [{
    transport: "unix",
    path: "/r/agent.sock",
  }]);
  assert.deepEqual(q.agentAddresses(vm("/r", { vsockCid: 9 }), 1024), [
    { transport: "vsock", cid: 9, port: 1024 },
    { transport: "unix", path: "/r/agent.sock" },
  ]);
});

Deno.test("QEMU: boot waits for QMP (capabilities first), stop is QMP quit", async () => {
  const dir = await Deno.makeTempDir();
  const q = new QemuHypervisor({ binary: "qemu", accel: "tcg" });
  const d = vm(dir);
  // The socket appears late, as QEMU creates it once started.
  let fake: ReturnType<typeof fakeQmp> | undefined;
  setTimeout(() => (fake = fakeQmp(d.controlSocket)), 100);
  try {
    await q.boot(d, performance.now() + 5000);
    await q.requestStop(d);
    assert.deepEqual(fake?.commands, ["qmp_capabilities", "qmp_capabilities", "quit"]);
    // No QEMU there (it is gone): stopping is not an error, booting is.
    fake?.close();
    await q.requestStop(vm(join(dir, "none")));
    await assert.rejects(q.boot(vm(join(dir, "none")), performance.now() + 200));
  } finally {
    fake?.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("QEMU: disks hot-plug into free root ports with their serial; unplug waits for the guest", async () => {
  const dir = await Deno.makeTempDir();
  const q = new QemuHypervisor({ binary: "qemu", accel: "tcg" });
  const d = vm(dir, { diskSlots: 2 });
  const ports = q.argv(d).filter((a) => a.startsWith("pcie-root-port"));
  assert.deepEqual(ports, [
    "pcie-root-port,id=hp0,bus=pcie.0,chassis=1",
    "pcie-root-port,id=hp1,bus=pcie.0,chassis=2",
  ]);
  const fake = fakeQmp(d.controlSocket);
  try {
    const image = join(dir, "disk.img");
    await Deno.writeFile(image, new Uint8Array(4096));
    await q.attachDisk(d, {
      id: "kdisk0",
      path: image,
      readOnly: true,
      serial: "kuasar-0",
      slot: 1,
    });
    await q.detachDisk(d, { id: "kdisk0" });
    const args = fake.calls.filter((c) => c.execute !== "qmp_capabilities");
    assert.deepEqual(args, [
      {
        execute: "blockdev-add",
        arguments: {
          "node-name": "kdisk0",
          driver: "raw",
          "read-only": true,
          file: { driver: "file", filename: image },
        },
      },
      {
        execute: "device_add",
        arguments: {
          driver: "virtio-blk-pci",
          id: "kdisk0",
          drive: "kdisk0",
          bus: "hp1",
          serial: "kuasar-0",
        },
      },
      { execute: "device_del", arguments: { id: "kdisk0" } },
      { execute: "blockdev-del", arguments: { "node-name": "kdisk0" } },
    ]);
  } finally {
    fake.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("QEMU: a disk whose device is gone already (unplugged while the daemon was down) still has its blockdev deleted", async () => {
  const dir = await Deno.makeTempDir();
  const q = new QemuHypervisor({ binary: "qemu", accel: "tcg" });
  const d = vm(dir, { diskSlots: 1 });
  const fake = fakeQmp(d.controlSocket, {}, {
    device_del: { class: "DeviceNotFound", desc: "Device 'kdisk0' not found" },
  });
  try {
    await q.detachDisk(d, { id: "kdisk0" });
    assert.deepEqual(fake.commands.filter((c) => c !== "qmp_capabilities"), [
      "device_del",
      "blockdev-del",
    ]);
  } finally {
    fake.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("QEMU: a NIC hot-plugs as a tap netdev and a virtio-net in the slot after the disks'", async () => {
  const dir = await Deno.makeTempDir();
  const q = new QemuHypervisor({ binary: "qemu", accel: "tcg" });
  const d = vm(dir, { diskSlots: 2, nicSlots: 2 });
  assert.equal(q.argv(d).filter((a) => a.startsWith("pcie-root-port")).length, 4);
  const fake = fakeQmp(d.controlSocket);
  try {
    await q.attachNic(d, { tap: "tap1_kuasar", mac: "02:00:00:00:00:02", queues: 2, slot: 1 });
    assert.deepEqual(fake.calls.filter((c) => c.execute !== "qmp_capabilities"), [
      {
        execute: "netdev_add",
        arguments: {
          type: "tap",
          id: "hnet1",
          ifname: "tap1_kuasar",
          script: "no",
          downscript: "no",
          queues: 2,
        },
      },
      {
        execute: "device_add",
        arguments: {
          driver: "virtio-net-pci",
          id: "hnic1",
          netdev: "hnet1",
          mac: "02:00:00:00:00:02",
          bus: "hp3",
          mq: true,
        },
      },
    ]);
  } finally {
    fake.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("QEMU: resize plugs the CPUs QEMU lists as free and one DIMM for the missing memory", async () => {
  const dir = await Deno.makeTempDir();
  const q = new QemuHypervisor({ binary: "qemu", accel: "tcg" });
  const d = vm(dir, { vcpus: 1, memoryMiB: 512, maxVcpus: 4, maxMemoryMiB: 4096, memorySlots: 8 });
  const argv = q.argv(d);
  assert.ok(argv.includes("1,maxcpus=4"));
  assert.ok(argv.includes("512M,slots=8,maxmem=4096M"));
  const cpu = (socket: number, plugged: boolean) => ({
    type: "max-x86_64-cpu",
    "vcpus-count": 1,
    props: { "socket-id": socket, "core-id": 0, "thread-id": 0 },
    ...(plugged ? { "qom-path": `/machine/unattached/device[${socket}]` } : {}),
  });
  // As QEMU 7.2 lists them: the last socket first.
  const fake = fakeQmp(d.controlSocket, {
    "query-hotpluggable-cpus": [cpu(3, false), cpu(2, false), cpu(1, false), cpu(0, true)],
    "query-memory-size-summary": { "base-memory": 512 * 1048576, "plugged-memory": 0 },
    "query-memory-devices": [],
  });
  try {
    assert.deepEqual(await q.resize(d, { vcpus: 3, memoryMiB: 1000 }), {
      vcpus: 3,
      memoryMiB: 1024,
    });
    const plugs = fake.calls.filter((c) =>
      ["device_add", "object-add"].includes(c.execute as string)
    );
    assert.deepEqual(plugs.map((c) => c.arguments), [
      { driver: "max-x86_64-cpu", id: "hcpu-1-0-0", "socket-id": 1, "core-id": 0, "thread-id": 0 },
      { driver: "max-x86_64-cpu", id: "hcpu-2-0-0", "socket-id": 2, "core-id": 0, "thread-id": 0 },
      { "qom-type": "memory-backend-memfd", id: "hmem0", size: 512 * 1048576, share: true },
      { driver: "pc-dimm", id: "dimm0", memdev: "hmem0" },
    ]);
  } finally {
    fake.close();
    await Deno.remove(dir, { recursive: true });
  }
});
