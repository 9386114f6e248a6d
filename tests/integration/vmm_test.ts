/**
 * The vmm sandboxer's pods on real QEMU (TCG here): Start boots the guest
 * image and waits for the agent; killing QEMU makes Wait return; Stop ends
 * the VM; a SIGKILL of the sandboxer loses no VM; nothing is left after
 * Shutdown. Containers in VM pods are not implemented yet and say so.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { K8S_NS, taskClient, TestDaemon, withDaemon } from "../support/daemon.ts";
import { has, skipUnless } from "../support/env.ts";
import { leftovers } from "../support/leaks.ts";
import { createContainer, startPod } from "../support/pod.ts";
import { ensureBusyboxRootfs } from "../support/rootfs.ts";
import { socketPath } from "../../src/adapters/os/process_tokens.ts";
import { TtrpcClient } from "../../src/adapters/ttrpc/client.ts";
import { unaryClient } from "../../src/adapters/ttrpc/typed.ts";
import { SandboxServiceDefinition } from "../../src/gen/kuasar/sandbox.ts";

const IMAGE = Deno.env.get("KUASAR_GUEST_IMAGE") ?? "/var/lib/kuasar/guest";

function unavailable(): string | undefined {
  if (Deno.uid() !== 0) return "needs root";
  if (!has("qemu-system-x86_64")) return "qemu-system-x86_64 is not installed";
  try {
    Deno.statSync(join(IMAGE, "initramfs.img"));
  } catch {
    return `no guest image in ${IMAGE} (deno task guest-image builds it)`;
  }
  return undefined;
}

async function startVmm(): Promise<TestDaemon> {
  const base = await Deno.makeTempDir({ prefix: "k-" });
  const config = join(base, "vmm.toml");
  await Deno.writeTextFile(
    config,
    [
      "[sandbox]",
      'log_level = "debug"',
      "[hypervisor]",
      `kernel_path = "${IMAGE}/vmlinuz"`,
      `initrd_path = "${IMAGE}/initramfs.img"`,
      "memory_in_mb = 512",
      "vcpus = 1",
      "",
    ].join("\n"),
  );
  return await TestDaemon.start({ base, kind: "vmm", extraArgs: ["--config", config] });
}

/** A client of the pod's agent, on the socket the sandboxer gave QEMU's virtio-serial port. */
async function agentClient(d: TestDaemon, podId: string) {
  const path = await socketPath(join(d.dir, "s"), `vm@${podId}`, "agent");
  const client = new TtrpcClient(await Deno.connect({ transport: "unix", path }));
  return { client, svc: unaryClient(client, SandboxServiceDefinition) };
}

/** A container spec for runc in the guest: busybox, prints the kernel release, exits 42. */
function guestSpec() {
  return {
    ociVersion: "1.0.2",
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args: ["sh", "-c", "uname -r; echo in-container; exit 42"],
      env: ["PATH=/bin"],
      cwd: "/",
    },
    root: { path: "rootfs", readonly: false },
    hostname: "c1",
    mounts: [{ destination: "/proc", type: "proc", source: "proc" }],
    linux: {
      namespaces: [{ type: "pid" }, { type: "ipc" }, { type: "uts" }, { type: "mount" }],
    },
  };
}

async function copyTree(from: string, to: string): Promise<void> {
  const r = await new Deno.Command("cp", { args: ["-a", from, to] }).output();
  assert.ok(r.success, `cp -a ${from} ${to}`);
}

function qemuAlive(pid: number): boolean {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/cmdline`).includes("qemu-system");
  } catch {
    return false;
  }
}

Deno.test({
  name: "vmm: VM pods boot, crash, stop and survive a sandboxer SIGKILL; nothing is left",
  ...skipUnless(unavailable(), "vmm sandboxer on QEMU"),
  fn: () =>
    withDaemon(async (d) => {
      // A pod boots: its pid is QEMU's, its console shows the agent as PID 1.
      const a = {
        ...await startPod(d, { cgroupParent: d.cgroupParent, hostname: "vm-pod-a" }),
        hostname: "vm-pod-a",
      };
      assert.ok(qemuAlive(a.pid), "the pod's pid is a QEMU process");
      assert.equal((await d.controller.status(a.id)).state, "SANDBOX_READY");
      const guestLog = await Deno.readTextFile(join(d.dir, a.id, "console.log"));
      assert.match(guestLog, /kuasar-agent ready","pid":1/);
      // The agent's SandboxService, on the pod's virtio-serial channel: the VM runs its own
      // kernel, and Start's SetupSandbox gave it the pod's hostname.
      const agent = await agentClient(d, a.id);
      try {
        const hostRelease = Deno.osRelease();
        const uname =
          (await agent.svc.execVMProcess({ command: "uname -r", stdin: new Uint8Array() })).out;
        assert.match(uname, /cloud-amd64/);
        assert.notEqual(uname.trim(), hostRelease);
        const hostname =
          (await agent.svc.execVMProcess({ command: "hostname", stdin: new Uint8Array() })).out;
        assert.equal(hostname.trim(), a.hostname);
        await assert.rejects(
          agent.svc.execVMProcess({ command: "exit 4", stdin: new Uint8Array() }),
          /exited with 4/,
        );
        // The pod's shared directory (virtiofs), both ways.
        const shared = join(d.dir, a.id, "shared");
        await Deno.writeTextFile(join(shared, "from-host.txt"), "host-data");
        const seen = await agent.svc.execVMProcess({
          command:
            "cat /run/kuasar/shared/from-host.txt && echo vm-data > /run/kuasar/shared/from-vm.txt",
          stdin: new Uint8Array(),
        });
        assert.equal(seen.out, "host-data");
        assert.equal(await Deno.readTextFile(join(shared, "from-vm.txt")), "vm-data\n");
        // runc in the guest runs a container from a bundle in the shared directory, on the
        // guest's kernel. (--no-pivot: the guest's root is the initramfs, where pivot_root fails.)
        const bundle = join(shared, "b1");
        await Deno.mkdir(bundle);
        await copyTree(await ensureBusyboxRootfs(), join(bundle, "rootfs"));
        await Deno.writeTextFile(join(bundle, "config.json"), JSON.stringify(guestSpec()));
        const ran = await agent.svc.execVMProcess({
          command: "runc --root /run/runc run --no-pivot --bundle /run/kuasar/shared/b1 c1; " +
            "echo rc=$?",
          stdin: new Uint8Array(),
        });
        assert.equal(ran.out, `${uname.trim()}\nin-container\nrc=42\n`);
        await assert.rejects(
          agent.svc.setupSandbox({
            config: { typeUrl: "Other", value: new Uint8Array() },
            interfaces: [],
            routes: [],
          }),
          /not supported/,
        );
      } finally {
        agent.client.close();
      }
      // Containers are not there yet: a clear UNIMPLEMENTED.
      await assert.rejects(
        createContainer(d, a, { args: ["true"] }),
        /not implemented yet/,
      );

      // QEMU killed: Wait returns, the pod is NOTREADY.
      const waiting = d.controller.wait(a.id);
      Deno.kill(a.pid, "SIGKILL");
      const w = await waiting;
      assert.equal(w.exitStatus, 137);
      assert.equal((await d.controller.status(a.id)).state, "SANDBOX_NOTREADY");
      await d.controller.shutdown(a.id);

      // A second pod survives a SIGKILL of the sandboxer, then stops.
      const b = await startPod(d, { cgroupParent: d.cgroupParent });
      await d.kill9();
      await d.spawn();
      assert.equal((await d.controller.status(b.id)).state, "SANDBOX_READY");
      assert.equal((await d.controller.status(b.id)).pid, b.pid);
      assert.ok(qemuAlive(b.pid));
      const t = await taskClient(b.address);
      await assert.rejects(t.task.state({ id: "none", execId: "" }, K8S_NS), /not found/);
      t.close();
      await d.controller.stop(b.id, 10);
      assert.ok(!qemuAlive(b.pid), "Stop ended the VM");
      assert.equal((await d.controller.wait(b.id)).exitStatus, 0, "QEMU quit cleanly");
      await d.controller.shutdown(b.id);
      assert.deepEqual(await leftovers(d, [a.id, b.id], d.cgroupParent), []);
    }, startVmm),
});

Deno.test({
  name: "vmm: a pod's CNI interface is mirrored into the VM (tap + tc redirect) and its IP answers",
  ...skipUnless(unavailable(), "vmm sandboxer on QEMU"),
  async fn() {
    const tag = crypto.randomUUID().slice(0, 6);
    const ns = `kuasar-vm-${tag}`, hostIf = `vh${tag}`;
    const net = 10 + Math.floor(Math.random() * 240);
    const ip = async (...args: string[]) => {
      const r = await new Deno.Command("ip", { args, stderr: "piped" }).output();
      assert.ok(r.success, `ip ${args.join(" ")}: ${new TextDecoder().decode(r.stderr)}`);
    };
    // What a CNI bridge/ptp plugin leaves: eth0 with the pod IP and a default route.
    await ip("netns", "add", ns);
    const d = await startVmm();
    try {
      await ip("link", "add", hostIf, "type", "veth", "peer", "name", "eth0", "netns", ns);
      await ip("addr", "add", `10.233.${net}.1/24`, "dev", hostIf);
      await ip("link", "set", hostIf, "up");
      await ip("-n", ns, "addr", "add", `10.233.${net}.2/24`, "dev", "eth0");
      await ip("-n", ns, "link", "set", "eth0", "up");
      await ip("-n", ns, "link", "set", "lo", "up");
      await ip("-n", ns, "route", "add", "default", "via", `10.233.${net}.1`);

      const pod = await startPod(d, { netnsPath: `/var/run/netns/${ns}`, hostname: "vm-net" });
      const agent = await agentClient(d, pod.id);
      try {
        const exec = async (command: string) =>
          (await agent.svc.execVMProcess({ command, stdin: new Uint8Array() })).out;
        assert.match(await exec("ip addr show eth0"), new RegExp(`10\\.233\\.${net}\\.2/24`));
        assert.match(await exec("ip route"), new RegExp(`default via 10\\.233\\.${net}\\.1`));
        await exec(
          // httpd daemonizes: its stdio must not be the pipes ExecVMProcess waits on.
          "mkdir -p /tmp/www && echo vm-page > /tmp/www/index.html && " +
            "httpd -p 8080 -h /tmp/www </dev/null >/dev/null 2>&1",
        );
      } finally {
        agent.client.close();
      }
      let body = "";
      for (let i = 0; i < 100 && !body; i++) {
        body = await fetch(`http://10.233.${net}.2:8080/`, { signal: AbortSignal.timeout(2000) })
          .then((r) => r.text(), () => "");
        if (!body) await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(body, "vm-page\n", "the pod IP answers from the host, served inside the VM");
      await d.controller.shutdown(pod.id);
      assert.deepEqual(await leftovers(d, [pod.id], d.cgroupParent), []);
      const links = await new Deno.Command("ip", { args: ["-n", ns, "-o", "link"] }).output();
      assert.doesNotMatch(new TextDecoder().decode(links.stdout), /tap\d+_kuasar/, "taps removed");
    } catch (e) {
      console.error((await d.logs()).split("\n").slice(-40).join("\n"));
      throw e;
    } finally {
      await d.cleanup();
      await new Deno.Command("ip", { args: ["link", "del", hostIf] }).output();
      await new Deno.Command("ip", { args: ["netns", "del", ns] }).output();
    }
  },
});
