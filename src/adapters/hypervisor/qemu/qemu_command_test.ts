import assert from "node:assert/strict";
import { qemuArgv, type QemuVmSpec } from "./qemu_command.ts";
import { kvmUsable } from "../kvm.ts";

const base: QemuVmSpec = {
  name: "pod1",
  binary: "qemu-system-x86_64",
  kernel: "/g/vmlinuz",
  initrd: "/g/initramfs.img",
  memoryMiB: 512,
  vcpus: 2,
  accel: "tcg",
  qmpSocket: "/p/qmp.sock",
  consoleLog: "/p/console.log",
};

function after(argv: string[], flag: string): string[] {
  return argv.flatMap((a, i) => (a === flag ? [argv[i + 1]] : []));
}

Deno.test("qemuArgv: machine, accel, memory, kernel, console and QMP as separate argv entries", () => {
  const a = qemuArgv(base);
  assert.equal(a[0], "qemu-system-x86_64");
  assert.deepEqual(after(a, "-machine"), ["q35,accel=tcg"]);
  assert.deepEqual(after(a, "-cpu"), ["max"]);
  assert.deepEqual(after(a, "-m"), ["512M"]);
  assert.deepEqual(after(a, "-smp"), ["2"]);
  assert.deepEqual(after(a, "-kernel"), ["/g/vmlinuz"]);
  assert.deepEqual(after(a, "-initrd"), ["/g/initramfs.img"]);
  assert.match(after(a, "-append")[0], /^console=ttyS0 /);
  assert.deepEqual(after(a, "-serial"), ["file:/p/console.log"]);
  assert.deepEqual(after(a, "-qmp"), ["unix:/p/qmp.sock,server=on,wait=off"]);
  assert.ok(a.includes("-no-reboot") && a.includes("-nodefaults"));
  assert.ok(!a.some((x) => x.includes("vsock") || x.includes("virtserialport")));
  assert.deepEqual(after(qemuArgv({ ...base, accel: "kvm" }), "-cpu"), ["host"]);
});

Deno.test("qemuArgv: the agent's channels (virtio-serial port agent.0, vsock) and virtiofs shares", () => {
  const a = qemuArgv({
    ...base,
    agentSocket: "/p/agent.sock",
    vsockCid: 7,
    virtiofs: [{ socket: "/p/fs.sock", tag: "kuasar" }],
  });
  const devices = after(a, "-device");
  assert.ok(devices.includes("virtserialport,bus=vser0.0,chardev=agent,name=agent.0"));
  assert.ok(devices.includes("vhost-vsock-pci,id=vsock0,guest-cid=7"));
  assert.ok(devices.includes("vhost-user-fs-pci,chardev=fs0,tag=kuasar"));
  assert.ok(after(a, "-chardev").includes("socket,id=agent,path=/p/agent.sock,server=on,wait=off"));
  // virtiofs needs shared guest memory
  assert.ok(after(a, "-object").includes("memory-backend-memfd,id=mem,size=512M,share=on"));
});

Deno.test("kvmUsable: no vmx/svm flag means no KVM, whatever /dev/kvm says", () => {
  const r = kvmUsable("processor : 0\nflags : fpu vme de pse tsc msr sse sse2\n");
  assert.equal(r.usable, false);
  assert.match(r.why, /vmx\/svm|\/dev\/kvm/);
});

Deno.test("qemuArgv: a multi-queue NIC gets its queues and a vector per queue pair", () => {
  const a = qemuArgv({ ...base, nics: [{ tap: "t0", mac: "02:00:00:00:00:01", queues: 4 }] });
  assert.ok(a.includes("tap,id=net0,ifname=t0,script=no,downscript=no,queues=4"));
  assert.ok(a.includes("virtio-net-pci,netdev=net0,mac=02:00:00:00:00:01,mq=on,vectors=10"));
  const one = qemuArgv({ ...base, nics: [{ tap: "t0", mac: "02:00:00:00:00:01", queues: 1 }] });
  assert.ok(one.includes("virtio-net-pci,netdev=net0,mac=02:00:00:00:00:01"));
});

Deno.test("qemuArgv: a template's RAM is a shared file, filled whole; a clone maps it privately and waits for its state", () => {
  const tpl = qemuArgv({ ...base, memoryFile: { path: "/t/memory", shared: true } });
  assert.deepEqual(after(tpl, "-machine"), ["q35,accel=tcg,memory-backend=mem"]);
  assert.deepEqual(after(tpl, "-object"), [
    "memory-backend-file,id=mem,size=512M,mem-path=/t/memory,share=on,prealloc=on",
  ]);
  assert.ok(!tpl.includes("-incoming"));
  const clone = qemuArgv({
    ...base,
    memoryFile: { path: "/t/memory", shared: false },
    incoming: true,
  });
  assert.deepEqual(after(clone, "-object"), [
    "memory-backend-file,id=mem,size=512M,mem-path=/t/memory,share=off",
  ]);
  assert.deepEqual(after(clone, "-incoming"), ["defer"]);
  // virtiofs needs the guest's memory shared with virtiofsd: not with a template's.
  assert.throws(() =>
    qemuArgv({
      ...base,
      memoryFile: { path: "/t/memory", shared: false },
      virtiofs: [{ socket: "/p/fs.sock", tag: "kuasar" }],
    })
  );
});
