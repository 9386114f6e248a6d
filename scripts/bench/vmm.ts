/**
 * microVM pod start through the vmm sandboxer, up to its first container
 * running, split into phases, beside a
 * bare QEMU boot of the same kernel and initramfs to init (busybox as init,
 * powering off at once) in the same run; and the host-side memory of a VM
 * pod besides QEMU itself.
 *
 * @module
 */
import { join } from "node:path";
import { K8S_NS, taskClient, TestDaemon } from "../../tests/support/daemon.ts";
import { createContainer, startPod } from "../../tests/support/pod.ts";
import { qemuArgv } from "../../src/adapters/hypervisor/qemu/qemu_command.ts";
import { pssKiB } from "./pss.ts";

const IMAGE = Deno.env.get("KUASAR_GUEST_IMAGE") ?? "/var/lib/kuasar/guest";

/** One pod start, in milliseconds (and the guest's uptime at /init, in ms). */
export interface VmStart {
  readonly vmm: number;
  readonly guestInit: number;
  readonly agentReady: number;
  /** Controller Create + Start. */
  readonly pod: number;
  /** Task.Create + Task.Start of the first container (relayed to the agent, runc in the guest). */
  readonly container: number;
  /** Controller Create → first container running. */
  readonly total: number;
}

/** A bare boot: QEMU spawn → busybox as init powers off → QEMU exits. */
async function bareBoot(dir: string, i: number): Promise<number> {
  const argv = qemuArgv({
    name: `bare-${i}`,
    binary: "qemu-system-x86_64",
    kernel: join(IMAGE, "vmlinuz"),
    initrd: join(IMAGE, "initramfs.img"),
    kernelParams: "rdinit=/bin/busybox -- poweroff -f",
    memoryMiB: 512,
    vcpus: 1,
    accel: "tcg",
    qmpSocket: join(dir, `bare-${i}.qmp`),
    consoleLog: join(dir, `bare-${i}.log`),
  });
  const t0 = performance.now();
  const st = await new Deno.Command(argv[0], {
    args: argv.slice(1),
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).output();
  if (!st.success) throw new Error(`bare boot ${i} failed (${st.code})`);
  return performance.now() - t0;
}

/**
 * How pods' VMs are made: booted with the containers' files shared over virtiofs (the
 * default), booted with bundles on disks (`share_fs = "None"`), or restored from a template
 * (`template = true`, bundles on disks), or taken from a pool of VMs restored from it and
 * warmed by a throwaway container (`template_pool = 1`: each pod waits until the pool has one).
 */
export type VmPath = "virtiofs" | "disks" | "template" | "pool";

/** The "vm pooled" lines of the daemon's log: VMs the pool made, with how long each took. */
async function pooledLog(d: TestDaemon): Promise<{ ms: number }[]> {
  return (await d.logs()).split("\n").filter((l) => l.includes('"vm pooled"')).map((l) =>
    JSON.parse(l)
  );
}

/** Waits until the pool has made `n` VMs in all. */
async function untilPooled(d: TestDaemon, n: number): Promise<void> {
  const end = Date.now() + 300_000;
  while ((await pooledLog(d)).length < n) {
    if (Date.now() > end) throw new Error(`the pool made no VM number ${n}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/**
 * `n` VM pods made the `path` way, each with a bare boot after it when `bare`; PSS with all
 * pods running.
 */
export async function vmmBench(n: number, path: VmPath = "virtiofs", bare_ = true) {
  const base = await Deno.makeTempDir({ prefix: "k-" });
  const config = join(base, "vmm.toml");
  const disks = join(base, "bundle-disks");
  const templates = join(base, "templates");
  await Deno.writeTextFile(
    config,
    [
      "[hypervisor]",
      `kernel_path = "${IMAGE}/vmlinuz"`,
      `initrd_path = "${IMAGE}/initramfs.img"`,
      "memory_in_mb = 512",
      "vcpus = 1",
      'machine_accelerators = "tcg"',
      ...(path === "virtiofs" ? [] : ['share_fs = "None"', `bundle_disk_dir = "${disks}"`]),
      ...(path === "template" || path === "pool"
        ? ["use_vsock = false", "template = true", `template_dir = "${templates}"`]
        : []),
      ...(path === "pool" ? ["template_pool = 1"] : []),
      "",
    ].join("\n"),
  );
  const d = await TestDaemon.start({ base, kind: "vmm", extraArgs: ["--config", config] });
  const ours: VmStart[] = [], bare: number[] = [];
  let template: { bootMs: number; saveMs: number; stateBytes: number } | undefined;
  try {
    if (path === "template" || path === "pool") {
      template = await templateBuilt(templates, 300_000);
    }
    // Both of the daemon's idle memory reclaims (2 s and 8 s after the last call) have run.
    const settle = () => new Promise((r) => setTimeout(r, 11_000));
    await settle();
    const idleDaemon = await pssKiB(d.pid);
    const pods: { id: string; pid: number }[] = [];
    for (let i = 0; i < n; i++) {
      // The pool has its VM ready (made after the last pod took the one before).
      if (path === "pool") await untilPooled(d, i + 1);
      const t0 = performance.now();
      const pod = await startPod(d, { cgroupParent: d.cgroupParent });
      const podMs = performance.now() - t0;
      pods.push(pod);
      const t1 = performance.now();
      const c = await createContainer(d, pod, { args: ["sleep", "1000"] });
      const t = await taskClient(pod.address);
      await t.task.start({ id: c.id, execId: "" }, K8S_NS).finally(() => t.close());
      const container = performance.now() - t1;
      const logs = (await d.logs()).split("\n").filter((l) => l.includes('"vm ready"'));
      const ready = JSON.parse(logs.find((l) => l.includes(pod.id)) ?? "{}");
      const consoleLog = await Deno.readTextFile(join(d.dir, pod.id, "console.log"))
        .catch(() => "");
      const uptime = Number(/kuasar-init: ([\d.]+)s/.exec(consoleLog)?.[1] ?? NaN);
      if (path !== "virtiofs" && path !== "disks" && !ready.template) {
        throw new Error(`pod ${pod.id} was booted`);
      }
      if (path === "pool" && !ready.pooled) throw new Error(`pod ${pod.id} was not pooled`);
      ours.push({
        vmm: ready.vmmMs ?? ready.restoreMs,
        guestInit: uptime * 1000,
        agentReady: ready.agentReadyMs,
        pod: podMs,
        container,
        total: podMs + container,
      });
      if (bare_) bare.push(await bareBoot(base, i));
    }
    await settle();
    const daemon = await pssKiB(d.pid);
    let qemu = 0, monitors = 0;
    for (const p of pods) qemu += await pssKiB(p.pid);
    for await (const e of Deno.readDir("/proc")) {
      if (!/^\d+$/.test(e.name)) continue;
      const cmd = await Deno.readTextFile(`/proc/${e.name}/cmdline`).catch(() => "");
      // The monitor helpers and each pod's virtiofsd.
      if (cmd.includes(d.dir) && (cmd.includes("\0monitor\0") || cmd.includes("virtiofsd"))) {
        monitors += await pssKiB(Number(e.name));
      }
    }
    // The pool's own VM waiting for the next pod (made after the last pod took one).
    let spareQemuKiB: number | undefined;
    if (path === "pool") {
      await untilPooled(d, n + 1);
      for await (const e of Deno.readDir("/proc")) {
        const cmd = await Deno.readTextFile(`/proc/${e.name}/cmdline`).catch(() => "");
        const mine = pods.some((p) => Number(e.name) === p.pid);
        if (!mine && cmd.startsWith("/") && cmd.includes("qemu-system") && cmd.includes(d.dir)) {
          spareQemuKiB = await pssKiB(Number(e.name));
        }
      }
    }
    const poolMakeMs = (await pooledLog(d)).map((l) => l.ms);
    for (const p of pods) await d.controller.shutdown(p.id);
    return {
      spareQemuKiB,
      poolMakeMs,
      ours,
      bare,
      template,
      perPodHostKiB: (Math.max(0, daemon - idleDaemon) + monitors) / n,
      perPodQemuKiB: qemu / n,
    };
  } finally {
    await d.cleanup();
    await Deno.remove(base, { recursive: true }).catch(() => {});
  }
}

/** The template's record once the daemon has built it (`template.json`, written last). */
async function templateBuilt(dir: string, timeoutMs: number) {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    for (const e of await Array.fromAsync(Deno.readDir(dir)).catch(() => [])) {
      const meta = await Deno.readTextFile(join(dir, e.name, "template.json")).catch(() => "");
      if (meta) return JSON.parse(meta);
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`no VM template in ${dir} after ${timeoutMs} ms`);
}
