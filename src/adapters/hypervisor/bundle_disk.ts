/**
 * Containers' bundles as disks, for pods whose VM shares no directory with
 * the host (Firecracker has no virtiofs; `share_fs = "None"` on the others):
 * the share a container would have had (guest_share.ts: its rootfs, its bind
 * sources, the guest's spec) is made as usual in a staging directory, packed
 * into an ext4 image with `mkfs.ext4 -d`, and the image is attached as one
 * disk the agent mounts at the bundle path (`BUNDLE_DISK_MOUNT`).
 *
 * What this changes for the container: its files are copies taken at
 * Task.Create. Its writes (root filesystem and bind mounts alike) stay in its
 * image, which holds `freeMiB` of room for them and goes with the container;
 * a host bind mount sees nothing the container writes, and the container sees
 * no later change on the host. The image is sparse: the room costs host disk
 * only as it is written.
 *
 * @module
 */
import { join } from "node:path";
import { FailedPreconditionError } from "../../domain/errors.ts";
import { runChecked } from "../os/command.ts";
import { lockForReading } from "../os/mounts.ts";

/** Where container images live and how much room they give. */
export interface BundleDisks {
  /** Host directory of the images: `<dir>/<pod>/<container>.img` (on disk, not tmpfs). */
  readonly dir: string;
  /** Room for the container's writes, MiB, on top of what its files take. */
  readonly freeMiB: number;
}

/** The file system of bundle images. */
export const BUNDLE_FSTYPE = "ext4";

/** The image of container `cid` of pod `sandboxId`. */
export function bundleImage(b: BundleDisks, sandboxId: string, cid: string): string {
  return join(b.dir, sandboxId, `${cid}.img`);
}

/** The pod's directory of images (removed with the pod). */
export function podBundleDir(b: BundleDisks, sandboxId: string): string {
  return join(b.dir, sandboxId);
}

/**
 * Bytes (allocated: sparse files count what they hold) and inodes (hard links once) a tree
 * takes, mounts crossed, symlinks not followed: `du`'s count.
 */
async function treeUsage(dir: string): Promise<{ bytes: number; inodes: number }> {
  const count = async (args: string[]) =>
    Number((await runChecked(["du", "-s", ...args, dir])).stdout.split(/\s/)[0]);
  return { bytes: await count(["-B1"]), inodes: await count(["--inodes"]) };
}

/**
 * Packs the tree at `staging` (its mounts made read-only and symlink-proof first: the bind
 * sources are live host directories) into a new image at `image`: sized to its content plus
 * `freeMiB` and 10% of slack, 4 KiB blocks, sparse, with no journal (the container's writes
 * die with it).
 */
export async function packBundle(staging: string, image: string, freeMiB: number): Promise<void> {
  await Deno.mkdir(join(image, ".."), { recursive: true, mode: 0o700 });
  await Deno.remove(image).catch(() => {});
  try {
    await lockForReading(staging);
    const { bytes, inodes } = await treeUsage(staging);
    const mib = Math.ceil((bytes * 1.1 + inodes * 512) / 2 ** 20) + Math.max(freeMiB, 0) + 16;
    // mke2fs gives an inode per 16 KiB by default; a tree of many small files needs more.
    const wantInodes = Math.ceil(inodes * 1.5) + 4096;
    const inodeArgs = wantInodes > (mib * 2 ** 20) / 16384 ? ["-N", String(wantInodes)] : [];
    await runChecked([
      "mkfs.ext4",
      "-q",
      "-F",
      "-d",
      staging,
      // Small images would get 1 KiB blocks, too small for larger extended attributes.
      "-b",
      "4096",
      "-m",
      "0",
      "-O",
      "^has_journal",
      "-E",
      "nodiscard",
      ...inodeArgs,
      image,
      `${mib}M`,
    ], { timeoutMs: 600_000 });
  } catch (e) {
    await Deno.remove(image).catch(() => {});
    throw new FailedPreconditionError(
      "Could not pack the container's files into a disk image (mkfs.ext4 -d of e2fsprogs " +
        `1.43 or later, mounts that refuse symlinks: Linux 5.10 or later): ${(e as Error).message}`,
    );
  }
  await Deno.chmod(image, 0o600);
}
