/**
 * The guest's side of hot-plugged disks (the host's is hypervisor/pod_disks.ts):
 * before a container is created, each disk its spec lists (`DISKS_ANNOTATION`)
 * is found by its virtio serial, given a device node under `GUEST_DISK_DIR`,
 * and its file system mounted there; `linux.devices` naming the host's device
 * are renumbered to the guest's. A disk serves every container of the pod
 * naming it and is unmounted when the last of them is deleted, so the host
 * can detach it. A disk holding a container's whole bundle (`BUNDLE_DISK_MOUNT`)
 * is mounted at the bundle path instead, and unmounted with its container.
 *
 * @module
 */
import { join } from "node:path";
import { DeadlineExceededError, InvalidArgumentError } from "../../domain/errors.ts";
import type { OciSpec } from "../../domain/oci.ts";
import { log } from "../../lib/log.ts";
import { sleep } from "../../lib/sync.ts";
import type { Mount } from "../../domain/task.ts";
import {
  BUNDLE_DISK_MOUNT,
  DISKS_ANNOTATION,
  GUEST_DISK_DIR,
  GUEST_SHARED_DIR,
  type GuestDisk,
} from "../../ports/agent_protocol.ts";
import { runChecked, runCommand } from "../os/command.ts";
import { isMountPoint, mountAll, mountsUnder, unmountAll } from "../os/mounts.ts";

/** How long a disk the host attached may take to appear (PCIe hot-plug under emulation). */
const APPEAR_TIMEOUT_MS = 30_000;

const SERIAL = /^[A-Za-z0-9_-]{1,20}$/;
const FSTYPE = /^[a-z0-9_]{1,32}$/;
const MAJOR_MINOR = /^\d{1,10}:\d{1,10}$/;

/** The disks a guest spec lists, checked (they come from the host, and name paths). */
export function disksOf(spec: OciSpec): GuestDisk[] {
  const raw = spec.annotations?.[DISKS_ANNOTATION];
  if (!raw) return [];
  let list: unknown;
  try {
    list = JSON.parse(raw);
  } catch {
    throw new InvalidArgumentError(`${DISKS_ANNOTATION} is not JSON`);
  }
  if (!Array.isArray(list)) throw new InvalidArgumentError(`${DISKS_ANNOTATION} is not a list`);
  return list.map((d: Record<string, unknown>) => {
    const serial = String(d?.serial ?? "");
    const fstype = d?.fstype === undefined ? undefined : String(d.fstype);
    const hostDevice = d?.hostDevice === undefined ? undefined : String(d.hostDevice);
    const options = Array.isArray(d?.options) ? d.options.map(String) : [];
    if (
      !SERIAL.test(serial) || (fstype !== undefined && !FSTYPE.test(fstype)) ||
      (hostDevice !== undefined && !MAJOR_MINOR.test(hostDevice)) ||
      options.some((o) => o !== "ro" && o !== "rw")
    ) {
      throw new InvalidArgumentError(`${DISKS_ANNOTATION}: invalid disk ${JSON.stringify(d)}`);
    }
    return { serial, fstype, hostDevice, options };
  });
}

/**
 * A drive re-pointed at a new file (Firecracker) answers its new serial at once, and its new
 * size once the guest has handled the config change: a disk no bigger than a placeholder
 * (one page, 8 sectors) is waited for this long before it is taken as it is.
 */
const RESIZE_GRACE_MS = 2_000;

/** The guest's `major:minor` of the virtio disk with `serial`, waiting for it to appear. */
async function findDisk(serial: string): Promise<string> {
  const deadline = Date.now() + APPEAR_TIMEOUT_MS;
  let seen: number | undefined;
  for (;;) {
    for await (const e of Deno.readDir("/sys/block")) {
      const s = await Deno.readTextFile(`/sys/block/${e.name}/serial`).catch(() => "");
      if (s.trim() !== serial) continue;
      const sectors = Number(await Deno.readTextFile(`/sys/block/${e.name}/size`).catch(() => 0));
      seen ??= Date.now();
      if (sectors <= 8 && Date.now() - seen < RESIZE_GRACE_MS) continue;
      const dev = (await Deno.readTextFile(`/sys/block/${e.name}/dev`)).trim();
      if (MAJOR_MINOR.test(dev)) return dev;
    }
    if (Date.now() > deadline) {
      throw new DeadlineExceededError(
        `Disk "${serial}" did not appear in the guest within ${APPEAR_TIMEOUT_MS / 1000} s`,
      );
    }
    await sleep(50);
  }
}

/** The disk a Task.Create's rootfs names as the container's bundle, checked; unset: none. */
export function bundleDiskOf(rootfs: readonly Mount[]): GuestDisk | undefined {
  if (rootfs[0]?.type !== BUNDLE_DISK_MOUNT) return undefined;
  const [m] = rootfs;
  const fstype = m.options[0] ?? "";
  if (rootfs.length !== 1 || !SERIAL.test(m.source) || !FSTYPE.test(fstype)) {
    throw new InvalidArgumentError(
      `A ${BUNDLE_DISK_MOUNT} mount must be the only one, with a serial and a file system type`,
    );
  }
  return { serial: m.source, fstype, options: [] };
}

/** The pod's disks in the guest, by serial, and the containers using each. */
export class GuestDisks {
  readonly #users = new Map<string, Set<string>>();
  /** Bundle disks, by container: where each is mounted. */
  readonly #bundles = new Map<string, { serial: string; bundle: string }>();
  /** Each disk's guest `major:minor`, once ready (a promise: two containers may race). */
  readonly #numbers = new Map<string, Promise<string>>();

  /**
   * Makes container `cid`'s disks ready and renumbers its devices; whether the spec changed.
   */
  async prepare(cid: string, spec: OciSpec): Promise<boolean> {
    const disks = disksOf(spec);
    let changed = false;
    for (const d of disks) {
      let ready = this.#numbers.get(d.serial);
      if (!ready) {
        ready = this.#ready(d);
        this.#numbers.set(d.serial, ready);
        ready.catch(() => this.#numbers.delete(d.serial));
      }
      const dev = await ready;
      // Mounted for the first container naming it with a file system: an earlier one may
      // have used the disk raw (`linux.devices`), which makes the node only.
      if (d.fstype) await this.#mounted({ ...d, fstype: d.fstype });
      const users = this.#users.get(d.serial) ?? new Set();
      users.add(cid);
      this.#users.set(d.serial, users);
      if (d.hostDevice && d.hostDevice !== dev) {
        changed = renumber(spec, d.hostDevice, dev) || changed;
      }
    }
    return changed;
  }

  /**
   * Mounts container `cid`'s bundle disk at `bundle`, which must be the bundle path a share
   * would have (`GUEST_SHARED_DIR/<cid>`): nothing a request names lands anywhere else.
   */
  async mountBundle(cid: string, disk: GuestDisk, bundle: string): Promise<void> {
    if (bundle !== join(GUEST_SHARED_DIR, cid) || cid.includes("/") || cid.startsWith(".")) {
      throw new InvalidArgumentError(
        `A bundle disk is mounted at ${GUEST_SHARED_DIR}/<container id> only, not "${bundle}"`,
      );
    }
    if (this.#bundles.has(cid) || this.#numbers.has(disk.serial)) {
      throw new InvalidArgumentError(`Disk "${disk.serial}" or container "${cid}" has one already`);
    }
    this.#bundles.set(cid, { serial: disk.serial, bundle });
    const ready = this.#ready(disk);
    this.#numbers.set(disk.serial, ready);
    await ready;
    if (await isMountPoint(bundle)) await unmountAll(bundle);
    await Deno.mkdir(bundle, { recursive: true, mode: 0o755 });
    const source = join(GUEST_DISK_DIR, `${disk.serial}.dev`);
    await mountAll([{ type: disk.fstype!, source, target: "", options: [] }], bundle);
    log.info("bundle disk mounted", { serial: disk.serial, container: cid });
  }

  /**
   * Turns read-ahead off on container `cid`'s bundle disk when its spec limits its memory.
   * At the limit, the kernel reclaims the container's program text to make room, and read-ahead
   * (whose allocations give up at once) brings it back: every charge then "makes progress", and
   * a container that outgrows its limit is never OOM-killed, only thrashes. Without read-ahead
   * its faults read a page each and the kernel's OOM killer ends it, as on a node.
   */
  async memoryLimited(cid: string, spec: OciSpec): Promise<void> {
    const b = this.#bundles.get(cid);
    const limit = Number(
      (spec.linux?.resources?.memory as { limit?: number } | undefined)?.limit ?? 0,
    );
    if (!b || !(limit > 0)) return;
    const dev = await this.#numbers.get(b.serial);
    if (!dev) return;
    await Deno.writeTextFile(`/sys/dev/block/${dev}/queue/read_ahead_kb`, "0");
    log.debug("bundle disk read-ahead off (memory limit)", { serial: b.serial, container: cid });
  }

  /** Container `cid` is gone: its bundle disk, and the disks nobody else uses, are unmounted. */
  async release(cid: string): Promise<void> {
    const b = this.#bundles.get(cid);
    if (b) {
      this.#bundles.delete(cid);
      this.#numbers.delete(b.serial);
      await unmountInFull(b.bundle);
      await Deno.remove(b.bundle).catch(() => {});
      await Deno.remove(join(GUEST_DISK_DIR, `${b.serial}.dev`)).catch(() => {});
      log.info("bundle disk released", { serial: b.serial, container: cid });
    }
    for (const [serial, users] of this.#users) {
      if (!users.delete(cid) || users.size) continue;
      this.#users.delete(serial);
      this.#numbers.delete(serial);
      this.#mounts.delete(serial);
      const target = join(GUEST_DISK_DIR, serial);
      await unmountAll(target);
      await Deno.remove(target).catch(() => {});
      await Deno.remove(`${target}.dev`).catch(() => {});
      log.info("disk released", { serial, container: cid });
    }
  }

  /** Each disk's file system, once mounted (a promise: two containers may race). */
  readonly #mounts = new Map<string, Promise<void>>();

  /** Finds the disk and makes its node. */
  async #ready(d: GuestDisk): Promise<string> {
    const dev = await findDisk(d.serial);
    await Deno.mkdir(GUEST_DISK_DIR, { recursive: true, mode: 0o700 });
    const node = join(GUEST_DISK_DIR, `${d.serial}.dev`);
    await Deno.remove(node).catch(() => {});
    const [major, minor] = dev.split(":");
    await runChecked(["mknod", "-m", "0600", node, "b", major, minor]);
    // A VMM that re-points a device at another file (Firecracker's drive slots) leaves what
    // the guest cached of the previous one: never read as this disk's.
    await runChecked(["blockdev", "--flushbufs", node]);
    log.info("disk ready", { serial: d.serial, device: dev });
    return dev;
  }

  /** Mounts the disk's file system at `GUEST_DISK_DIR/<serial>`, once. */
  #mounted(d: GuestDisk & { fstype: string }): Promise<void> {
    let m = this.#mounts.get(d.serial);
    if (!m) {
      const target = join(GUEST_DISK_DIR, d.serial);
      m = (async () => {
        if (await isMountPoint(target)) return;
        await Deno.mkdir(target, { recursive: true, mode: 0o755 });
        const source = join(GUEST_DISK_DIR, `${d.serial}.dev`);
        await mountAll([{ type: d.fstype, source, target: "", options: d.options ?? [] }], target);
        log.info("disk mounted", { serial: d.serial, fstype: d.fstype });
      })();
      this.#mounts.set(d.serial, m);
      m.catch(() => this.#mounts.delete(d.serial));
    }
    return m;
  }
}

/** How long a busy bundle file system is waited for before it is let go lazily. */
const BUSY_WAIT_MS = 2_000;

/**
 * Unmounts a bundle disk's file system for good before its disk goes: a lazy unmount would
 * leave it alive while anything holds it, and a VMM that re-points the device at another
 * file (Firecracker's slots) would have it read and write that file.
 */
async function unmountInFull(target: string): Promise<void> {
  const deadline = Date.now() + BUSY_WAIT_MS;
  for (;;) {
    for (const p of (await mountsUnder(target)).filter((p) => p !== target)) {
      await runCommand(["umount", p]);
    }
    if (!(await isMountPoint(target))) return;
    const r = await runCommand(["umount", target]);
    if (r.code === 0) return;
    if (Date.now() > deadline) {
      log.warn("bundle disk busy: unmounted lazily", { target, why: r.stderr.trim() });
      await unmountAll(target);
      return;
    }
    await sleep(100);
  }
}

/** Points `linux.devices` and device cgroup rules naming host `from` at guest `to`. */
function renumber(spec: OciSpec, from: string, to: string): boolean {
  const [fm, fn] = from.split(":").map(Number);
  const [tm, tn] = to.split(":").map(Number);
  let changed = false;
  const lists = [
    (spec.linux?.devices ?? []) as { major?: number; minor?: number }[],
    (spec.linux?.resources?.devices ?? []) as { major?: number; minor?: number }[],
  ];
  for (const list of lists) {
    for (const d of list) {
      if (d.major !== fm || d.minor !== fn) continue;
      d.major = tm;
      d.minor = tn;
      changed = true;
    }
  }
  return changed;
}
