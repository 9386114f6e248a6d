/**
 * A container spec as the guest must see it. containerd writes specs for the
 * host: namespace files under the host's /proc, bind mounts of host paths
 * (volumes, /etc/hosts, the pod's /dev/shm), a host cgroup path. In a VM the
 * pod is the whole guest, so:
 *
 * - network, ipc and uts are the VM's own (the entries are dropped: runc
 *   then keeps the agent's); other namespaces are new ones (paths dropped),
 *   except a pid namespace the pod shares (containerd names the sandbox's):
 *   it becomes the guest's pod pid namespace (`POD_PID_NS`);
 * - every bind mount of a host path is shared into the guest: the host
 *   bind-mounts the source under the container's shared directory, and the
 *   guest spec names it there; except a memory-backed volume (a kubelet
 *   emptyDir on tmpfs), which becomes a tmpfs of the guest's, one per volume
 *   for the whole pod (`GUEST_EPHEMERAL_DIR`), as Kuasar does;
 * - the rootfs is `rootfs` in the shared bundle; the cgroup is
 *   `/kuasar/<container>` in the guest's hierarchy; hooks stay: the guest's
 *   runc runs those whose program the guest has (the agent drops the others);
 * - `ociVersion` 1.x names 1.0.2 (what the guest's crun accepts);
 * - cpusets go, as Kuasar clears them: they name the host's CPUs and memory
 *   nodes (a static CPU manager pins `12-15`), which a 2-vCPU guest lacks;
 * - what became a disk of the VM (disk_sources.ts) is named where the guest
 *   has it: a file system at `GUEST_DISK_DIR/<serial>` (a rootfs there too),
 *   a raw device at `GUEST_DISK_DIR/<serial>.dev`; `linux.devices` keep the
 *   host's numbers, which the agent renumbers; the disks are listed in the
 *   `DISKS_ANNOTATION` for the agent to find and mount first.
 *
 * Pure: the host performs the returned shares.
 *
 * @module
 */
import type { OciSpec } from "../../domain/oci.ts";
import {
  DISKS_ANNOTATION,
  GUEST_DISK_DIR,
  GUEST_EPHEMERAL_DIR,
  type GuestDisk,
  POD_PID_NS,
} from "../../ports/agent_protocol.ts";

/** A host path the guest spec expects under the container's shared directory. */
export interface Share {
  /** Host path (file or directory). */
  readonly source: string;
  /** Name under the container's shared directory, e.g. `m0`. */
  readonly name: string;
}

/** The guest's spec and what the host must share for it. */
export interface GuestSpec {
  readonly spec: OciSpec;
  readonly shares: readonly Share[];
}

const VM_NAMESPACES = new Set(["network", "net", "ipc", "uts"]);

function isBind(m: { type?: string; options?: string[] }): boolean {
  return m.type === "bind" || (m.options ?? []).some((o) => o === "bind" || o === "rbind");
}

/** The guest's name of a memory volume: the same for every container of the pod that mounts it. */
export function ephemeralName(hostPath: string): string {
  let h = 0x811c9dc5;
  for (const ch of hostPath) h = Math.imul(h ^ ch.charCodeAt(0), 0x01000193) >>> 0;
  const base = hostPath.slice(hostPath.lastIndexOf("/") + 1).replace(/[^A-Za-z0-9_.-]/g, "_");
  return `${base.slice(0, 40)}-${h.toString(16).padStart(8, "0")}`;
}

/** The container's disks as the guest has them (serials given), by where the spec uses them. */
export interface GuestDisks {
  /** By index in `spec.mounts`. */
  readonly mounts: ReadonlyMap<number, GuestDisk>;
  readonly rootfs?: GuestDisk;
  /** By index in `spec.linux.devices`. */
  readonly devices: ReadonlyMap<number, GuestDisk>;
}

/** Options a bind mount of a disk keeps (a file system's own options went to its mount). */
const BIND_FLAGS = new Set([
  "ro",
  "rw",
  "nosuid",
  "nodev",
  "noexec",
  "private",
  "rprivate",
  "slave",
  "rslave",
  "shared",
  "rshared",
]);

const NO_DISKS: GuestDisks = { mounts: new Map(), devices: new Map() };

/** Where the guest has a disk: its mount point, or its device node when raw. */
export function guestDiskPath(d: GuestDisk): string {
  return d.fstype ? `${GUEST_DISK_DIR}/${d.serial}` : `${GUEST_DISK_DIR}/${d.serial}.dev`;
}

/**
 * Rewrites `spec` (a copy) for container `id` whose bundle is `guestBundle` in the guest;
 * `inMemory` says which host paths are memory-backed volumes, `disks` which parts are disks.
 */
export function guestSpec(
  spec: OciSpec,
  id: string,
  guestBundle: string,
  inMemory: (hostPath: string) => boolean = () => false,
  disks: GuestDisks = NO_DISKS,
): GuestSpec {
  const s: OciSpec = structuredClone(spec);
  const shares: Share[] = [];
  // The guest's crun (Debian's 1.8; the check is a substring) refuses a version not naming 1.0,
  // such as containerd 2.x's 1.2.1; runc does not look. Later 1.x versions only add fields,
  // which both read regardless.
  if (/^1\./.test(s.ociVersion ?? "") && !s.ociVersion!.includes("1.0")) s.ociVersion = "1.0.2";
  s.root = { ...s.root, path: disks.rootfs ? guestDiskPath(disks.rootfs) : "rootfs" };
  s.mounts = (s.mounts ?? []).map((m, i) => {
    const disk = disks.mounts.get(i);
    if (disk) {
      // The guest's mount of the disk (or its device node), bound where the spec wants it.
      const keep = (m.options ?? []).filter((o) => BIND_FLAGS.has(o));
      return { ...m, type: "bind", source: guestDiskPath(disk), options: ["rbind", ...keep] };
    }
    if (!isBind(m) || !m.source?.startsWith("/")) return m;
    if (inMemory(m.source)) {
      return { ...m, source: `${GUEST_EPHEMERAL_DIR}/${ephemeralName(m.source)}` };
    }
    const name = `m${shares.length}`;
    shares.push({ source: m.source, name });
    return { ...m, source: `${guestBundle}/${name}` };
  });
  // The host's word to the agent: a spec's own (a pod author's annotation) never reaches it.
  if (s.annotations) delete s.annotations[DISKS_ANNOTATION];
  const used = [...disks.mounts.values(), ...disks.devices.values()];
  if (disks.rootfs) used.push(disks.rootfs);
  if (used.length) {
    const bySerial = new Map<string, GuestDisk>();
    for (const d of used) {
      const had = bySerial.get(d.serial);
      bySerial.set(d.serial, {
        ...had,
        ...d,
        fstype: d.fstype ?? had?.fstype,
        hostDevice: d.hostDevice ?? had?.hostDevice,
      });
    }
    s.annotations = {
      ...s.annotations,
      [DISKS_ANNOTATION]: JSON.stringify([...bySerial.values()]),
    };
  }
  if (s.linux) {
    s.linux.namespaces = (s.linux.namespaces ?? [])
      .filter((n) => !VM_NAMESPACES.has(n.type))
      .map((n) =>
        n.type === "pid" && n.path ? { type: "pid", path: POD_PID_NS } : { type: n.type }
      );
    s.linux.cgroupsPath = `/kuasar/${id}`;
    const cpu = s.linux.resources?.cpu;
    if (cpu && typeof cpu === "object") {
      delete (cpu as Record<string, unknown>).cpus;
      delete (cpu as Record<string, unknown>).mems;
    }
  }
  return { spec: s, shares };
}
