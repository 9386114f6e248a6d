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
import { FailedPreconditionError } from "../../domain/errors.ts";
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
  if (st.isBlockDevice) await checkedBlockDevice(m.source, st);
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

/** The names in a sysfs directory; none when it is not there. */
function namesIn(dir: string): string[] {
  try {
    return [...Deno.readDirSync(dir)].map((e) => e.name);
  } catch {
    return [];
  }
}

/** The `major:minor` of a block device node (Linux's dev_t encoding). */
function majorMinor(rdev: number): string {
  const major = (Math.floor(rdev / 256) & 0xfff) | (Math.floor(rdev / 2 ** 32) & ~0xfff);
  const minor = (rdev & 0xff) | (Math.floor(rdev / 4096) & ~0xff);
  return `${major}:${minor}`;
}

/**
 * Why the host block device `source` must not become a disk of a VM: a file system of the
 * host's is on it (the device or one of its partitions is mounted here), or something holds
 * it (device-mapper, md). The guest's kernel would mount the same file system a second time:
 * two kernels writing one ext4 corrupt it (seen: blocks claimed by two files). A CSI block
 * volume is a device nobody on the host mounts.
 */
async function hostUse(st: Deno.FileInfo): Promise<string | undefined> {
  if (st.rdev === null) return undefined;
  const dev = majorMinor(st.rdev);
  const sys = `/sys/dev/block/${dev}`;
  const numbers = new Set([dev]);
  for (const name of namesIn(sys)) {
    const part = await Deno.readTextFile(`${sys}/${name}/dev`).catch(() => "");
    if (part && await Deno.stat(`${sys}/${name}/partition`).then(() => true, () => false)) {
      numbers.add(part.trim());
    }
  }
  const mountinfo = await Deno.readTextFile("/proc/self/mountinfo").catch(() => "");
  for (const line of mountinfo.split("\n")) {
    const f = line.split(" ");
    if (f.length > 4 && numbers.has(f[2])) return `it is mounted on the host at ${f[4]}`;
  }
  for (const n of numbers) {
    const holders = namesIn(`/sys/dev/block/${n}/holders`);
    if (holders.length) return `it is in use on the host by ${holders.join(", ")}`;
  }
  return undefined;
}

/** `source` as a disk, refused when the host uses it. */
async function checkedBlockDevice(source: string, st: Deno.FileInfo): Promise<void> {
  const use = await hostUse(st);
  if (use) {
    throw new FailedPreconditionError(
      `The block device "${source}" cannot be given to the pod's VM: ${use}`,
    );
  }
}

/** Plans the disks of a container from its host spec and Task.Create rootfs mounts. */
export async function planDisks(spec: OciSpec, rootfs: readonly Mount[]): Promise<DiskPlan> {
  const mounts = new Map<number, DiskSource>();
  for (const [i, m] of (spec.mounts ?? []).entries()) {
    if (isBind(m) && m.source?.startsWith("/")) {
      const st = await statOf(m.source);
      if (!st?.isBlockDevice) continue;
      await checkedBlockDevice(m.source, st);
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
      const st = node ? await statOf(node) : undefined;
      if (!node || !st?.isBlockDevice) continue;
      await checkedBlockDevice(node, st);
      devices.set(i, { source: node, readOnly: false, hostDevice });
    }
  }
  return { mounts, rootfs: root, devices };
}

/** Whether the plan has any disk. */
export function hasDisks(p: DiskPlan): boolean {
  return p.mounts.size > 0 || p.rootfs !== undefined || p.devices.size > 0;
}
