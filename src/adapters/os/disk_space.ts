/**
 * How much room the file system of a path has (`df -PkT`: statfs is not in Deno).
 *
 * @module
 */
import { runCommand } from "./command.ts";

export interface FileSystemSpace {
  readonly type: string;
  readonly totalKiB: number;
  readonly freeKiB: number;
  readonly mountedOn: string;
  /** It has no size limit: a tmpfs with `size=0` (which says 0 of everything). */
  readonly unlimited: boolean;
}

/** The space of the file system `path` (which must exist) is on; throws when df cannot tell. */
export async function fileSystemSpace(path: string): Promise<FileSystemSpace> {
  const r = await runCommand(["df", "-PkT", path], { timeoutMs: 10_000 });
  // Filesystem Type 1024-blocks Used Available Capacity Mounted-on
  const f = r.stdout.trim().split("\n").at(-1)?.split(/\s+/) ?? [];
  const [totalKiB, freeKiB] = [Number(f[2]), Number(f[4])];
  if (r.code !== 0 || !Number.isFinite(totalKiB) || !Number.isFinite(freeKiB)) {
    throw new Error(r.stderr.trim() || r.stdout.trim() || `df exited ${r.code}`);
  }
  return {
    type: f[1] ?? "?",
    totalKiB,
    freeKiB,
    mountedOn: f.slice(6).join(" ") || "?",
    unlimited: totalKiB === 0,
  };
}
