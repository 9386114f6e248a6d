/**
 * Names of the things a monitored process owns, derived from ids alone so
 * that a restarted daemon finds them without having saved anything first
 * (a crash between spawning and saving leaves nothing unnamed behind).
 *
 * `@` never appears in a valid id, so the names cannot collide.
 *
 * @module
 */
import { join } from "node:path";

/** Exit-record token of a pod's namespace holder. */
export function holderToken(sandboxId: string): string {
  return `s@${sandboxId}`;
}

/** Exit-record token of a pod's shared-file-system daemon (a VM's virtiofsd). */
export function sharedFsToken(sandboxId: string): string {
  return `v@${sandboxId}`;
}

/** Exit-record token of a container's init process. */
export function initToken(containerId: string): string {
  return `c@${containerId}`;
}

/** Exit-record token of an exec process. */
export function execToken(containerId: string, execId: string): string {
  return `e@${containerId}@${execId}`;
}

/**
 * A short socket path for a token under `socketDir`: unix socket paths are
 * limited to 107 bytes, which two 64-character ids would exceed.
 */
export async function socketPath(
  socketDir: string,
  token: string,
  suffix: string,
): Promise<string> {
  const h = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(token)));
  const hex = Array.from(h.subarray(0, 8), (b) => b.toString(16).padStart(2, "0")).join("");
  return join(socketDir, `${hex}.${suffix}`);
}

/** Kills every process whose command line contains `needle` (orphans of a crashed start). */
export async function killByCommandLine(
  needle: string,
  signal: Deno.Signal = "SIGKILL",
): Promise<number> {
  let n = 0;
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    const pid = Number(e.name);
    if (pid === Deno.pid) continue;
    try {
      const cmd = await Deno.readTextFile(`/proc/${pid}/cmdline`);
      if (cmd.includes(needle)) {
        Deno.kill(pid, signal);
        n++;
      }
    } catch { /* gone */ }
  }
  return n;
}
