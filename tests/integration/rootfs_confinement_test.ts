/**
 * Task.Create mounts its rootfs at `<bundle>/rootfs` only, as containerd's
 * runc shim does, and Delete/Shutdown take down only what the daemon
 * mounted: a spec's root.path cannot make the daemon mount over (or later
 * detach) a host path outside the bundle.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { K8S_NS, taskClient, withDaemon } from "../support/daemon.ts";
import { assertShutdownLeavesNothing } from "../support/leaks.ts";
import { writeBundle } from "../support/oci.ts";
import { createRequest, randomId, startPod } from "../support/pod.ts";
import { overlayRootfs } from "../support/rootfs.ts";
import { runcUnavailable, skipUnless } from "../support/env.ts";
import { isMountPoint } from "../../src/adapters/os/mounts.ts";

const skip = skipUnless(runcUnavailable(), "rootfs confinement");

async function run(cmd: string, ...args: string[]): Promise<void> {
  const r = await new Deno.Command(cmd, { args, stderr: "piped" }).output();
  if (!r.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(r.stderr)}`);
  }
}

/** Rewrites `root.path` of a bundle's config.json. */
async function setRootPath(bundle: string, path: string): Promise<void> {
  const file = join(bundle, "config.json");
  const spec = JSON.parse(await Deno.readTextFile(file));
  spec.root.path = path;
  await Deno.writeTextFile(file, JSON.stringify(spec));
}

Deno.test({
  name: "rootfs: a root.path outside the bundle is refused, nothing is mounted over it",
  ...skip,
  fn: () =>
    withDaemon(async (d) => {
      // A host directory with a mount of its own, which must outlive the pod.
      const victim = await Deno.makeTempDir({ prefix: "kuasar-victim-" });
      const inner = join(victim, "inner");
      await Deno.mkdir(inner);
      await run("mount", "-t", "tmpfs", "-o", "size=1m", "kuasar-test", inner);
      try {
        const pod = await startPod(d);
        const t = await taskClient(pod.address);
        try {
          for (const rootPath of [`../../../..${victim}`, victim]) {
            const id = randomId();
            const bundle = join(d.base, "bundles", id);
            await writeBundle(bundle, id, {
              args: ["sleep", "1000"],
              cgroupParent: d.cgroupParent,
              sandboxPid: pod.pid,
              sandboxId: pod.id,
            });
            await setRootPath(bundle, rootPath);
            const rootfs = await overlayRootfs(join(d.base, "snapshots", id));
            const created = await t.task.create(createRequest(id, bundle, rootfs), K8S_NS)
              .then(() => "created", (e) => String(e));
            assert.equal(await isMountPoint(victim), false, `mounted over ${victim}`);
            assert.match(created, /InvalidArgument.*root\.path/, rootPath);
            assert.equal(await isMountPoint(join(bundle, "rootfs")), false);
          }
        } finally {
          t.close();
        }
        await assertShutdownLeavesNothing(d, [pod.id]);
        assert.equal(await isMountPoint(inner), true, "the test's own mount was detached");
      } finally {
        await run("umount", "-l", victim).catch(() => {});
        await run("umount", inner).catch(() => {});
        await Deno.remove(victim, { recursive: true });
      }
    }),
});

Deno.test({
  name: "rootfs: Delete leaves a rootfs it did not mount (a bundle without rootfs mounts)",
  ...skip,
  fn: () =>
    withDaemon(async (d) => {
      const pod = await startPod(d);
      const id = randomId();
      const bundle = join(d.base, "bundles", id);
      await writeBundle(bundle, id, {
        args: ["true"],
        cgroupParent: d.cgroupParent,
        sandboxPid: pod.pid,
        sandboxId: pod.id,
      });
      // The caller prepared the rootfs itself (as `ctr run --rootfs` users do): the daemon mounts nothing.
      const rootfs = join(bundle, "rootfs");
      const [overlay] = await overlayRootfs(join(d.base, "snapshots", id));
      await run("mount", "-t", "overlay", "-o", overlay.options.join(","), "overlay", rootfs);
      try {
        const t = await taskClient(pod.address);
        try {
          await t.task.create(createRequest(id, bundle, []), K8S_NS);
          const waiting = t.task.wait({ id, execId: "" }, K8S_NS);
          await t.task.start({ id, execId: "" }, K8S_NS);
          assert.equal((await waiting).exitStatus, 0);
          await t.task.delete({ id, execId: "" }, K8S_NS);
        } finally {
          t.close();
        }
        assert.equal(await isMountPoint(rootfs), true, "Delete unmounted the caller's rootfs");
      } finally {
        await run("umount", rootfs).catch(() => {});
      }
      await assertShutdownLeavesNothing(d, [pod.id]);
    }),
});
