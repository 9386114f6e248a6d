/**
 * VM templates (`[hypervisor] template = true`) on real QEMU: the sandboxer boots a template VM
 * once and saves it; pods' VMs are restored from it, each its own guest (boot id, random
 * output, hostname, clock, NICs) running containers; a template whose saved state is broken
 * makes the next pod boot instead, and is built again.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  mkfifo,
  readFifo,
  startVmmDaemon,
  type TestDaemon,
  withDaemon,
} from "../support/daemon.ts";
import { qemuOnly, skipUnless, TEST_VMM, vmUnavailable } from "../support/env.ts";
import { blockToolsMissing } from "../support/block.ts";
import { assertShutdownLeavesNothing, leftovers } from "../support/leaks.ts";
import { createContainer, runToExit, startPod, type TestPod } from "../support/pod.ts";
import { restored, templateBuilt } from "../support/vm_template.ts";

const MAIN = fileURLToPath(new URL("../../src/main.ts", import.meta.url));

/** `kuasar ctl exec` of a shell script in the pod's guest: its output. */
async function guestSh(d: TestDaemon, pod: string, script: string): Promise<string> {
  const r = await new Deno.Command(Deno.execPath(), {
    // ctl exec hands the guest's shell one command line (Kuasar's ExecVMProcess).
    args: ["run", "-A", MAIN, "ctl", "-k", "vmm", "-l", d.listen, "-d", d.dir, "exec", pod, "--"]
      .concat(script),
    stdin: "null",
    signal: AbortSignal.timeout(120_000),
  }).output();
  const td = new TextDecoder();
  assert.equal(r.code, 0, td.decode(r.stderr));
  return td.decode(r.stdout);
}

/** The pid of a process whose command line has `needle`, waited for. */
async function processWith(needle: string, timeoutMs: number): Promise<number> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    for (const e of await Array.fromAsync(Deno.readDir("/proc"))) {
      if (!/^\d+$/.test(e.name)) continue;
      const cmd = await Deno.readTextFile(`/proc/${e.name}/cmdline`).catch(() => "");
      if (cmd.includes(needle)) return Number(e.name);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`no process with ${needle} in its command line`);
}

async function waitGone(pid: number, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (await Deno.stat(`/proc/${pid}`).then(() => true, () => false)) {
    if (Date.now() > end) throw new Error(`process ${pid} still runs`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function ip(...args: string[]): Promise<void> {
  const r = await new Deno.Command("ip", { args, stderr: "piped" }).output();
  if (!r.success) throw new Error(`ip ${args.join(" ")}: ${new TextDecoder().decode(r.stderr)}`);
}

/** What a container in `pod` running `script` (to exit 0) writes to its stdout, whole. */
async function containerOutput(d: TestDaemon, pod: TestPod, script: string): Promise<string> {
  const out = join(d.base, `out-${crypto.randomUUID().slice(0, 8)}`);
  await mkfifo(out);
  const text = readFifo(out);
  const c = await createContainer(d, pod, { args: ["sh", "-c", script], stdout: out });
  assert.equal(await runToExit(pod, c.id), 0);
  return (await text.text).trim();
}

/** What tells a guest apart: boot id, random bytes, hostname, clock (s), its IPv4 addresses. */
const PROBE = "cat /proc/sys/kernel/random/boot_id; head -c 32 /dev/urandom | od -An -tx1" +
  " | tr -d ' \\n'; echo; hostname; date +%s; ip -o -4 addr show | grep -v ' lo ' || true";

/**
 * A test of templates on real QEMU: a sandboxer with `template = true` (bundles on disks; its
 * templates on tmpfs, as an operator would put them: the clones map the template's RAM from
 * there) and the `extra` keys of its [hypervisor] table, and a netns (`ns`, at `netns`) whose
 * eth0 has `address`, for a pod to take.
 */
function templateTest(
  name: string,
  address: string,
  extra: string[],
  body: (d: TestDaemon, o: { netns: string; ns: string; templates: string }) => Promise<void>,
): void {
  Deno.test({
    name,
    ...skipUnless(
      Deno.uid() !== 0
        ? "needs root"
        : vmUnavailable() ?? qemuOnly("VM templates") ?? blockToolsMissing(),
      `vmm sandboxer on ${TEST_VMM}, e2fsprogs`,
    ),
    sanitizeOps: false,
    sanitizeResources: false,
    async fn() {
      const images = await Deno.makeTempDir({ prefix: "k-bd-" });
      const templates = await Deno.makeTempDir({ dir: "/dev/shm", prefix: "k-tpl-" });
      const tag = crypto.randomUUID().slice(0, 6);
      const ns = `k-tpl-${tag}`;
      await ip("netns", "add", ns);
      try {
        await ip("link", "add", `vt${tag}`, "type", "veth", "peer", "name", "eth0", "netns", ns);
        await ip("-n", ns, "addr", "add", address, "dev", "eth0");
        await ip("-n", ns, "link", "set", "eth0", "up");
        await withDaemon(
          (d) => body(d, { netns: `/var/run/netns/${ns}`, ns, templates }),
          () =>
            startVmmDaemon([], [], [
              'share_fs = "None"',
              `bundle_disk_dir = "${images}"`,
              "use_vsock = false",
              "template = true",
              `template_dir = "${templates}"`,
              ...extra,
            ]),
        );
      } finally {
        await ip("netns", "del", ns).catch(() => {});
        await Deno.remove(images, { recursive: true }).catch(() => {});
        await Deno.remove(templates, { recursive: true }).catch(() => {});
      }
    },
  });
}

templateTest(
  "vmm: template = true restores pods' VMs from one saved VM; each has its own boot id, randomness, hostname, clock and NIC; a broken template means a boot",
  "10.242.0.2/24",
  [],
  async (d, { netns, templates }) => {
    // A sandboxer killed while it builds the template: its template VM holds nothing of
    // it (its listening socket), and the next one ends that VM and builds again.
    const building = await processWith(templates, 60_000);
    await d.kill9();
    await d.spawn();
    await waitGone(building, 30_000);
    const tpl = await templateBuilt(templates, 240_000);
    const meta = JSON.parse(await Deno.readTextFile(join(tpl, "template.json")));
    assert.ok(meta.stateBytes < 4 << 20, `device state only: ${meta.stateBytes} bytes`);
    assert.equal((await Deno.stat(join(tpl, "memory"))).mode! & 0o777, 0o600);
    // `kuasar doctor` on the same config reports it.
    const doctor = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--unstable-vsock",
        MAIN,
        "doctor",
        "--json",
        "--kind",
        "vmm",
        "--config",
        join(d.base, "vmm.toml"),
      ],
      stdout: "piped",
      stderr: "null",
    }).output();
    const checks = JSON.parse(new TextDecoder().decode(doctor.stdout)).checks as {
      id: string;
      status: string;
      detail: string;
    }[];
    const built = checks.find((c) => c.id === "template.built");
    assert.equal(built?.status, "ok", JSON.stringify(built));
    assert.match(built.detail, new RegExp(`${tpl.split("/").at(-1)} \\(1 vCPU, 512 MiB`));
    assert.equal(checks.find((c) => c.id === "template.dir")?.status, "ok");

    const a = await startPod(d, { hostname: "tpl-a", netnsPath: netns });
    const b = await startPod(d, { hostname: "tpl-b" });
    assert.ok(restored(a.pid) && restored(b.pid), "both VMs restored, not booted");
    const [outA, outB] = [await guestSh(d, a.id, PROBE), await guestSh(d, b.id, PROBE)];
    const [bootA, randA, hostA, dateA, ...addrA] = outA.trim().split("\n");
    const [bootB, randB, hostB, dateB] = outB.trim().split("\n");
    // Reseeded from the host before the boot id was drawn (the guest's generator may also
    // drift apart by itself, from RDRAND or interrupt timing, but not on every CPU).
    for (const pod of [a, b]) {
      assert.match(
        await d.logs(),
        new RegExp(`"vm reseeded".*"sandbox":"${pod.id}".*generator reseeded`),
      );
    }
    assert.notEqual(bootA, bootB, "each clone draws its own boot id");
    assert.match(bootA, /^[0-9a-f-]{36}$/);
    assert.notEqual(randA, randB, "each clone's kernel generator is its own");
    assert.equal(randA.length, 64);
    assert.deepEqual([hostA, hostB], ["tpl-a", "tpl-b"]);
    for (const t of [dateA, dateB]) {
      assert.ok(Math.abs(Number(t) - Date.now() / 1000) < 30, `guest clock ${t} is the host's`);
    }
    assert.match(addrA.join("\n"), /10\.242\.0\.2\/24/, "the pod's NIC, hot-plugged");
    // A container in a restored VM (its bundle on a disk), with its output whole.
    assert.equal(
      await containerOutput(d, a, "echo from-a-clone; cat /etc/hostname"),
      "from-a-clone\ntpl-a",
    );

    // A restarted sandboxer finds restored VMs as it finds booted ones.
    await d.kill9();
    await d.spawn();
    assert.equal((await d.controller.status(a.id)).state, "SANDBOX_READY");
    assert.equal(
      (await guestSh(d, a.id, "hostname; cat /proc/sys/kernel/random/boot_id")).trim(),
      `tpl-a\n${bootA}`,
    );

    // A broken saved state: the next pod boots, and the template is built again.
    await Deno.writeFile(join(tpl, "state"), new Uint8Array(4096));
    const c = await startPod(d, { hostname: "tpl-c" });
    assert.ok(!restored(c.pid), "a pod whose restore failed boots");
    assert.equal((await guestSh(d, c.id, "hostname")).trim(), "tpl-c");
    assert.match(await d.logs(), /vm restore from template failed/);
    const again = await templateBuilt(templates, 240_000);
    const d2 = await startPod(d, { hostname: "tpl-d" });
    assert.ok(restored(d2.pid), `restored from the rebuilt template ${again}`);
    const bootD = (await guestSh(d, d2.id, "cat /proc/sys/kernel/random/boot_id")).trim();
    assert.ok(![bootA, bootB].includes(bootD));
    await assertShutdownLeavesNothing(d, [a.id, b.id, c.id, d2.id]);
  },
);

/** The "vm template built" log lines of the sandboxer, with the shape of each. */
async function templatesBuilt(d: TestDaemon): Promise<{ key: string; memoryMiB: number }[]> {
  return (await d.logs()).split("\n").filter((l) => l.includes('"vm template built"'))
    .map((l) => JSON.parse(l));
}

/** Waits until the sandboxer has built a template of `memoryMiB`: its key. */
async function shapeBuilt(d: TestDaemon, memoryMiB: number, timeoutMs: number): Promise<string> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    const t = (await templatesBuilt(d)).find((l) => l.memoryMiB === memoryMiB);
    if (t) return t.key;
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`no template of ${memoryMiB} MiB built after ${timeoutMs} ms`);
}

/** A pod whose memory limit makes its VM `limitMiB` + the guest's 256 MiB. */
function limited(limitMiB: number) {
  return { resources: { memoryLimitInBytes: limitMiB * 1024 * 1024 } };
}

templateTest(
  "vmm: template_shapes gives pods with limits templates of their own shape, built once two have booted and filled whole; the least recently used goes, the config's stays",
  "10.244.0.2/24",
  ["template_shapes = 2"],
  async (d, { templates }) => {
    const config = (await templateBuilt(templates, 240_000)).split("/").at(-1)!;
    // Pods of another shape (512 MiB of limit: a 768 MiB VM) boot; once two have, its template
    // is built (a shape seen once builds none).
    const a = await startPod(d, { hostname: "shape-a", ...limited(512) });
    assert.ok(!restored(a.pid), "no template of its shape yet: it boots");
    await new Promise((r) => setTimeout(r, 2000));
    assert.deepEqual((await templatesBuilt(d)).map((t) => t.memoryMiB), [512]);
    const a2 = await startPod(d, { hostname: "shape-a2", ...limited(512) });
    assert.ok(!restored(a2.pid));
    const k768 = await shapeBuilt(d, 768, 240_000);
    // Its RAM file is filled whole: what clones touch never grows it (on tmpfs, a fault on a
    // hole allocates the page in the file, copy-on-write mapping or not).
    const usedKiB = async () => {
      const r = await new Deno.Command("du", { args: ["-sk", join(templates, k768, "memory")] })
        .output();
      return Number(new TextDecoder().decode(r.stdout).split(/\s/)[0]);
    };
    const before = await usedKiB();
    assert.ok(before >= 768 * 1024, `${before} KiB`);
    const b = await startPod(d, { hostname: "shape-b", ...limited(512) });
    assert.ok(restored(b.pid), "the next one of that shape is a clone");
    const memTotal = async (pod: string) =>
      Number(/MemTotal:\s+(\d+)/.exec(await guestSh(d, pod, "cat /proc/meminfo"))?.[1]);
    assert.ok(await memTotal(b.id) > 600 * 1024, "the clone has its shape's memory");
    assert.equal(await containerOutput(d, b, "echo in-shape-b; hostname"), "in-shape-b\nshape-b");
    await guestSh(d, b.id, "dd if=/dev/zero of=/tmp/fill bs=1048576 count=100 2>&1; rm /tmp/fill");
    assert.equal(await usedKiB(), before, "the clone's writes are its own");
    const plain = await startPod(d, { hostname: "shape-plain" });
    assert.ok(restored(plain.pid), "the config's shape keeps its template");
    assert.ok(await memTotal(plain.id) < 600 * 1024);
    // A third shape: with room for two, the least recently used of the others goes (768), not
    // the config's; the clone of it keeps running.
    const c = await startPod(d, { hostname: "shape-c", ...limited(768) });
    const c2 = await startPod(d, { hostname: "shape-c2", ...limited(768) });
    assert.ok(!restored(c.pid) && !restored(c2.pid));
    const k1024 = await shapeBuilt(d, 1024, 240_000);
    const left = (await Array.fromAsync(Deno.readDir(templates))).map((e) => e.name).sort();
    assert.deepEqual(left, [config, k1024].sort(), `${k768} went`);
    assert.match(await d.logs(), new RegExp(`"vm template removed.*${k768}`));
    assert.equal((await guestSh(d, b.id, "hostname")).trim(), "shape-b");
    const e = await startPod(d, { hostname: "shape-e", ...limited(768) });
    assert.ok(restored(e.pid), "a clone of the third shape");
    await assertShutdownLeavesNothing(d, [a.id, a2.id, b.id, plain.id, c.id, c2.id, e.id]);
    // Templates turned off: at its next start, the sandboxer removes its own.
    await d.kill9();
    const toml = join(d.base, "vmm.toml");
    await Deno.writeTextFile(
      toml,
      (await Deno.readTextFile(toml)).replace("template = true", "template = false")
        .replace("template_shapes = 2", ""),
    );
    await d.spawn();
    const end = Date.now() + 30_000;
    while ((await Array.fromAsync(Deno.readDir(templates))).length) {
      assert.ok(Date.now() < end, "templates left after they were turned off");
      await new Promise((r) => setTimeout(r, 250));
    }
    assert.match(await d.logs(), /"vm templates removed: templates are off".*"removed":2/);
  },
);

/** Pids of QEMUs made for the pool of the sandboxer at `dir` (taken by a pod or not). */
async function poolQemus(dir: string): Promise<number[]> {
  const out: number[] = [];
  for (const e of await Array.fromAsync(Deno.readDir("/proc"))) {
    if (!/^\d+$/.test(e.name)) continue;
    const cmd = await Deno.readTextFile(`/proc/${e.name}/cmdline`).catch(() => "");
    const argv0 = cmd.split("\0")[0];
    if (/(^|\/)qemu-system[^/]*$/.test(argv0) && cmd.includes(`${dir}/.vm-pool-`)) {
      out.push(Number(e.name));
    }
  }
  return out;
}

/** How many VMs the sandboxer has logged pooled (its log goes on across restarts). */
async function pooledSoFar(d: TestDaemon): Promise<number> {
  return (await d.logs()).split("\n").filter((l) => l.includes('"vm pooled"')).length;
}

/** Waits until the sandboxer has logged `n` VMs pooled. */
async function pooled(d: TestDaemon, n: number, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (await pooledSoFar(d) < n) {
    if (Date.now() > end) throw new Error(`not ${n} VMs pooled after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

templateTest(
  "vmm: template_pool keeps VMs restored and warmed ahead of pods; a pod takes one with its own hostname, NIC, cgroup, boot id and randomness; left pool VMs end with the daemon",
  "10.243.0.2/24",
  ["template_pool = 1"],
  async (d, { netns, ns, templates }) => {
    await templateBuilt(templates, 240_000);
    await pooled(d, 1, 300_000);
    const a = await startPod(d, {
      hostname: "pool-a",
      netnsPath: netns,
      cgroupParent: d.cgroupParent,
    });
    const readyA = (await d.logs()).split("\n").find((l) =>
      l.includes('"vm ready"') && l.includes(a.id)
    );
    assert.match(readyA ?? "", /"pooled":"[0-9a-f]{12}"/, "the pod took the pool's VM");
    assert.ok(restored(a.pid));
    // QEMU and its monitor are charged to the pod's cgroup, not the pool's.
    const cg = await Deno.readTextFile(`/proc/${a.pid}/cgroup`);
    assert.match(cg, new RegExp(a.id), cg);
    const [bootA, randA, hostA, dateA, ...addrA] = (await guestSh(d, a.id, PROBE)).trim()
      .split("\n");
    assert.equal(hostA, "pool-a");
    assert.ok(Math.abs(Number(dateA) - Date.now() / 1000) < 30, `guest clock ${dateA}`);
    assert.match(addrA.join("\n"), /10\.243\.0\.2\/24/, "the pod's NIC, moved into its netns");
    const taps = await new Deno.Command("ip", {
      args: ["-n", ns, "-o", "link", "show"],
      stdout: "piped",
    }).output();
    assert.match(new TextDecoder().decode(taps.stdout), /tap0_kuasar.*LOWER_UP/);
    // An interface the CNI adds after the start: its tap is made where the VM's QEMU runs (a
    // netns of its own) and moved into the pod's, before the next container runs.
    const late = `vl${crypto.randomUUID().slice(0, 6)}`;
    await ip("link", "add", late, "type", "veth", "peer", "name", "eth1", "netns", ns);
    await ip("addr", "add", "10.243.1.1/24", "dev", late);
    await ip("link", "set", late, "up");
    await ip("-n", ns, "addr", "add", "10.243.1.2/24", "dev", "eth1");
    await ip("-n", ns, "link", "set", "eth1", "up");
    // A container (its bundle on a disk), with its output whole.
    assert.equal(
      await containerOutput(d, a, "echo from-the-pool; cat /etc/hostname"),
      "from-the-pool\npool-a",
    );
    const links = new TextDecoder().decode(
      (await new Deno.Command("ip", { args: ["-n", ns, "-o", "link", "show"], stdout: "piped" })
        .output()).stdout,
    );
    assert.match(links, /tap1_kuasar.*LOWER_UP/, links);
    assert.match(await guestSh(d, a.id, "ping -c 1 -W 10 10.243.1.1"), / 0% packet loss/);

    // The pool made another: a second pod's VM is its own guest.
    await pooled(d, 2, 300_000);
    const b = await startPod(d, { hostname: "pool-b", cgroupParent: d.cgroupParent });
    const [bootB, randB, hostB] = (await guestSh(d, b.id, PROBE)).trim().split("\n");
    assert.equal(hostB, "pool-b");
    assert.notEqual(bootA, bootB, "each pool VM draws its own boot id");
    assert.notEqual(randA, randB, "each pool VM's kernel generator is its own");

    // A pool VM that dies while waiting is dropped, and the pool makes another by itself.
    await pooled(d, 3, 300_000);
    const [spare] = (await poolQemus(d.dir)).filter((p) => p !== a.pid && p !== b.pid);
    Deno.kill(spare, "SIGKILL");
    await waitGone(spare, 10_000);
    await pooled(d, 4, 300_000);
    const podC = await startPod(d, { hostname: "pool-c", cgroupParent: d.cgroupParent });
    assert.ok(restored(podC.pid) && podC.pid !== spare);
    assert.equal((await guestSh(d, podC.id, "hostname")).trim(), "pool-c");

    // A restarted sandboxer keeps the pods' VMs and ends the pool's own (made or being made).
    await pooled(d, 5, 300_000);
    const taken = [a.pid, b.pid, podC.pid];
    const left = (await poolQemus(d.dir)).filter((p) => !taken.includes(p));
    assert.ok(left.length > 0, "the pool makes its next VM");
    await d.kill9();
    const before = await pooledSoFar(d);
    await d.spawn();
    assert.equal((await d.controller.status(a.id)).state, "SANDBOX_READY");
    assert.equal(
      (await guestSh(d, a.id, "hostname; cat /proc/sys/kernel/random/boot_id")).trim(),
      `pool-a\n${bootA}`,
    );
    for (const p of left) await waitGone(p, 30_000);
    await ip("link", "del", late).catch(() => {});
    // The pods leave nothing, and the VMs the daemon keeps in its pool end with it.
    for (const id of [a.id, b.id, podC.id]) await d.controller.shutdown(id);
    await pooled(d, before + 1, 300_000);
    assert.ok((await poolQemus(d.dir)).length > 0);
    await d.stop();
    assert.deepEqual(await poolQemus(d.dir), []);
    assert.deepEqual(
      (await Array.fromAsync(Deno.readDir(d.dir))).filter((e) => e.name.startsWith(".vm-pool-")),
      [],
    );
    assert.deepEqual(await leftovers(d, [a.id, b.id, podC.id]), []);
  },
);
