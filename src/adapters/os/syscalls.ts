/**
 * mount(2) and umount2(2) through libc (Deno FFI), with mount(8)'s option
 * names: a container's rootfs is mounted and unmounted for every task, and
 * a mount(8) process each time costs more than the rest of Task.Create.
 * Where libc cannot be loaded the callers fall back to the commands.
 *
 * @module
 */

const MS: Record<string, [set: number, clear: boolean]> = {
  ro: [0x1, false],
  rw: [0x1, true],
  nosuid: [0x2, false],
  suid: [0x2, true],
  nodev: [0x4, false],
  dev: [0x4, true],
  noexec: [0x8, false],
  exec: [0x8, true],
  sync: [0x10, false],
  async: [0x10, true],
  dirsync: [0x80, false],
  noatime: [0x400, false],
  atime: [0x400, true],
  nodiratime: [0x800, false],
  diratime: [0x800, true],
  nosymfollow: [0x100, false],
  remount: [0x20, false],
  bind: [0x1000, false],
  rbind: [0x1000 | 0x4000, false],
  relatime: [0x200000, false],
  norelatime: [0x200000, true],
  strictatime: [0x1000000, false],
  defaults: [0, false],
};
const MS_RDONLY = 0x1, MS_REMOUNT = 0x20, MS_BIND = 0x1000;
/** umount2: detach now, clean up when no longer busy (umount -l). */
const MNT_DETACH = 2;

/** Flags and the filesystem-specific data string of mount(8)-style options. */
export function mountFlags(options: readonly string[]): { flags: number; data: string } {
  let flags = 0;
  const data: string[] = [];
  for (const o of options) {
    const f = MS[o];
    if (!f) data.push(o);
    else if (f[1]) flags &= ~f[0];
    else flags |= f[0];
  }
  return { flags, data: data.join(",") };
}

interface Libc {
  mount(src: string, target: string, type: string, flags: number, data: string): Promise<number>;
  umount2(target: string, flags: number): Promise<number>;
  open(path: string, flags: number): number;
  dup2(from: number, to: number): number;
  close(fd: number): number;
}

let libc: Libc | null | undefined;

function cstr(s: string): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(s + "\0");
}

function load(): Libc | null {
  if (libc !== undefined) return libc;
  try {
    // Non-blocking: the kernel work (an overlay unmount waits for RCU) runs
    // on a worker thread, not on the event loop serving every pod. errno is
    // that thread's and lost: on failure the caller runs mount(8)/umount(8),
    // which says why.
    const lib = Deno.dlopen("libc.so.6", {
      mount: {
        parameters: ["buffer", "buffer", "buffer", "u64", "buffer"],
        result: "i32",
        nonblocking: true,
      },
      umount2: { parameters: ["buffer", "i32"], result: "i32", nonblocking: true },
      open: { parameters: ["buffer", "i32"], result: "i32" },
      dup2: { parameters: ["i32", "i32"], result: "i32" },
      close: { parameters: ["i32"], result: "i32" },
    });
    const s = lib.symbols;
    libc = {
      mount: (src, target, type, flags, data) =>
        s.mount(cstr(src), cstr(target), cstr(type), BigInt(flags), cstr(data)),
      umount2: (target, flags) => s.umount2(cstr(target), flags),
      open: (path, flags) => s.open(cstr(path), flags),
      dup2: (from, to) => s.dup2(from, to),
      close: (fd) => s.close(fd),
    };
  } catch {
    libc = null;
  }
  return libc;
}

/** A syscall failed (the command-line tool then tells why). */
export class SyscallError extends Error {}

/** Whether the syscalls are available (libc loads). */
export function syscallsAvailable(): boolean {
  return load() !== null;
}

/**
 * mount(2) with mount(8) option names. A read-only bind mount is made in two
 * steps, as mount(8) does: the kernel ignores MS_RDONLY on the first bind.
 */
export async function mountSyscall(
  source: string,
  target: string,
  type: string,
  options: readonly string[],
): Promise<void> {
  const c = load();
  if (!c) throw new SyscallError("mount: libc not available");
  const { flags, data } = mountFlags(options);
  if (await c.mount(source, target, type, flags, data) !== 0) {
    throw new SyscallError(`mount of ${source} on ${target} failed`);
  }
  if ((flags & MS_BIND) && (flags & MS_RDONLY)) {
    if (await c.mount("", target, "", flags | MS_REMOUNT, "") !== 0) {
      await c.umount2(target, MNT_DETACH);
      throw new SyscallError(`read-only remount of ${target} failed`);
    }
  }
}

/** umount2(2) with MNT_DETACH (umount -l). */
export async function unmountSyscall(target: string): Promise<void> {
  const c = load();
  if (!c) throw new SyscallError("umount2: libc not available");
  if (await c.umount2(target, MNT_DETACH) !== 0) {
    throw new SyscallError(`umount of ${target} failed`);
  }
}

const O_RDWR = 2, O_CLOEXEC = 0o2000000;

/**
 * Points every descriptor of this process that is open on one of `paths` at /dev/null instead
 * (dup2, in place), and returns how many there were. For files a library opened itself and
 * keeps open in a thread that cannot be stopped (a Wasm guest blocked in a WASI call): the
 * reader of a FIFO among them then sees its end. The descriptors stay valid, so their owner
 * closes them as it would have. A descriptor is only replaced while its owner holds it (one
 * closed and reused in between by another thread is the only way to hit another file, and
 * callers use this for owners that are blocked).
 */
export async function detachFiles(paths: readonly string[]): Promise<number> {
  const c = load();
  if (!c || paths.length === 0) return 0;
  const wanted = new Set(paths);
  const fds: number[] = [];
  for await (const e of Deno.readDir("/proc/self/fd")) {
    const target = await Deno.readLink(`/proc/self/fd/${e.name}`).catch(() => "");
    if (wanted.has(target)) fds.push(Number(e.name));
  }
  if (fds.length === 0) return 0;
  const nul = c.open("/dev/null", O_RDWR | O_CLOEXEC);
  if (nul < 0) throw new SyscallError("open /dev/null failed");
  try {
    for (const fd of fds) c.dup2(nul, fd);
  } finally {
    c.close(nul);
  }
  return fds.length;
}
