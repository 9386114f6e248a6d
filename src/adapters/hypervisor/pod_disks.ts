/**
 * The disks hot-plugged into a pod's VM: block volumes (a host block device,
 * bind-mounted or named in `linux.devices`), a block-device or image-file
 * rootfs. One disk per host source and pod, shared by the containers using
 * it, and detached once the last of them is deleted.
 *
 * The record is `<dir>/<pod>/disks.json` (the host's side of the pod, never
 * shared with the guest), so a restarted daemon still detaches what it
 * attached; every change is written before it is acted on.
 *
 * @module
 */
import { join } from "node:path";
import {
  FailedPreconditionError,
  InvalidArgumentError,
  ResourceExhaustedError,
} from "../../domain/errors.ts";
import { log } from "../../lib/log.ts";
import { KeyedMutex } from "../../lib/sync.ts";
import type { DiskAttachment } from "../../ports/hypervisor.ts";

/** What attaches disks to a pod's VM (the Hypervisor, for that pod). */
export interface DiskHost {
  /** How many disks a VM can have attached at once; 0: no hot-plug. */
  readonly slots: number;
  /** Resolves with the serial the guest sees. */
  attach(sandboxId: string, disk: DiskAttachment): Promise<string>;
  detach(sandboxId: string, disk: Pick<DiskAttachment, "id" | "slot">): Promise<void>;
}

interface DiskEntry {
  id: string;
  source: string;
  readOnly: boolean;
  serial: string;
  slot: number;
  /** Containers using it. */
  users: string[];
  /** Set once its detach has begun: no new user takes it. */
  leaving?: boolean;
  /**
   * Set when its detach failed: the slot may still hold the disk (a Firecracker drive still
   * pointing at the file), so it is not reused; the detach is tried again at the pod's next
   * disk operation.
   */
  stuck?: boolean;
}

interface DiskFile {
  next: number;
  disks: DiskEntry[];
}

/** A pod's hot-plugged disks. */
export class PodDisks {
  readonly #dir: string;
  readonly #host: DiskHost;
  readonly #lock = new KeyedMutex();
  /** Disk ids whose detach runs. */
  readonly #detaching = new Set<string>();
  #log = log.with({ component: "vm-disks" });

  constructor(dir: string, host: DiskHost) {
    this.#dir = dir;
    this.#host = host;
  }

  get hotplug(): boolean {
    return this.#host.slots > 0;
  }

  /**
   * The serial of the disk of `source` for container `cid`: attached now, or the one the pod
   * has already (`readOnly` must then match).
   */
  acquire(sandboxId: string, cid: string, source: string, readOnly: boolean): Promise<string> {
    return this.#lock.run(sandboxId, async () => {
      const f = await this.#read(sandboxId);
      this.#resumeDetaches(sandboxId, f);
      const had = f.disks.find((d) => d.source === source && !d.leaving);
      if (had) {
        if (had.readOnly !== readOnly) {
          throw new InvalidArgumentError(
            `"${source}" is attached to the pod ${had.readOnly ? "read-only" : "read-write"} ` +
              "already: every container must mount it the same way",
          );
        }
        if (!had.users.includes(cid)) had.users.push(cid);
        await this.#write(sandboxId, f);
        return had.serial;
      }
      const used = new Set(f.disks.map((d) => d.slot));
      let slot = 0;
      while (used.has(slot)) slot++;
      if (slot >= this.#host.slots) {
        throw new ResourceExhaustedError(
          `The pod's VM has all its ${this.#host.slots} disk slots in use`,
        );
      }
      const n = f.next++;
      const disk: DiskEntry = {
        id: `kdisk${n}`,
        source,
        readOnly,
        serial: `kuasar-${n}`,
        slot,
        users: [cid],
      };
      f.disks.push(disk);
      await this.#write(sandboxId, f);
      try {
        const serial = await this.#host.attach(sandboxId, { ...disk, path: disk.source });
        // The VMM's own serial (Firecracker's, made from the file): the guest finds a disk by
        // it, so one the pod has already would be ambiguous.
        if (f.disks.some((d) => d !== disk && d.serial === serial)) {
          disk.leaving = true;
          await this.#write(sandboxId, f);
          this.#detach(sandboxId, disk);
          throw new FailedPreconditionError(
            `"${source}" would show in the guest as serial ${serial}, which another disk of the ` +
              "pod has",
          );
        }
        disk.serial = serial;
        await this.#write(sandboxId, f);
      } catch (e) {
        if (disk.leaving) throw e;
        f.disks = f.disks.filter((d) => d !== disk);
        await this.#write(sandboxId, f);
        throw e;
      }
      this.#log.info("disk attached", { sandbox: sandboxId, source, serial: disk.serial, cid });
      return disk.serial;
    });
  }

  /** `acquire` for container `cid` of the pod, as makeShare takes it; unset without hot-plug. */
  attacher(
    sandboxId: string,
    cid: string,
  ): ((source: string, readOnly: boolean) => Promise<string>) | undefined {
    if (!this.hotplug) return undefined;
    return (source, readOnly) => this.acquire(sandboxId, cid, source, readOnly);
  }

  /**
   * Container `cid` no longer uses its disks: those nobody else uses are detached, in the
   * background (the guest takes seconds to let a PCIe device go).
   */
  release(sandboxId: string, cid: string): Promise<void> {
    return this.#lock.run(sandboxId, async () => {
      const f = await this.#read(sandboxId);
      const leaving: DiskEntry[] = [];
      for (const d of f.disks) {
        if (!d.users.includes(cid)) continue;
        d.users = d.users.filter((u) => u !== cid);
        if (!d.users.length && !d.leaving) {
          d.leaving = true;
          leaving.push(d);
        }
      }
      await this.#write(sandboxId, f);
      for (const d of leaving) this.#detach(sandboxId, d);
      this.#resumeDetaches(sandboxId, f);
    });
  }

  /** Detaches a previous daemon began and did not see end. */
  #resumeDetaches(sandboxId: string, f: DiskFile): void {
    for (const d of f.disks) {
      if (d.leaving && !this.#detaching.has(d.id)) this.#detach(sandboxId, d);
    }
  }

  /**
   * Detaches `d`, then forgets it; a failed detach keeps its slot taken (`stuck`) until a later
   * try succeeds or the pod goes.
   */
  #detach(sandboxId: string, d: DiskEntry): void {
    this.#detaching.add(d.id);
    this.#host.detach(sandboxId, d).then(
      () => {
        this.#log.info("disk detached", { sandbox: sandboxId, serial: d.serial });
        return true;
      },
      (e) => {
        this.#log.warn("disk not detached: its slot stays taken", {
          sandbox: sandboxId,
          id: d.id,
          error: e,
        });
        return false;
      },
    ).then((done) =>
      this.#lock.run(sandboxId, async () => {
        const f = await this.#read(sandboxId);
        if (done) f.disks = f.disks.filter((x) => x.id !== d.id);
        else f.disks = f.disks.map((x) => x.id === d.id ? { ...x, stuck: true } : x);
        await this.#write(sandboxId, f);
      })
    ).catch(() => {}).finally(() => this.#detaching.delete(d.id));
  }

  #path(sandboxId: string): string {
    return join(this.#dir, sandboxId, "disks.json");
  }

  async #read(sandboxId: string): Promise<DiskFile> {
    const text = await Deno.readTextFile(this.#path(sandboxId)).catch(() => undefined);
    if (!text) return { next: 0, disks: [] };
    const f = JSON.parse(text) as DiskFile;
    return { next: Number(f.next) || 0, disks: Array.isArray(f.disks) ? f.disks : [] };
  }

  async #write(sandboxId: string, f: DiskFile): Promise<void> {
    const path = this.#path(sandboxId);
    const tmp = `${path}.tmp`;
    await Deno.writeTextFile(tmp, JSON.stringify(f), { mode: 0o600 });
    await Deno.rename(tmp, path);
  }
}
