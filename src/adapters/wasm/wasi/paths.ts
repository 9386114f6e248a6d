/**
 * Resolution of guest paths inside a preopened directory, the way a chroot
 * would: `..` stops at the preopen's root and symbolic links are followed
 * inside it (an absolute link target means the preopen's root), so no guest
 * path ever names a host file outside the directory it was given.
 *
 * @module
 */

/** Why a guest path could not be resolved. */
export class PathError extends Error {
  readonly errno: number;
  constructor(errno: number, message: string) {
    super(message);
    this.errno = errno;
  }
}

/** WASI errno values used by resolution. */
export const E = {
  ENOENT: 44,
  ENOTDIR: 54,
  ELOOP: 32,
  ENAMETOOLONG: 37,
  ENOTCAPABLE: 76,
  EINVAL: 28,
} as const;

const MAX_LINKS = 40;
const MAX_PATH = 4096;

function lstat(path: string): Deno.FileInfo | undefined {
  try {
    return Deno.lstatSync(path);
  } catch {
    return undefined;
  }
}

/**
 * The host path of guest path `rel`, relative to the directory `base` (a
 * list of components under `root`). With `followLast`, a final symlink is
 * followed too. Components that do not exist are allowed only as the last one
 * (for creating files and directories).
 */
export function resolveIn(
  root: string,
  base: readonly string[],
  rel: string,
  followLast: boolean,
): string {
  if (rel.length > MAX_PATH) throw new PathError(E.ENAMETOOLONG, "path too long");
  if (rel.includes("\0")) throw new PathError(E.EINVAL, "NUL in path");
  // Absolute guest paths are relative to the preopen (WASI resolves them against the dir fd).
  const stack = rel.startsWith("/") ? [] : [...base];
  const pending = rel.split("/").filter((c) => c !== "" && c !== ".");
  let links = 0;
  while (pending.length) {
    const c = pending.shift()!;
    if (c === "..") {
      if (!stack.length) throw new PathError(E.ENOTCAPABLE, "path escapes its preopened directory");
      stack.pop();
      continue;
    }
    const host = root + "/" + [...stack, c].join("/");
    const last = pending.length === 0;
    const st = lstat(host);
    if (st?.isSymlink && (!last || followLast)) {
      if (++links > MAX_LINKS) throw new PathError(E.ELOOP, "too many symbolic links");
      const target = Deno.readLinkSync(host);
      if (target.startsWith("/")) stack.length = 0;
      pending.unshift(...target.split("/").filter((x) => x !== "" && x !== "."));
      continue;
    }
    if (!last) {
      if (!st) throw new PathError(E.ENOENT, `no such directory "${c}"`);
      if (!st.isDirectory) throw new PathError(E.ENOTDIR, `"${c}" is not a directory`);
    }
    stack.push(c);
  }
  return stack.length ? root + "/" + stack.join("/") : root;
}

/** The components of `host` below `root` (for directory fds). */
export function componentsUnder(root: string, host: string): string[] {
  if (host === root) return [];
  return host.slice(root.length + 1).split("/").filter(Boolean);
}
