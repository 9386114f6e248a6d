/**
 * A container's files as the guest sees them: `<dir>/<pod>/shared/<id>/`
 * on the host is `/run/kuasar/shared/<id>/` in the guest (virtiofs). It
 * holds the rootfs (the Task.Create mounts, mounted there), every host bind
 * mount of the spec (bind-mounted as `m0`, `m1`…) and the spec rewritten for
 * the guest. Made at Task.Create, or earlier when the engine announces the
 * container in `extensions.tasks`; a share made early is used as it is.
 *
 * @module
 */
import { join } from "node:path";
import type { OciSpec } from "../../domain/oci.ts";
import type { Mount } from "../../domain/task.ts";
import { InvalidArgumentError } from "../../domain/errors.ts";
import { bindMount, fsTypeAt, isMountPoint, mountAll, unmountAll } from "../os/mounts.ts";
import { type GuestDisks, guestSpec } from "./guest_spec.ts";
import { GUEST_SHARED_DIR, type GuestDisk } from "../../ports/agent_protocol.ts";
import { type DiskSource, hasDisks, planDisks } from "./disk_sources.ts";

/** Attaches a host source to the pod's VM as a disk: its serial. */
export type AttachDisk = (source: string, readOnly: boolean) => Promise<string>;

/** The host directory of container `cid`'s share. */
export function shareDir(dir: string, sandboxId: string, cid: string): string {
  return join(dir, sandboxId, "shared", cid);
}

/** The bundle path the guest's runtime is given. */
export function guestBundle(cid: string): string {
  return `${GUEST_SHARED_DIR}/${cid}`;
}

/** Whether the share was made (its rootfs mounted, or a disk, and its spec written). */
export async function shared(share: string): Promise<boolean> {
  const spec = await Deno.stat(join(share, "config.json")).then(() => true, () => false);
  const root = join(share, "rootfs");
  const onDisk = await Deno.lstat(root).then(() => false, () => true);
  return spec && (onDisk || await isMountPoint(root));
}

/**
 * Makes the share of container `cid` from its host spec: the rootfs mounts
 * (or, without any, the spec's own root directory `hostRoot`), the bind
 * mounts, the guest's spec; block volumes and a block rootfs are attached as
 * disks instead (`attach`; unset: the VMM cannot, and they are refused).
 * Undone on failure, except attached disks: the caller releases the
 * container's disks.
 */
export async function makeShare(
  share: string,
  cid: string,
  spec: OciSpec,
  rootfs: readonly Mount[],
  hostRoot: string,
  attach?: AttachDisk,
): Promise<void> {
  const plan = await planDisks(spec, rootfs);
  let disks: GuestDisks | undefined;
  if (hasDisks(plan)) {
    if (!attach) {
      throw new InvalidArgumentError(
        `Container "${cid}" has block volumes or a block rootfs: this hypervisor cannot attach disks`,
      );
    }
    const guest = async (d: DiskSource): Promise<GuestDisk> => ({
      serial: await attach(d.source, d.readOnly),
      fstype: d.fstype,
      options: d.readOnly ? ["ro"] : [],
    });
    const mounts = new Map<number, GuestDisk>();
    for (const [i, d] of plan.mounts) mounts.set(i, await guest(d));
    const devices = new Map<number, GuestDisk>();
    for (const [i, d] of plan.devices) {
      devices.set(i, { ...await guest(d), fstype: undefined, hostDevice: d.hostDevice });
    }
    disks = { mounts, devices, rootfs: plan.rootfs && await guest(plan.rootfs) };
  }
  const g = guestSpec(spec, cid, guestBundle(cid), await memoryVolumes(spec), disks);
  const root = join(share, "rootfs");
  try {
    await Deno.mkdir(share, { recursive: true, mode: 0o755 });
    if (!disks?.rootfs) {
      await Deno.mkdir(root, { recursive: true, mode: 0o755 });
      if (rootfs.length) await mountAll(rootfs, root);
      else await bindMount(hostRoot, root);
    }
    for (const s of g.shares) {
      const target = join(share, s.name);
      if ((await Deno.stat(s.source)).isDirectory) await Deno.mkdir(target, { recursive: true });
      else await Deno.writeFile(target, new Uint8Array());
      await bindMount(s.source, target);
    }
    await Deno.writeTextFile(join(share, "config.json"), JSON.stringify(g.spec));
  } catch (e) {
    await removeShare(share);
    throw e;
  }
}

/**
 * Which of the spec's bind sources are memory-backed volumes: kubelet's emptyDir with
 * `medium: Memory` is a tmpfs it mounts at `…/volumes/kubernetes.io~empty-dir/<name>`.
 */
async function memoryVolumes(spec: OciSpec): Promise<(hostPath: string) => boolean> {
  const memory = new Set<string>();
  for (const m of spec.mounts ?? []) {
    const src = m.source ?? "";
    if (!src.includes("/kubernetes.io~empty-dir/")) continue;
    if (await fsTypeAt(src).catch(() => undefined) === "tmpfs") memory.add(src);
  }
  return (p) => memory.has(p);
}

/** Unmounts and removes a share. Idempotent. */
export async function removeShare(share: string): Promise<void> {
  await unmountAll(share);
  await Deno.remove(share, { recursive: true }).catch(() => {});
}
