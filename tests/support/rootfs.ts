/**
 * A busybox-static root filesystem built locally (no registry is reachable),
 * cached between runs, and the overlay mount containerd's snapshotter would
 * hand to Task.Create for it.
 *
 * @module
 */
import { join } from "node:path";
import type { Mount } from "../../src/domain/task.ts";

/** Where the shared read-only busybox rootfs lives. */
export const ROOTFS_CACHE = Deno.env.get("KUASAR_TEST_ROOTFS") ??
  "/var/cache/kuasar-test/busybox-rootfs";

/** Builds the cached busybox rootfs once (idempotent, atomic). */
export async function ensureBusyboxRootfs(): Promise<string> {
  try {
    await Deno.stat(join(ROOTFS_CACHE, "bin/sh"));
    return ROOTFS_CACHE;
  } catch { /* build it */ }
  const tmp = `${ROOTFS_CACHE}.${crypto.randomUUID()}`;
  for (const d of ["bin", "etc", "proc", "sys", "dev", "tmp", "root", "var", "mnt"]) {
    await Deno.mkdir(join(tmp, d), { recursive: true });
  }
  const busybox = new TextDecoder().decode(
    (await new Deno.Command("sh", { args: ["-c", "command -v busybox"] }).output()).stdout,
  ).trim() || "/bin/busybox";
  await Deno.copyFile(busybox, join(tmp, "bin/busybox"));
  await Deno.chmod(join(tmp, "bin/busybox"), 0o755);
  const list = new TextDecoder().decode(
    (await new Deno.Command(busybox, { args: ["--list"] }).output()).stdout,
  );
  for (const applet of list.split("\n").filter(Boolean)) {
    if (applet !== "busybox") {
      await Deno.symlink("busybox", join(tmp, "bin", applet)).catch(() => {});
    }
  }
  await Deno.writeTextFile(join(tmp, "etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n");
  await Deno.writeTextFile(join(tmp, "etc/group"), "root:x:0:\n");
  await Deno.mkdir(join(ROOTFS_CACHE, ".."), { recursive: true });
  try {
    await Deno.rename(tmp, ROOTFS_CACHE);
  } catch {
    await Deno.remove(tmp, { recursive: true }); // another run built it first
  }
  return ROOTFS_CACHE;
}

/** An overlay mount of the cached rootfs with a private upper layer under `dir`. */
export async function overlayRootfs(dir: string): Promise<Mount[]> {
  const lower = await ensureBusyboxRootfs();
  const upper = join(dir, "upper"), work = join(dir, "work");
  await Deno.mkdir(upper, { recursive: true });
  await Deno.mkdir(work, { recursive: true });
  return [{
    type: "overlay",
    source: "overlay",
    target: "",
    options: [`lowerdir=${lower}`, `upperdir=${upper}`, `workdir=${work}`],
  }];
}
