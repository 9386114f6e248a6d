/**
 * The microVM foundation on real QEMU (TCG here: KVM is not usable on these
 * machines, and the probe says why): the guest image from
 * `deno task guest-image` boots, its /init loads the drivers and execs the
 * agent as PID 1, and the agent answers Kuasar's SandboxService.Check over
 * the virtio-serial channel (no vhost-vsock here); QMP reports the VM
 * running, hot-plugs a disk the guest reads and unplugs it, and ends the VM.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { TtrpcClient } from "../../src/adapters/ttrpc/client.ts";
import { unaryClient } from "../../src/adapters/ttrpc/typed.ts";
import { hotplugPort, qemuArgv } from "../../src/adapters/hypervisor/qemu/qemu_command.ts";
import { kvmUsable } from "../../src/adapters/hypervisor/kvm.ts";
import { vhostVsockPresent } from "../../src/adapters/doctor/probes.ts";
import { QmpClient } from "../../src/adapters/hypervisor/qmp.ts";
import { SandboxServiceDefinition } from "../../src/gen/kuasar/sandbox.ts";
import { GUEST_IMAGE, qemuOnly, skipUnless, vmUnavailable } from "../support/env.ts";

const skip = skipUnless(
  qemuOnly("booting from the QEMU argv") ?? vmUnavailable(),
  "QEMU microVM boot",
);

async function waitFor(file: string, needle: string, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let text = "";
  while (Date.now() < deadline) {
    text = await Deno.readTextFile(file).catch(() => "");
    if (text.includes(needle)) return text;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`"${needle}" did not appear in ${file} within ${timeoutMs} ms:\n${text}`);
}

Deno.test({
  name: "qemu: the guest image boots, the agent (PID 1) answers Check over virtio-serial",
  ...skip,
  async fn() {
    const kvm = kvmUsable();
    if (!kvm.usable) console.log(`KVM not used: ${kvm.why}; booting with TCG`);
    console.log(`vhost-vsock: ${vhostVsockPresent() ? "present" : "absent (virtio-serial only)"}`);
    const dir = await Deno.makeTempDir({ prefix: "k-vm-" });
    const spec = {
      name: "kuasar-test",
      binary: "qemu-system-x86_64",
      kernel: join(GUEST_IMAGE, "vmlinuz"),
      initrd: join(GUEST_IMAGE, "initramfs.img"),
      memoryMiB: 1024,
      vcpus: 1,
      accel: kvm.usable ? "kvm" as const : "tcg" as const,
      qmpSocket: join(dir, "qmp.sock"),
      consoleLog: join(dir, "console.log"),
      agentSocket: join(dir, "agent.sock"),
      hotplugPorts: 1,
    };
    const argv = qemuArgv(spec);
    const t0 = performance.now();
    const qemu = new Deno.Command(argv[0], {
      args: argv.slice(1),
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const stderr = new Response(qemu.stderr).text();
    let qmp: QmpClient | undefined;
    try {
      qmp = await QmpClient.connect(spec.qmpSocket);
      assert.equal(await qmp.status(), "running");
      const guestLog = await waitFor(spec.consoleLog, "kuasar-agent ready", 60_000);
      const ready = performance.now() - t0;
      assert.match(guestLog, /kuasar-init: [\d.]+s, starting the agent/);
      assert.match(guestLog, /"pid":1\b/, "the agent runs as PID 1");
      // Both channels: the agent listens on vsock 1024 (the guest has the vsock transport
      // even without a host device) and serves the virtio-serial port, used below.
      assert.match(guestLog, /"vsock":true/, "the agent listens on vsock");
      assert.match(guestLog, /"port":"\/dev\/vport\d+p\d+"/, "the agent found its serial port");
      const agent = new TtrpcClient(
        await Deno.connect({ transport: "unix", path: spec.agentSocket }),
      );
      try {
        const sandbox = unaryClient(agent, SandboxServiceDefinition);
        await sandbox.check({ service: "" }, { timeoutMs: 10_000 });
        // QMP hot-plug: a disk image appears in the running guest as a virtio-blk disk with
        // its content, and goes again once the guest has released it (DEVICE_DELETED).
        const disk = join(dir, "disk.img");
        const content = new Uint8Array(1 << 20);
        content.set(new TextEncoder().encode("kuasar-hotplug-ok"));
        await Deno.writeFile(disk, content);
        const sh = async (command: string) =>
          (await sandbox.execVMProcess({ command, stdin: new Uint8Array() })).out;
        await qmp.plug({
          add: {
            execute: "blockdev-add",
            arguments: {
              "node-name": "disk0",
              driver: "raw",
              "read-only": true,
              file: { driver: "file", filename: disk },
            },
          },
          undo: { execute: "blockdev-del", arguments: { "node-name": "disk0" } },
        }, { driver: "virtio-blk-pci", id: "disk0", drive: "disk0", bus: hotplugPort(0) });
        let head = "";
        for (let i = 0; i < 100 && !head.startsWith("kuasar-hotplug-ok"); i++) {
          head = await sh("head -c 17 /dev/vda 2>/dev/null || true");
          if (!head) await new Promise((r) => setTimeout(r, 100));
        }
        assert.equal(head, "kuasar-hotplug-ok", "the hot-plugged disk shows up in the guest");
        await qmp.removeDisk("disk0");
        assert.equal(await sh("test -e /sys/block/vda && echo present || echo gone"), "gone\n");
      } finally {
        agent.close();
      }
      const uptime = /kuasar-init: ([\d.]+)s/.exec(guestLog)?.[1];
      const agentStart = /"sinceExecMs":(\d+)/.exec(guestLog)?.[1];
      console.log(
        `boot (${spec.accel}): agent ready ${Math.round(ready)} ms after spawn; ` +
          `guest uptime at /init ${uptime} s; agent up ${agentStart} ms after its exec`,
      );
      await qmp.execute("quit").catch(() => {}); // QEMU may close before it answers
      const st = await qemu.status;
      assert.ok(st.success || st.signal === null, `qemu exit ${st.code}`);
    } catch (e) {
      console.error(await Deno.readTextFile(spec.consoleLog).catch(() => ""));
      throw e;
    } finally {
      qmp?.close();
      try {
        qemu.kill("SIGKILL");
      } catch { /* gone */ }
      await qemu.status;
      await stderr;
      await Deno.remove(dir, { recursive: true });
    }
  },
});
