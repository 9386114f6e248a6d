/**
 * The sandboxer's `--dir` holds every pod's state, bundles and sockets, and
 * the daemon acts on what it finds there as root (recovery re-mounts, kills
 * and removes). So it must be the daemon's own: created 0700 when missing,
 * and refused when another user could have written into it.
 *
 * Refused (exit 2, with what to fix): a symlink, not a directory, owned by
 * another user, or writable by group or others. In those cases someone else
 * may already have planted entries (a symlink where a pod's directory will
 * be, a forged `sandbox.json`); fixing the mode now would not undo that, so
 * an operator has to look. Readable by group or others only: tightened to
 * 0700 with a warning, since nothing can have been written, only read.
 *
 * @module
 */
import { InvalidArgumentError } from "../domain/errors.ts";
import { log } from "../lib/log.ts";

/** Creates `dir` (0700) or checks an existing one; throws `InvalidArgumentError` when unsafe. */
export async function prepareStateDir(dir: string): Promise<void> {
  let st: Deno.FileInfo;
  try {
    st = await Deno.lstat(dir);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    // mkdir's mode goes through the umask; say it exactly.
    await Deno.chmod(dir, 0o700);
    return;
  }
  const problem = stateDirProblem(st, Deno.uid() ?? 0);
  if (problem) {
    throw new InvalidArgumentError(`Refusing --dir "${dir}": ${problem}`);
  }
  if ((st.mode ?? 0) & 0o077) {
    log.warn("--dir was readable by other users: mode set to 0700", {
      dir,
      mode: ((st.mode ?? 0) & 0o777).toString(8),
    });
    await Deno.chmod(dir, 0o700);
  }
}

/** Why an existing `--dir` (its lstat) cannot be used, or undefined when it can. */
export function stateDirProblem(st: Deno.FileInfo, uid: number): string | undefined {
  const mode = (st.mode ?? 0) & 0o7777;
  if (st.isSymlink) {
    return "it is a symbolic link; give the directory's real path";
  }
  if (!st.isDirectory) return "it exists and is not a directory";
  if (st.uid !== null && st.uid !== uid) {
    return `it is owned by uid ${st.uid}, not by this daemon's user (uid ${uid}); ` +
      `another user may have written into it: check its contents, then chown it or use another directory`;
  }
  if (mode & 0o022) {
    return `its mode ${mode.toString(8).padStart(4, "0")} lets other users write into it; ` +
      `check its contents, then chmod 0700 it or use another directory`;
  }
  return undefined;
}
