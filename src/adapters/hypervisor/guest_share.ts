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
import { bindMount, fsTypeAt, isMountPoint, mountAll, unmountAll } from "../os/mounts.ts";
import { guestSpec } from "./guest_spec.ts";
import { GUEST_SHARED_DIR } from "../../ports/agent_protocol.ts";

/** The host directory of container `cid`'s share. */
export function shareDir(dir: string, sandboxId: string, cid: string): string {
  return join(dir, sandboxId, "shared", cid);
}

/** The bundle path the guest's runtime is given. */
export function guestBundle(cid: string): string {
  return `${GUEST_SHARED_DIR}/${cid}`;
}

/** Whether the share was made (its rootfs mounted and its spec written). */
export async function shared(share: string): Promise<boolean> {
  const spec = await Deno.stat(join(share, "config.json")).then(() => true, () => false);
  return spec && await isMountPoint(join(share, "rootfs"));
}

/**
 * Makes the share of container `cid` from its host spec: the rootfs mounts
 * (or, without any, the spec's own root directory `hostRoot`), the bind
 * mounts, the guest's spec. Undone on failure.
 */
export async function makeShare(
  share: string,
  cid: string,
  spec: OciSpec,
  rootfs: readonly Mount[],
  hostRoot: string,
): Promise<void> {
  const g = guestSpec(spec, cid, guestBundle(cid), await memoryVolumes(spec));
  const root = join(share, "rootfs");
  try {
    await Deno.mkdir(root, { recursive: true, mode: 0o755 });
    if (rootfs.length) await mountAll(rootfs, root);
    else await bindMount(hostRoot, root);
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
