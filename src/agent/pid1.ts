/**
 * What PID 1 of a VM must do that Deno cannot do by itself: reap orphans,
 * set the clock, reseed the kernel's random generator and power the machine
 * off, through libc (FFI).
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
  open(path: Uint8Array, flags: number): number;
  close(fd: number): number;
  ioctlBuffer(fd: number, request: bigint, arg: Uint8Array): number;
  ioctlNone(fd: number, request: bigint): number;
  errno(): number;
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
    open: { parameters: ["buffer", "i32"], result: "i32" },
    close: { parameters: ["i32"], result: "i32" },
    // ioctl is variadic: bound once per argument shape (integers and pointers travel alike).
    ioctl_buffer: { name: "ioctl", parameters: ["i32", "u64", "buffer"], result: "i32" },
    ioctl_none: { name: "ioctl", parameters: ["i32", "u64", "u64"], result: "i32" },
    __errno_location: { parameters: [], result: "pointer" },
  });
  libc = {
    waitpid: (pid, st, o) => l.symbols.waitpid(pid, st, o) as number,
    reboot: (cmd) => l.symbols.reboot(cmd) as number,
    sync: () => l.symbols.sync(),
    clockGettime: (c, ts) => l.symbols.clock_gettime(c, ts) as number,
    clockSettime: (c, ts) => l.symbols.clock_settime(c, ts) as number,
    open: (path, flags) => l.symbols.open(path, flags) as number,
    close: (fd) => l.symbols.close(fd) as number,
    ioctlBuffer: (fd, r, arg) => l.symbols.ioctl_buffer(fd, r, arg) as number,
    ioctlNone: (fd, r) => l.symbols.ioctl_none(fd, r, 0n) as number,
    errno: () => {
      const p = l.symbols.__errno_location();
      return p ? new Deno.UnsafePointerView(p).getInt32() : 0;
    },
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

// From <linux/random.h>.
const RNDADDENTROPY = 0x40085203n;
const RNDRESEEDCRNG = 0x5207n;
const O_WRONLY = 1, O_CLOEXEC = 0o2000000;

/**
 * Makes the kernel's random generator this VM's own (a VM restored from a template starts
 * with the template's state, so clones would draw the same numbers, boot_id and ASLR until
 * the kernel reseeds by itself, up to a minute later): `seed`, the host's random bytes, goes
 * into the input pool with full credit (RNDADDENTROPY), then the generator reseeds from it at
 * once (RNDRESEEDCRNG). Done here rather than by a helper process because a process start
 * in a freshly restored VM costs hundreds of milliseconds under emulation. Needs
 * CAP_SYS_ADMIN (the agent is PID 1).
 */
export function reseedKernelRandom(seed: Uint8Array): void {
  const info = new Uint8Array(8 + seed.length);
  const v = new DataView(info.buffer);
  v.setInt32(0, seed.length * 8, true); // entropy_count, in bits
  v.setInt32(4, seed.length, true); // buf_size
  info.set(seed, 8);
  const c = lib();
  const fd = c.open(new TextEncoder().encode("/dev/random\0"), O_WRONLY | O_CLOEXEC);
  if (fd < 0) throw new Error(`open /dev/random: errno ${c.errno()}`);
  try {
    if (c.ioctlBuffer(fd, RNDADDENTROPY, info) < 0) {
      throw new Error(`RNDADDENTROPY: errno ${c.errno()}`);
    }
    if (c.ioctlNone(fd, RNDRESEEDCRNG) < 0) throw new Error(`RNDRESEEDCRNG: errno ${c.errno()}`);
  } finally {
    info.fill(0);
    c.close(fd);
  }
}
