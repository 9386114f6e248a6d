/**
 * Files a pod's containers share: /etc/hostname, /etc/hosts and
 * /etc/resolv.conf (from the PodSandboxConfig), and a /dev/shm tmpfs; on
 * the node for runC and gVisor pods, in the guest for VM pods (its agent
 * writes them at SetupSandbox).
 *
 * containerd only creates these for its own pause-container sandboxes; with
 * a sandboxer it bind-mounts them if they exist in *its* sandbox directory,
 * which it deletes on every restart. So the sandboxer provides them (as
 * Kuasar's microVM sandboxer does) and adds the mounts to container specs
 * that do not mount those paths themselves (kubelet, for one, mounts its own
 * /etc/hosts).
 *
 * @module
 */
import { checkNetnsPath } from "./netns.ts";
import { checkPodSysctls } from "../../domain/sysctls.ts";
import { join } from "node:path";
import { type PodConfig, resolvConf } from "../../domain/pod_config.ts";
import { mountAll } from "./mounts.ts";
import type { OciSpec } from "../../domain/oci.ts";
import type { SandboxRecord } from "../../domain/sandbox.ts";

/** Size of a pod's shared /dev/shm, as containerd gives pause-container pods. */
export const SHM_SIZE = "64m";

/**
 * Where a container binds its pod's /dev/shm from when the pod's init holds it as a tmpfs
 * attached to no mount table (`kuasar-helper hold --shm-size`: native/pod_shm.c, whose
 * POD_SHM_FD this is), as it joins the init's namespaces through /proc/<pid>/ns.
 */
export function detachedShmSource(initPid: number): string {
  return `/proc/${initPid}/fd/63`;
}

/** Directory of a pod's shared files. */
export function podFilesDir(sandboxDir: string): string {
  return join(sandboxDir, "files");
}

/**
 * Mode of the pod's shared files: a container's processes, whatever their
 * user, read them (and nobody but root writes them).
 */
export const POD_FILE_MODE = 0o644;

/**
 * Writes `text` to `path` with exactly `mode`: a mode given at creation goes
 * through the daemon's umask (a umask of 0 made these files world-writable, a
 * umask of 077 unreadable for a container's non-root user), and a file that
 * already exists keeps its old mode.
 */
export async function writeFileWithMode(path: string, text: string, mode: number): Promise<void> {
  await Deno.writeTextFile(path, text, { mode });
  await Deno.chmod(path, mode);
}

/**
 * Writes hostname, hosts and resolv.conf, and mounts the shm tmpfs (unless the pod uses host IPC,
 * has it already, or gets it elsewhere: `mountShm` false). The hosts file is this machine's (a
 * VM's guest has none: localhost); the resolv.conf is the pod's DNS, else this machine's (a VM's
 * host sends the node's as the pod's).
 */
export async function preparePodFiles(
  sandboxDir: string,
  pod: Pick<PodConfig, "hostname" | "dns" | "ipc">,
  mountShm = true,
): Promise<void> {
  const dir = podFilesDir(sandboxDir);
  await Deno.mkdir(dir, { recursive: true, mode: 0o755 });
  await Deno.chmod(dir, 0o755);
  const hostname = pod.hostname || Deno.hostname();
  await writeFileWithMode(join(dir, "hostname"), hostname + "\n", POD_FILE_MODE);
  const hosts = await Deno.readTextFile("/etc/hosts").catch(() =>
    "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
  );
  await writeFileWithMode(join(dir, "hosts"), hosts, POD_FILE_MODE);
  const resolv = resolvConf(pod.dns) ??
    await Deno.readTextFile("/etc/resolv.conf").catch(() => "");
  await writeFileWithMode(join(dir, "resolv.conf"), resolv, POD_FILE_MODE);
  const shm = join(dir, "shm");
  if (mountShm && pod.ipc !== "node" && !(await hasOwnDevice(shm, dir))) {
    // mount(2), not mount(8): with a thousand pods the node has thousands of mounts, and
    // mount(8) reads them all (as would a look at /proc/self/mountinfo) on every pod start.
    await mountAll([{
      type: "tmpfs",
      source: "shm",
      target: "",
      options: ["nosuid", "nodev", "noexec", "mode=1777", `size=${SHM_SIZE}`],
    }], shm);
  }
}

/** Whether something is mounted at `path` with a file system of its own (a tmpfs we mounted). */
async function hasOwnDevice(path: string, parent: string): Promise<boolean> {
  const [a, b] = await Promise.all([Deno.stat(path).catch(() => null), Deno.stat(parent)]);
  return a !== null && a.dev !== b.dev;
}

/**
 * Adds bind mounts of the pod's files to a container spec, for each path
 * the spec does not mount itself; a tmpfs /dev/shm of the spec's own becomes
 * the pod's shared one: `shmSource` where the pod's shm is held elsewhere (`detachedShmSource`),
 * else the tmpfs in the pod's files, if it has one. Returns whether the spec changed.
 */
export async function addPodFileMounts(
  spec: OciSpec,
  sandboxDir: string,
  shmSource?: string,
): Promise<boolean> {
  const dir = podFilesDir(sandboxDir);
  const mounts = spec.mounts ??= [];
  const has = (dest: string) => mounts.some((m) => m.destination.replace(/\/+$/, "") === dest);
  const ro = spec.root?.readonly ? "ro" : "rw";
  let changed = false;
  for (const f of ["hostname", "hosts", "resolv.conf"]) {
    if (has(`/etc/${f}`)) continue;
    mounts.push({
      destination: `/etc/${f}`,
      type: "bind",
      source: join(dir, f),
      options: ["rbind", "rprivate", ro],
    });
    changed = true;
  }
  const shm = shmSource ?? join(dir, "shm");
  const exists = shmSource !== undefined || await Deno.stat(shm).then(() => true, () => false);
  const own = mounts.findIndex((m) => m.destination.replace(/\/+$/, "") === "/dev/shm");
  if (exists && (own < 0 || mounts[own].type === "tmpfs")) {
    const m = {
      destination: "/dev/shm",
      type: "bind",
      source: shm,
      options: ["rbind", "rprivate", "rw"],
    };
    if (own >= 0) mounts[own] = m;
    else {
      // Before any mount beneath it (a volume at /dev/shm/x), which it would otherwise cover.
      const under = mounts.findIndex((x) => x.destination.startsWith("/dev/shm/"));
      mounts.splice(under < 0 ? mounts.length : under, 0, m);
    }
    changed = true;
  }
  return changed;
}

/**
 * Controller.Create for pods made of host processes (runC, gVisor): the CNI
 * netns must be a network namespace, sysctls must be ones a pod may set, and the pod's shared
 * files are written (the shm tmpfs unless `mountShm` is false: the pod holds it elsewhere).
 */
export async function preparePod(
  sandboxDir: string,
  record: SandboxRecord,
  mountShm = true,
): Promise<void> {
  if (record.netnsPath) await checkNetnsPath(record.netnsPath);
  checkPodSysctls(record.pod);
  await preparePodFiles(sandboxDir, record.pod, mountShm);
}
