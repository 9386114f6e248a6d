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
import { log } from "../../lib/log.ts";

/** Exit-record token of a pod's namespace holder. */
export function holderToken(sandboxId: string): string {
  return `s@${sandboxId}`;
}

/**
 * Exit-record token of a VM made ahead of its pod (`[hypervisor] template_pool`): it keeps it
 * when a pod takes the VM (the pod's record says so), as its monitor was started with it.
 */
export function poolVmToken(name: string): string {
  return `p@${name}`;
}

/** Whether `token` is a pool VM's (`p@` and the 12 hex digits of its name). */
export function isPoolVmToken(token: string): boolean {
  return /^p@[0-9a-f]{12}$/.test(token);
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

/**
 * Kills every process whose command line contains `needle` (orphans of a crashed start).
 *
 * With SIGKILL it also waits (bounded) until they are dead: a process killed while in a
 * system call finishes that call first, so a caller that cleans up after it (removes its
 * exit record, its sockets) must not race its last write.
 */
export async function killByCommandLine(
  needle: string,
  signal: Deno.Signal = "SIGKILL",
): Promise<number> {
  const killed: { pid: number; started: string }[] = [];
  let n = 0;
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    const pid = Number(e.name);
    if (pid === Deno.pid) continue;
    try {
      const cmd = await Deno.readTextFile(`/proc/${pid}/cmdline`);
      if (cmd.includes(needle)) {
        const started = (await procStat(pid))?.started ?? "";
        Deno.kill(pid, signal);
        killed.push({ pid, started });
        n++;
      }
    } catch { /* gone */ }
  }
  if (signal === "SIGKILL") {
    const deadline = performance.now() + KILL_WAIT_MS;
    for (;;) {
      const alive = [];
      for (const k of killed) {
        const st = await procStat(k.pid);
        if (st && st.state !== "Z" && st.state !== "X" && st.started === k.started) alive.push(k);
      }
      if (!alive.length) break;
      if (performance.now() > deadline) {
        log.warn("killed processes still alive (stuck in the kernel?)", {
          pids: alive.map((k) => k.pid),
          needle: needle.replaceAll("\0", " ").trim(),
        });
        break;
      }
      killed.splice(0, killed.length, ...alive);
      await new Promise((r) => setTimeout(r, 5));
    }
  }
  return n;
}

/** How long a SIGKILLed process may take to finish its system call and die. */
const KILL_WAIT_MS = 5000;

/** State letter and start time (in clock ticks since boot) from /proc/<pid>/stat. */
async function procStat(pid: number): Promise<{ state: string; started: string } | undefined> {
  try {
    const s = await Deno.readTextFile(`/proc/${pid}/stat`);
    // The command name (field 2) may hold spaces and parentheses: fields follow the last ")".
    const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
    return { state: f[0], started: f[19] };
  } catch {
    return undefined;
  }
}
