/**
 * Mounting container root filesystems and taking mounts down again, with
 * util-linux's mount/umount (argv only) and /proc/self/mountinfo.
 *
 * @module
 */
import type { Mount } from "../../domain/task.ts";
import type { RootfsMount } from "../../ports/supervisor.ts";
import { InvalidArgumentError } from "../../domain/errors.ts";
import { runChecked, runCommand } from "./command.ts";
import { mountSyscall, SyscallError, syscallsAvailable, unmountSyscall } from "./syscalls.ts";

/** Decodes the octal escapes mountinfo uses for spaces and other bytes. */
function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));
}

/** Mount points currently under `prefix` (inclusive), deepest first. */
export async function mountsUnder(prefix: string): Promise<string[]> {
  const text = await Deno.readTextFile("/proc/self/mountinfo");
  const base = prefix.endsWith("/") ? prefix.slice(0, -1) : prefix;
  const points = new Set<string>();
  for (const line of text.split("\n")) {
    const f = line.split(" ");
    if (f.length < 5) continue;
    const mp = unescape(f[4]);
    if (mp === base || mp.startsWith(base + "/")) points.add(mp);
  }
  return [...points].sort((a, b) => b.length - a.length);
}

/** The file system type mounted exactly at `path` (the topmost), undefined when none is. */
export async function fsTypeAt(path: string): Promise<string | undefined> {
  const text = await Deno.readTextFile("/proc/self/mountinfo");
  const want = path.endsWith("/") ? path.slice(0, -1) : path;
  let type: string | undefined;
  for (const line of text.split("\n")) {
    const [pre, post] = line.split(" - ");
    if (!post || unescape(pre.split(" ")[4] ?? "") !== want) continue;
    type = post.split(" ")[0];
  }
  return type;
}

/** Whether `path` is a mount point. */
export async function isMountPoint(path: string): Promise<boolean> {
  return (await mountsUnder(path)).includes(path.endsWith("/") ? path.slice(0, -1) : path);
}

/** Whether a containerd mount is a bind mount (by its type or its options). */
function isBind(m: Mount): boolean {
  return m.type === "bind" || m.type === "rbind" ||
    m.options.some((o) => o === "bind" || o === "rbind");
}

/** A containerd mount as mount(2) takes it: a bind has no type and says so in its options. */
function asSyscallMount(m: Mount, target: string): RootfsMount {
  const bind = isBind(m);
  const options = bind && !m.options.some((o) => o === "bind" || o === "rbind")
    ? [m.type === "rbind" ? "rbind" : "bind", ...m.options]
    : m.options;
  return { target, source: m.source || m.type || "none", type: bind ? "" : m.type, options };
}

/** The kernel takes at most a page of mount data; some room is left for what a runtime adds. */
const MAX_MOUNT_DATA = 3072;
/** The helper's limit (MAX_ROOTFS_MOUNTS in native/monitor.c). */
const MAX_NAMESPACE_MOUNTS = 8;

/**
 * Task.Create's rootfs mounts as the runtime's own mount namespace takes them
 * (see MonitoredProcess.rootfsMounts), or undefined when one needs more than
 * mount(2) (a mount(8) helper, an option string beyond a page): those are
 * mounted on the node as before.
 */
export function namespaceRootfsMounts(
  mounts: readonly Mount[],
  target: string,
): RootfsMount[] | undefined {
  if (!mounts.length || mounts.length > MAX_NAMESPACE_MOUNTS) return undefined;
  const simple = mounts.every((m) =>
    (isBind(m) || m.type === "overlay") && m.options.join(",").length <= MAX_MOUNT_DATA
  );
  return simple ? mounts.map((m) => asSyscallMount(m, target)) : undefined;
}

/** Mounts containerd rootfs mounts onto `target`, in order. */
export async function mountAll(mounts: readonly Mount[], target: string): Promise<void> {
  await Deno.mkdir(target, { recursive: true });
  for (const m of mounts) {
    const bind = isBind(m);
    if (syscallsAvailable()) {
      const s = asSyscallMount(m, target);
      try {
        await mountSyscall(s.source, target, s.type, s.options);
        continue;
      } catch (e) {
        // mount(8) knows more (helpers like mount.fuse): let it try and report.
        if (!(e instanceof SyscallError)) throw e;
      }
    }
    const args = ["mount"];
    if (!bind && m.type) args.push("-t", m.type);
    let opts = m.options;
    if (bind && !opts.some((o) => o === "bind" || o === "rbind")) {
      opts = [m.type === "rbind" ? "rbind" : "bind", ...opts];
    }
    if (opts.length) args.push("-o", opts.join(","));
    args.push(m.source || m.type || "none", target);
    await runChecked(args);
  }
}

/** Lazily unmounts everything at or under `prefix`. Errors are ignored: the goal is "nothing left". */
export async function unmountAll(prefix: string): Promise<void> {
  // A round takes the top mount of each point; mounts stacked on one point (runsc's null-netns,
  // one per sandbox started at once) need as many rounds.
  for (let round = 0; round < 64; round++) {
    const points = await mountsUnder(prefix);
    if (!points.length) return;
    for (const p of points) {
      try {
        await unmountSyscall(p);
      } catch {
        await runCommand(["umount", "-l", p]).catch(() => {});
      }
    }
  }
}

/**
 * Makes every mount under `prefix` read-only and refuse to follow symlinks (MS_NOSYMFOLLOW,
 * Linux 5.10): what reads the tree then gets exactly what it lists, even while someone else
 * swaps a listed file for a symlink to elsewhere on the host. Symlinks themselves stay
 * readable (readlink), so they are copied as links.
 */
export async function lockForReading(prefix: string): Promise<void> {
  for (const p of await mountsUnder(prefix)) {
    const options = ["remount", "bind", "ro", "nosymfollow"];
    try {
      if (!syscallsAvailable()) throw new SyscallError("no libc");
      await mountSyscall("", p, "", options);
    } catch (e) {
      if (!(e instanceof SyscallError)) throw e;
      await runChecked(["mount", "-o", options.join(","), p]);
    }
  }
}

/** Bind-mounts `source` (a file or a directory, recursively) onto an existing `target`. */
export async function bindMount(source: string, target: string): Promise<void> {
  if (syscallsAvailable()) {
    try {
      await mountSyscall(source, target, "", ["rbind"]);
      return;
    } catch (e) {
      if (!(e instanceof SyscallError)) throw e;
    }
  }
  await runChecked(["mount", "--rbind", source, target]);
}

/**
 * Mounts Task.Create's rootfs mounts at `target` (`<bundle>/rootfs`), made
 * 0711 as containerd's shim does. A `target` that is a symlink is refused:
 * mount(2) would follow it and mount over wherever it points.
 */
export async function mountRootfs(mounts: readonly Mount[], target: string): Promise<void> {
  await prepareRootfsTarget(target);
  await mountAll(mounts, target);
}

/** Makes `target` a directory for rootfs mounts (0711), refusing anything else there (a symlink). */
export async function prepareRootfsTarget(target: string): Promise<void> {
  const st = await Deno.lstat(target).catch((e) => {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  });
  if (st && !st.isDirectory) {
    throw new InvalidArgumentError(`Invalid bundle: "${target}" exists and is not a directory`);
  }
  if (!st) await Deno.mkdir(target, { mode: 0o711 });
}

/**
 * Takes down the `count` mounts the daemon stacked at `target` (its rootfs
 * mounts), topmost first, and nothing else: no mount below another path, and
 * none at `target` beyond those (the target stops being a mount point).
 * MNT_DETACH, because an rbind's own submounts go with it.
 */
export async function unmountOwn(target: string, count: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    if (syscallsAvailable()) {
      try {
        await unmountSyscall(target);
        continue;
      } catch { /* not a mount point (any more), or umount(8) can say why */ }
    }
    if (!await isMountPoint(target)) return;
    await runChecked(["umount", "-l", target]);
  }
}
