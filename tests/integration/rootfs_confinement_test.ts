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

/** Edits a bundle's config.json in place. */
async function editSpec(
  bundle: string,
  // deno-lint-ignore no-explicit-any
  edit: (spec: any) => void,
): Promise<void> {
  const file = join(bundle, "config.json");
  const spec = JSON.parse(await Deno.readTextFile(file));
  edit(spec);
  await Deno.writeTextFile(file, JSON.stringify(spec));
}

/** Rewrites `root.path` of a bundle's config.json. */
function setRootPath(bundle: string, path: string): Promise<void> {
  return editSpec(bundle, (spec) => spec.root.path = path);
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

/** Task.Create of `args` on `rootfs` with a stdout file, started; returns what it printed and its exit. */
async function runOn(
  t: Awaited<ReturnType<typeof taskClient>>,
  bundle: string,
  id: string,
  rootfs: Parameters<typeof createRequest>[2],
): Promise<{ status: number; out: string; mountedOnNode: boolean }> {
  const out = join(bundle, "..", `${id}.out`);
  await Deno.writeTextFile(out, "");
  await t.task.create(createRequest(id, bundle, rootfs, { stdout: out }), K8S_NS);
  const mountedOnNode = await isMountPoint(join(bundle, "rootfs"));
  const waiting = t.task.wait({ id, execId: "" }, K8S_NS);
  await t.task.start({ id, execId: "" }, K8S_NS);
  const status = (await waiting).exitStatus;
  await t.task.delete({ id, execId: "" }, K8S_NS);
  return { status, out: await Deno.readTextFile(out), mountedOnNode };
}

Deno.test({
  name:
    "rootfs: mounted in the container's namespace only (not the node's); writes reach the snapshot; a read-only bind stays read-only; volumes keep their propagation both ways",
  ...skip,
  fn: () =>
    withDaemon(async (d) => {
      const pod = await startPod(d);
      const t = await taskClient(pod.address);
      const volume = await Deno.makeTempDir({ prefix: "kuasar-volume-" });
      try {
        // An overlay rootfs: never a mount point on the node, the container's writes in its upper
        // dir. Mid-run the node mounts a tmpfs in a volume bound rslave (HostToContainer), which
        // the container must see.
        await Deno.mkdir(join(volume, "in"));
        await Deno.mkdir(join(volume, "out"));
        // Shared, as kubelet makes its directory.
        await run("mount", "--bind", volume, volume);
        await run("mount", "--make-shared", volume);
        let id = randomId();
        let bundle = join(d.base, "bundles", id);
        await writeBundle(bundle, id, {
          args: [
            "sh",
            "-c",
            "echo kept > /written; while [ ! -e /vol/in/mark ]; do sleep 0.05; done; " +
            "echo seen; grep -c ' / / ' /proc/self/mountinfo",
          ],
          cgroupParent: d.cgroupParent,
          sandboxPid: pod.pid,
          sandboxId: pod.id,
          mounts: [
            { destination: "/vol", type: "bind", source: volume, options: ["rbind", "rslave"] },
          ],
        });
        const overlay = await overlayRootfs(join(d.base, "snapshots", id));
        const upper = overlay[0].options.find((o) => o.startsWith("upperdir="))!.slice(9);
        const running = runOn(t, bundle, id, overlay);
        // Mounted by the node after the container started (kubelet does so for some volumes).
        await new Promise((r) => setTimeout(r, 300));
        await run("mount", "-t", "tmpfs", "-o", "size=1m", "kuasar-test", join(volume, "in"));
        await Deno.writeTextFile(join(volume, "in", "mark"), "");
        const r = await running;
        assert.equal(r.mountedOnNode, false, "the rootfs is a mount point on the node");
        assert.equal(r.status, 0, r.out);
        assert.equal(r.out, "seen\n1\n");
        assert.equal(await Deno.readTextFile(join(upper, "written")), "kept\n");
        await run("umount", join(volume, "in"));

        // Bidirectional: a volume bound rshared with an rshared root, whose source is a plain
        // directory on the (shared) mount that also holds the bundle: the container's mount in it
        // must reach the node. Such a container's rootfs is mounted on the node, as before.
        id = randomId();
        bundle = join(volume, "bundles", id);
        await writeBundle(bundle, id, {
          args: ["sh", "-c", "mount -t tmpfs kuasar-test /bidi/out && touch /bidi/out/mark"],
          cgroupParent: d.cgroupParent,
          sandboxPid: pod.pid,
          sandboxId: pod.id,
          mounts: [
            { destination: "/bidi", type: "bind", source: volume, options: ["rbind", "rshared"] },
          ],
        });
        await editSpec(bundle, (spec) => {
          // As containerd's CRI writes a spec with a Bidirectional mount (a privileged container).
          spec.linux.rootfsPropagation = "rshared";
          for (const set of Object.values(spec.process.capabilities) as string[][]) {
            set.push("CAP_SYS_ADMIN");
          }
        });
        const bidi = await runOn(t, bundle, id, await overlayRootfs(join(d.base, "snapshots", id)));
        assert.equal(bidi.status, 0, bidi.out);
        assert.equal(bidi.mountedOnNode, true);
        assert.ok(
          await isMountPoint(join(volume, "out")),
          "the container's mount is not on the node",
        );
        await Deno.stat(join(volume, "out", "mark"));
        await run("umount", join(volume, "out"));
        assert.equal(await isMountPoint(join(bundle, "rootfs")), false, "Delete left the rootfs");

        // A read-only bind rootfs (containerd's native snapshotter on a committed view).
        id = randomId();
        bundle = join(d.base, "bundles", id);
        await writeBundle(bundle, id, {
          args: ["sh", "-c", "touch /x 2>/dev/null && echo wrote || echo refused"],
          cgroupParent: d.cgroupParent,
          sandboxPid: pod.pid,
          sandboxId: pod.id,
        });
        // A copy of the image with the files the pod binds in (runc cannot create them read-only).
        const lower = overlay[0].options.find((o) => o.startsWith("lowerdir="))!.slice(9);
        const view = join(d.base, "snapshots", `${id}-view`);
        await run("cp", "-a", lower, view);
        for (const f of ["hostname", "hosts", "resolv.conf"]) {
          await Deno.writeTextFile(join(view, "etc", f), "");
        }
        const ro = await runOn(t, bundle, id, [
          { type: "bind", source: view, target: "", options: ["rbind", "ro"] },
        ]);
        assert.equal(ro.mountedOnNode, false);
        assert.equal(ro.out, "refused\n");

        // A rootfs that cannot be mounted: Create names why; nothing is left on the node.
        id = randomId();
        bundle = join(d.base, "bundles", id);
        await writeBundle(bundle, id, {
          args: ["true"],
          cgroupParent: d.cgroupParent,
          sandboxPid: pod.pid,
          sandboxId: pod.id,
        });
        const bad = [{
          type: "overlay",
          source: "overlay",
          target: "",
          options: [`lowerdir=${join(d.base, "no-such-layer")}`],
        }];
        const err = await t.task.create(createRequest(id, bundle, bad), K8S_NS).then(
          () => "created",
          (e) => String(e),
        );
        assert.match(err, /mount rootfs overlay on .*rootfs: No such file or directory/);
        assert.equal(await isMountPoint(join(bundle, "rootfs")), false);
      } finally {
        t.close();
        for (const sub of ["in", "out"]) await run("umount", join(volume, sub)).catch(() => {});
        await run("umount", volume).catch(() => {});
        await Deno.remove(volume, { recursive: true });
      }
      await assertShutdownLeavesNothing(d, [pod.id]);
    }),
});
