/**
 * Which parts of a container become disks of its VM rather than virtiofs
 * shares, as Kuasar decides: a block volume (a bind mount whose source is a
 * host block device), a mount of a block device or an image file with a file
 * system type, a rootfs that is one such mount (a devmapper or image
 * snapshot), and the block devices of `linux.devices` (Kubernetes
 * `volumeDevices`). A file system on a disk is mounted by the guest's
 * kernel; over virtiofs it would be the host's mount, shared again.
 *
 * @module
 */
import type { OciSpec } from "../../domain/oci.ts";
import type { Mount } from "../../domain/task.ts";
import { runCommand } from "../os/command.ts";

/** A host source to attach as a disk, and how the guest uses it. */
export interface DiskSource {
  /** Host path: a block device or a raw image file. */
  readonly source: string;
  readonly readOnly: boolean;
  /** The file system the guest mounts; unset: a raw device. */
  readonly fstype?: string;
}

/** The disks of one container, by where its spec uses them. */
export interface DiskPlan {
  /** By index in `spec.mounts`. */
  readonly mounts: ReadonlyMap<number, DiskSource>;
  readonly rootfs?: DiskSource;
  /** By index in `spec.linux.devices`, with the host's `major:minor`. */
  readonly devices: ReadonlyMap<number, DiskSource & { readonly hostDevice: string }>;
}

/** Mount types that never name a disk. */
const NOT_DISKS = new Set(["bind", "rbind", "overlay", "tmpfs", "none", ""]);

function isBind(m: { type?: string; options?: readonly string[] }): boolean {
  return m.type === "bind" || m.type === "rbind" ||
    (m.options ?? []).some((o) => o === "bind" || o === "rbind");
}

async function statOf(path: string): Promise<Deno.FileInfo | undefined> {
  return await Deno.stat(path).catch(() => undefined);
}

/** The file system blkid finds on a host device; undefined when it finds none. */
async function probeFsType(device: string): Promise<string | undefined> {
  const r = await runCommand(["blkid", "-o", "value", "-s", "TYPE", device]).catch(() => undefined);
  const t = r?.code === 0 ? r.stdout.trim() : "";
  return /^[a-z0-9_]+$/.test(t) ? t : undefined;
}

/** A typed mount (not bind) of a block device or image file: the disk it names. */
async function typedDisk(
  m: { type?: string; source?: string; options?: readonly string[] },
): Promise<DiskSource | undefined> {
  if (isBind(m) || NOT_DISKS.has(m.type ?? "") || !m.source?.startsWith("/")) return undefined;
  const st = await statOf(m.source);
  if (!st?.isBlockDevice && !st?.isFile) return undefined;
  return { source: m.source, readOnly: (m.options ?? []).includes("ro"), fstype: m.type };
}

/**
 * Whether containerd made the container privileged: every device allowed. Its
 * `linux.devices` are then all of the host's, which a VM must not take.
 */
function allowsAllDevices(spec: OciSpec): boolean {
  const rules = (spec.linux?.resources?.devices ?? []) as {
    allow?: boolean;
    type?: string;
    major?: number;
  }[];
  return rules.some((r) => r.allow && (!r.type || r.type === "a") && r.major === undefined);
}

/** The host device node of `major:minor`, from sysfs. */
async function hostDeviceNode(majorMinor: string): Promise<string | undefined> {
  const uevent = await Deno.readTextFile(`/sys/dev/block/${majorMinor}/uevent`).catch(() => "");
  const name = /^DEVNAME=(.+)$/m.exec(uevent)?.[1];
  return name && !name.includes("..") ? `/dev/${name}` : undefined;
}

/** Plans the disks of a container from its host spec and Task.Create rootfs mounts. */
export async function planDisks(spec: OciSpec, rootfs: readonly Mount[]): Promise<DiskPlan> {
  const mounts = new Map<number, DiskSource>();
  for (const [i, m] of (spec.mounts ?? []).entries()) {
    if (isBind(m) && m.source?.startsWith("/")) {
      if (!(await statOf(m.source))?.isBlockDevice) continue;
      const readOnly = (m.options ?? []).includes("ro");
      mounts.set(i, { source: m.source, readOnly, fstype: await probeFsType(m.source) });
      continue;
    }
    const d = await typedDisk(m);
    if (d) mounts.set(i, d);
  }
  const root = rootfs.length === 1 ? await typedDisk(rootfs[0]) : undefined;
  const devices = new Map<number, DiskSource & { hostDevice: string }>();
  if (!allowsAllDevices(spec)) {
    const list = (spec.linux?.devices ?? []) as { type?: string; major?: number; minor?: number }[];
    for (const [i, d] of list.entries()) {
      if (d.type !== "b" || !Number.isInteger(d.major) || !Number.isInteger(d.minor)) continue;
      const hostDevice = `${d.major}:${d.minor}`;
      const node = await hostDeviceNode(hostDevice);
      if (!node || !(await statOf(node))?.isBlockDevice) continue;
      devices.set(i, { source: node, readOnly: false, hostDevice });
    }
  }
  return { mounts, rootfs: root, devices };
}

/** Whether the plan has any disk. */
export function hasDisks(p: DiskPlan): boolean {
  return p.mounts.size > 0 || p.rootfs !== undefined || p.devices.size > 0;
}
