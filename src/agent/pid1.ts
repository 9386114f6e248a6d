/**
 * What PID 1 of a VM must do that Deno cannot do by itself: reap orphans and
 * power the machine off, through libc (FFI).
 *
 * @module
 */
const WNOHANG = 1;
const LINUX_REBOOT_CMD_POWER_OFF = 0x4321fedc;

interface Libc {
  waitpid(pid: number, status: Deno.PointerValue, options: number): number;
  reboot(cmd: number): number;
  sync(): void;
  clockGettime(clock: number, ts: Uint8Array): number;
  clockSettime(clock: number, ts: Uint8Array): number;
}

const CLOCK_REALTIME = 0;

let libc: Libc | undefined;

function lib(): Libc {
  if (libc) return libc;
  const l = Deno.dlopen("libc.so.6", {
    waitpid: { parameters: ["i32", "pointer", "i32"], result: "i32" },
    reboot: { parameters: ["i32"], result: "i32" },
    sync: { parameters: [], result: "void" },
    clock_gettime: { parameters: ["i32", "buffer"], result: "i32" },
    clock_settime: { parameters: ["i32", "buffer"], result: "i32" },
  });
  libc = {
    waitpid: (pid, st, o) => l.symbols.waitpid(pid, st, o) as number,
    reboot: (cmd) => l.symbols.reboot(cmd) as number,
    sync: () => l.symbols.sync(),
    clockGettime: (c, ts) => l.symbols.clock_gettime(c, ts) as number,
    clockSettime: (c, ts) => l.symbols.clock_settime(c, ts) as number,
  };
  return libc;
}

/** Children Deno itself started and waits for (the reaper must leave them to it). */
const own = new Set<number>();

/** Marks `pid` as a child Deno waits for; call the result once it has been waited for. */
export function ownChild(pid: number): () => void {
  own.add(pid);
  return () => own.delete(pid);
}

/**
 * Reaps exited orphans: as PID 1 the agent inherits every process whose
 * parent died. Deno's own children are left alone (reaping one would make
 * Deno's wait fail with ECHILD), so only zombies it did not start are waited for.
 */
export function reapZombies(): number {
  let n = 0;
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    const pid = Number(e.name);
    if (own.has(pid)) continue;
    let stat: string;
    try {
      stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    } catch {
      continue;
    }
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (f[0] === "Z" && Number(f[1]) === Deno.pid && lib().waitpid(pid, null, WNOHANG) > 0) n++;
  }
  return n;
}

/** Reaps on every SIGCHLD (and once a second, as signals coalesce). */
export function startReaper(): void {
  // A burst of exits is one /proc scan, not one per signal.
  let pending = false;
  const reapSoon = () => {
    if (pending) return;
    pending = true;
    setTimeout(() => {
      pending = false;
      reapZombies();
    }, 10);
  };
  Deno.addSignalListener("SIGCHLD", reapSoon);
  const t = setInterval(reapSoon, 1000);
  Deno.unrefTimer(t);
}

/** Flushes the file systems and powers the VM off (QEMU then exits). */
export function powerOff(): never {
  lib().sync();
  lib().reboot(LINUX_REBOOT_CMD_POWER_OFF);
  Deno.exit(0);
}

/** The realtime clock in nanoseconds. */
export function realtimeNs(): bigint {
  const ts = new Uint8Array(16);
  if (lib().clockGettime(CLOCK_REALTIME, ts) !== 0) return BigInt(Date.now()) * 1_000_000n;
  const v = new DataView(ts.buffer);
  return v.getBigInt64(0, true) * 1_000_000_000n + v.getBigInt64(8, true);
}

/** Sets the realtime clock (SyncClock's second step). */
export function setRealtimeNs(ns: bigint): void {
  const ts = new Uint8Array(16);
  const v = new DataView(ts.buffer);
  v.setBigInt64(0, ns / 1_000_000_000n, true);
  v.setBigInt64(8, ns % 1_000_000_000n, true);
  if (lib().clockSettime(CLOCK_REALTIME, ts) !== 0) throw new Error("clock_settime failed");
}
