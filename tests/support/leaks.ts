/**
 * What a sandboxer left behind: processes, mounts, cgroups and files. Tests
 * assert this is empty after Shutdown.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import type { TestDaemon } from "./daemon.ts";
import { DEFAULT_CGROUP_PARENT } from "./oci.ts";
import { socketPath } from "../../src/adapters/supervisor/process_tokens.ts";

const CGROUP_ROOT = "/sys/fs/cgroup";

/** The daemon's own files, there while it runs, whatever its pods (named with a leading dot, or without in a --dir of the old layout). */
const DAEMON_FILES = new Set(
  ["exits", "s", "runc", "runsc", "task-backend.sock", "relay.log", "wasm-host.log", "wasm-io"]
    .flatMap((n) => [n, `.${n}`]),
);

/** Daemon-wide directories whose content no pod owns (the gVisor pods' shared pause rootfs). */
const DAEMON_TREES = new Set(["pause-rootfs", ".pause-rootfs"]);

async function walk(dir: string, out: string[]): Promise<void> {
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(dir));
  } catch {
    return;
  }
  for (const e of entries) {
    const p = join(dir, e.name);
    if (e.isDirectory && DAEMON_TREES.has(e.name)) continue;
    if (e.isDirectory) {
      const before = out.length;
      await walk(p, out);
      // An empty directory of the daemon's own layout is not a leak.
      if (out.length === before && !DAEMON_FILES.has(e.name)) out.push(`${p}/`);
    } else if (!DAEMON_FILES.has(e.name)) {
      out.push(p);
    }
  }
}

/**
 * What names the VMs the vmm sandboxer keeps in its pool (`template_pool`): the daemon's own
 * while it runs, no pod's. Not one a pod took (its directory says `taken`; its sockets have
 * the pod's names): that is the pod's, and a leak once the pod is gone.
 */
async function poolVmsOwnNames(d: TestDaemon): Promise<string[]> {
  const names: string[] = [];
  for (const e of await Array.fromAsync(Deno.readDir(d.dir)).catch(() => [])) {
    if (!/^\.vm-pool-[0-9a-f]{12}$/.test(e.name)) continue;
    if (await Deno.stat(join(d.dir, e.name, "taken")).then(() => true, () => false)) continue;
    names.push(`${join(d.dir, e.name)}/`);
    for (const suffix of ["qmp", "agent", "debug"]) {
      names.push(await socketPath(join(d.dir, ".s"), `vm@${e.name}`, suffix));
    }
  }
  return names;
}

/**
 * Everything of `pods` still present: processes, mounts, cgroups, files under --dir (the VMs
 * the daemon keeps in its pool, and their files, are its own).
 */
export async function leftovers(d: TestDaemon, pods: string[]): Promise<string[]> {
  // The tests' containers live under the daemon's own cgroup parent; specs
  // made without one use the shared default of tests/support/oci.ts.
  const parents = [d.cgroupParent, DEFAULT_CGROUP_PARENT];
  const found: string[] = [];
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name) || Number(e.name) === d.pid) continue;
    try {
      const cmd = (await Deno.readTextFile(`/proc/${e.name}/cmdline`)).replaceAll("\0", " ");
      const cgroups = await Deno.readTextFile(`/proc/${e.name}/cgroup`);
      // A container process is found by its cgroup, whatever its command line.
      const inParent = parents.some((p) => cgroups.includes(`:${p}/`));
      if (inParent || cmd.includes(d.dir) || pods.some((p) => cmd.includes(p))) {
        found.push(`process ${e.name}: ${cmd}`);
      }
    } catch { /* gone */ }
  }
  const mounts = await Deno.readTextFile("/proc/self/mountinfo");
  for (const line of mounts.split("\n")) {
    const mp = line.split(" ")[4];
    // runsc's null-netns included: the gVisor sandboxer takes it down with the last pod.
    if (mp && mp.startsWith(d.base)) {
      found.push(`mount ${mp}`);
    }
  }
  // Every hierarchy: v1 controllers, the named systemd one, and v2 (unified or alone).
  const hierarchies = [
    "",
    ...(await Array.fromAsync(Deno.readDir(CGROUP_ROOT)))
      .filter((e) => e.isDirectory).map((e) => e.name),
  ];
  for (const h of hierarchies) {
    for (const parent of parents) {
      const dir = join(CGROUP_ROOT, h, parent);
      try {
        for await (const c of Deno.readDir(dir)) {
          if (c.isDirectory) found.push(`cgroup ${join(dir, c.name)}`);
        }
      } catch { /* no such parent: nothing left */ }
    }
  }
  const files: string[] = [];
  await walk(d.dir, files);
  found.push(...files.map((f) => `file ${f}`));
  const pool = await poolVmsOwnNames(d);
  return found.filter((f) => !pool.some((n) => f.includes(n)));
}

/** Shuts `pods` down (Controller.Shutdown) and asserts nothing of them is left on the node. */
export async function assertShutdownLeavesNothing(d: TestDaemon, pods: string[]): Promise<void> {
  for (const id of pods) await d.controller.shutdown(id);
  assert.deepEqual(await leftovers(d, pods), []);
}
