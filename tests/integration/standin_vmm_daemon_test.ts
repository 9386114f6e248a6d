/**
 * The vmm sandboxer configured for Cloud Hypervisor or Firecracker, as an operator would,
 * running a stand-in binary (tests/fakes/{cloud_hypervisor,firecracker}_bin.ts: the contract
 * fake of its API, no guest): the daemon starts it as its argv says, in the pod's monitor,
 * describes and boots the VM over the API within the contract, looks for the agent over hybrid
 * vsock, and when no agent answers, fails Start clearly and leaves nothing once the pod is shut
 * down. Where the real binary and KVM exist, the VM suite runs on it (scripts/vm_suite.sh).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { GUEST_IMAGE, skipUnless } from "../support/env.ts";
import { TestDaemon, withDaemon } from "../support/daemon.ts";
import { startPod } from "../support/pod.ts";
import { assertShutdownLeavesNothing } from "../support/leaks.ts";

const fake = (name: string) => fileURLToPath(new URL(`../fakes/${name}_bin.ts`, import.meta.url));

function unavailable(): string | undefined {
  if (Deno.uid() !== 0) return "needs root";
  for (const f of ["vmlinux", "initramfs.img"]) {
    try {
      Deno.statSync(join(GUEST_IMAGE, f));
    } catch {
      return `no ${f} in ${GUEST_IMAGE} (deno task guest-image builds it)`;
    }
  }
  return undefined;
}

async function startDaemon(binary: "cloud-hypervisor" | "firecracker"): Promise<TestDaemon> {
  const base = await Deno.makeTempDir({ prefix: "k-" });
  const bin = join(base, binary);
  const standIn = fake(binary.replace("-", "_"));
  await Deno.writeTextFile(bin, `#!/bin/sh\nexec "${Deno.execPath()}" run -A "${standIn}" "$@"\n`);
  await Deno.chmod(bin, 0o755);
  const config = join(base, "vmm.toml");
  await Deno.writeTextFile(
    config,
    [
      "[sandbox]",
      'log_level = "debug"',
      "[hypervisor]",
      `path = "${bin}"`,
      `kernel_path = "${GUEST_IMAGE}/vmlinux"`,
      `initrd_path = "${GUEST_IMAGE}/initramfs.img"`,
      "memory_in_mb = 512",
      "boot_timeout_secs = 3",
      `bundle_disk_dir = "${join(base, "bundles")}"`,
      "",
    ].join("\n"),
  );
  return await TestDaemon.start({ base, kind: "vmm", extraArgs: ["--config", config] });
}

/** The fake VMM's record of what it was asked, found under the daemon's base directory. */
async function callsOf(
  base: string,
): Promise<{ calls: { method: string; path: string }[]; violations: string[] }> {
  const found: string[] = [];
  const walk = async (dir: string) => {
    for await (const e of Deno.readDir(dir)) {
      const p = join(dir, e.name);
      if (e.isDirectory) await walk(p);
      else if (e.name.endsWith(".calls.json")) found.push(p);
    }
  };
  await walk(base);
  assert.equal(found.length, 1, `one VMM's record: ${found}`);
  const record = JSON.parse(await Deno.readTextFile(found[0]));
  await Deno.remove(found[0]); // the stand-in's, not the daemon's: not a leftover
  return record;
}

/** Start fails saying the agent did not answer, soon; what the stand-in was asked. */
async function startWithoutAgent(d: TestDaemon) {
  const t0 = performance.now();
  await assert.rejects(
    () => startPod(d, { cgroupParent: d.cgroupParent }),
    /agent/i,
    "Start says the agent did not answer",
  );
  assert.ok(performance.now() - t0 < 30_000, "within the boot timeout, not stuck");
  return await callsOf(d.base);
}

async function podIds(d: TestDaemon): Promise<string[]> {
  return (await Array.fromAsync(Deno.readDir(d.dir)))
    .filter((e) => e.isDirectory && !e.name.startsWith(".")).map((e) => e.name);
}

Deno.test({
  name: "cloud-hypervisor: the daemon drives the VMM within its contract; no agent, a clear error",
  ...skipUnless(unavailable(), "vmm sandboxer on a stand-in Cloud Hypervisor"),
  fn: () =>
    withDaemon(async (d) => {
      const r = await startWithoutAgent(d);
      const paths = r.calls.map((c) => c.path.replace("/api/v1/", ""));
      assert.deepEqual(paths.slice(0, 4), ["vmm.ping", "vm.create", "vm.boot", "vm.info"]);
      assert.deepEqual(r.violations, []);
      await assertShutdownLeavesNothing(d, await podIds(d));
    }, () => startDaemon("cloud-hypervisor")),
});

Deno.test({
  name:
    "firecracker: the daemon describes the VM with its disk slots within the contract; no agent, a clear error",
  ...skipUnless(unavailable(), "vmm sandboxer on a stand-in Firecracker"),
  fn: () =>
    withDaemon(async (d) => {
      const r = await startWithoutAgent(d);
      const calls = r.calls.map((c) => `${c.method} ${c.path}`);
      assert.deepEqual(calls.slice(0, 4), [
        "GET /",
        "PUT /machine-config",
        "PUT /boot-source",
        "PUT /vsock",
      ]);
      // Bundles go as disks (Firecracker has no virtiofs): 8 slots by default, made at boot.
      assert.equal(calls.filter((c) => /^PUT \/drives\/kslot\d$/.test(c)).length, 8);
      assert.ok(calls.includes("PUT /actions"), "InstanceStart");
      assert.deepEqual(r.violations, []);
      await assertShutdownLeavesNothing(d, await podIds(d));
    }, () => startDaemon("firecracker")),
});
