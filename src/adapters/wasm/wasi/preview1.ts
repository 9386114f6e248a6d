/**
 * WASI preview1 (`wasi_snapshot_preview1`) on Deno's synchronous file APIs,
 * for modules run by the embedded engine. Every engine of this runtime gives
 * modules the same world: args and env from the OCI process, the container's
 * rootfs preopened as `/` and each mount at its destination, stdio through
 * the task's IO, `proc_exit` as the exit code. There are no sockets and no
 * way to reach a host path outside the preopens (see paths.ts).
 *
 * Runs inside a worker. The calls that wait (stdin, output held back by a slow reader,
 * poll_oneoff sleeps) either block the worker (a module with a thread of its own) or return a
 * promise, which a module run through JSPI waits for suspended, leaving the thread to others.
 *
 * @module
 */
import { componentsUnder, PathError, resolveIn } from "./paths.ts";

/** WASI errno values. */
export const Errno = {
  SUCCESS: 0,
  E2BIG: 1,
  EACCES: 2,
  EAGAIN: 6,
  EBADF: 8,
  EEXIST: 20,
  EINVAL: 28,
  EIO: 29,
  EISDIR: 31,
  ELOOP: 32,
  ENAMETOOLONG: 37,
  ENOENT: 44,
  ENOSPC: 51,
  ENOSYS: 52,
  ENOTDIR: 54,
  ENOTEMPTY: 55,
  ENOTSUP: 58,
  EPERM: 63,
  ESPIPE: 70,
  EXDEV: 75,
  ENOTCAPABLE: 76,
} as const;

const FT = { UNKNOWN: 0, CHAR: 2, DIR: 3, FILE: 4, SYMLINK: 7 } as const;
const OFLAGS = { CREAT: 1, DIRECTORY: 2, EXCL: 4, TRUNC: 8 } as const;
const FDFLAGS = { APPEND: 1 } as const;
const RIGHT_READ = 1n << 1n, RIGHT_WRITE = 1n << 6n;
const ALL_RIGHTS = 0x1fffffffn;

/** The exit of a module (thrown by proc_exit). */
export class ProcExit extends Error {
  readonly code: number;
  constructor(code: number) {
    super(`exit ${code}`);
    this.code = code;
  }
}

/**
 * The host ending a module: thrown by a stdio or sleep function (or anything else the module
 * calls), it is never turned into an errno but unwinds the module.
 */
export class Interrupt extends Error {}

/** A guest directory backed by a host directory. */
export interface Preopen {
  /** Path the guest sees (e.g. "/", "/data"). */
  readonly guest: string;
  /** Host directory. */
  readonly host: string;
}

/** Where the module's stdio goes; a promise means the module waits for it. */
export interface Stdio {
  /** Up to `max` bytes of stdin, once there are some; empty at EOF. */
  readStdin(max: number): Uint8Array | Promise<Uint8Array>;
  /** Takes `data` (the module's own copy); a promise holds the module until it settles. */
  write(fd: 1 | 2, data: Uint8Array): void | Promise<void>;
}

/** Settings of one module run. */
export interface WasiOptions {
  readonly args: readonly string[];
  readonly env: readonly string[];
  readonly preopens: readonly Preopen[];
  readonly stdio: Stdio;
  /** Sleeps (poll_oneoff); blocks the thread when not given. */
  readonly sleep?: (ms: number) => void | Promise<void>;
}

interface FileDesc {
  kind: "file";
  file: Deno.FsFile;
  host: string;
  append: boolean;
  rights: bigint;
}

interface DirDesc {
  kind: "dir";
  root: string;
  comps: string[];
  /** Set for preopened directories. */
  preopen?: string;
  entries?: { name: string; type: number }[];
}

interface StdioDesc {
  kind: "stdio";
  fd: 0 | 1 | 2;
}

type Desc = FileDesc | DirDesc | StdioDesc;

/** `wasi_snapshot_preview1` functions by name. */
type Imports = Record<string, (...a: never[]) => number | void | Promise<number>>;

/** The imports that may return a promise (for JSPI: `WebAssembly.Suspending`). */
export const WAITING_IMPORTS: readonly string[] = ["fd_read", "fd_write", "poll_oneoff"];

const te = new TextEncoder();
const td = new TextDecoder();

/** Errors Deno has no class for, by the errno name it puts in their `code`. */
const BY_CODE: Readonly<Record<string, number>> = {
  ENOTEMPTY: Errno.ENOTEMPTY,
  EXDEV: Errno.EXDEV,
  ENOSPC: Errno.ENOSPC,
};

/** The WASI errno of an error a call threw; EIO for what has no better one. Exported for tests. */
export function errnoOf(e: unknown): number {
  if (e instanceof PathError) return e.errno;
  if (e instanceof Deno.errors.NotFound) return Errno.ENOENT;
  if (e instanceof Deno.errors.AlreadyExists) return Errno.EEXIST;
  if (e instanceof Deno.errors.PermissionDenied) return Errno.EACCES;
  if (e instanceof Deno.errors.IsADirectory) return Errno.EISDIR;
  if (e instanceof Deno.errors.NotADirectory) return Errno.ENOTDIR;
  if (e instanceof Deno.errors.FilesystemLoop) return Errno.ELOOP;
  if (e instanceof Deno.errors.InvalidData) return Errno.EINVAL;
  // The message names the paths, which may say anything: only the code counts.
  const code = e instanceof Error ? (e as Error & { code?: unknown }).code : undefined;
  return (typeof code === "string" && Object.hasOwn(BY_CODE, code)) ? BY_CODE[code] : Errno.EIO;
}

function fileType(st: Deno.FileInfo): number {
  if (st.isDirectory) return FT.DIR;
  if (st.isFile) return FT.FILE;
  if (st.isSymlink) return FT.SYMLINK;
  return st.isCharDevice ? FT.CHAR : FT.UNKNOWN;
}

function ns(d: Date | null): bigint {
  return d ? BigInt(d.getTime()) * 1_000_000n : 0n;
}

/** Now on clock id, in nanoseconds: 0 is realtime, any other the monotonic clock. */
function clockNs(id: number): bigint {
  return id === 0 ? BigInt(Date.now()) * 1_000_000n : BigInt(Math.round(performance.now() * 1e6));
}

/**
 * The atime and mtime a set_times call asks for: fst_flags ATIM (1) takes
 * atim, ATIM_NOW (2) now, likewise MTIM (4) and MTIM_NOW (8); neither keeps
 * the time st has.
 */
function newTimes(st: Deno.FileInfo, atim: bigint, mtim: bigint, flags: number): [Date, Date] {
  const now = new Date();
  return [
    flags & 2 ? now : flags & 1 ? new Date(Number(atim / 1_000_000n)) : st.atime ?? now,
    flags & 8 ? now : flags & 4 ? new Date(Number(mtim / 1_000_000n)) : st.mtime ?? now,
  ];
}

/** One module's WASI world. */
export class Wasi {
  #opts: WasiOptions;
  #fds = new Map<number, Desc>();
  #memory: WebAssembly.Memory | undefined;

  constructor(opts: WasiOptions) {
    this.#opts = opts;
    this.#fds.set(0, { kind: "stdio", fd: 0 });
    this.#fds.set(1, { kind: "stdio", fd: 1 });
    this.#fds.set(2, { kind: "stdio", fd: 2 });
    let fd = 3;
    for (const p of opts.preopens) {
      this.#fds.set(fd++, { kind: "dir", root: p.host, comps: [], preopen: p.guest });
    }
  }

  /** Binds the instance's memory (before its entry point runs). */
  bind(memory: WebAssembly.Memory): void {
    this.#memory = memory;
  }

  /** Closes every file the module left open. */
  close(): void {
    for (const d of this.#fds.values()) {
      if (d.kind === "file") {
        try {
          d.file.close();
        } catch { /* closed */ }
      }
    }
    this.#fds.clear();
  }

  #view(): DataView {
    return new DataView(this.#memory!.buffer);
  }

  #bytes(ptr: number, len: number): Uint8Array {
    return new Uint8Array(this.#memory!.buffer, ptr, len);
  }

  #str(ptr: number, len: number): string {
    return td.decode(this.#bytes(ptr, len).slice());
  }

  #iovs(ptr: number, n: number): Uint8Array[] {
    const v = this.#view();
    const out: Uint8Array[] = [];
    for (let i = 0; i < n; i++) {
      out.push(this.#bytes(v.getUint32(ptr + i * 8, true), v.getUint32(ptr + i * 8 + 4, true)));
    }
    return out;
  }

  #dir(fd: number): DirDesc {
    const d = this.#fds.get(fd);
    if (!d) throw new PathError(Errno.EBADF, "bad fd");
    if (d.kind !== "dir") throw new PathError(Errno.ENOTDIR, "not a directory");
    return d;
  }

  #path(dirfd: number, ptr: number, len: number, follow: boolean): { dir: DirDesc; host: string } {
    const dir = this.#dir(dirfd);
    return { dir, host: resolveIn(dir.root, dir.comps, this.#str(ptr, len), follow) };
  }

  #newFd(d: Desc): number {
    let fd = 3;
    while (this.#fds.has(fd)) fd++;
    this.#fds.set(fd, d);
    return fd;
  }

  #writeFilestat(ptr: number, st: Deno.FileInfo): void {
    const v = this.#view();
    v.setBigUint64(ptr, BigInt(st.dev ?? 0), true);
    v.setBigUint64(ptr + 8, BigInt(st.ino ?? 0), true);
    v.setUint8(ptr + 16, fileType(st));
    v.setBigUint64(ptr + 24, BigInt(st.nlink ?? 1), true);
    v.setBigUint64(ptr + 32, BigInt(st.size), true);
    v.setBigUint64(ptr + 40, ns(st.atime), true);
    v.setBigUint64(ptr + 48, ns(st.mtime), true);
    v.setBigUint64(ptr + 56, ns(st.ctime ?? st.mtime), true);
  }

  /** Runs a call, mapping thrown errors to errno (ProcExit and Interrupt pass through). */
  #call(fn: () => number | void): number {
    try {
      return fn() ?? Errno.SUCCESS;
    } catch (e) {
      if (e instanceof ProcExit || e instanceof Interrupt) throw e;
      return errnoOf(e);
    }
  }

  #writeList(list: readonly string[], ptrsPtr: number, bufPtr: number): number {
    const v = this.#view();
    let off = bufPtr;
    list.forEach((s, i) => {
      const b = te.encode(s + "\0");
      v.setUint32(ptrsPtr + i * 4, off, true);
      this.#bytes(off, b.length).set(b);
      off += b.length;
    });
    return Errno.SUCCESS;
  }

  #sizes(list: readonly string[], countPtr: number, sizePtr: number): number {
    const v = this.#view();
    v.setUint32(countPtr, list.length, true);
    v.setUint32(sizePtr, list.reduce((n, s) => n + te.encode(s).length + 1, 0), true);
    return Errno.SUCCESS;
  }

  #read(d: Desc, bufs: Uint8Array[]): number {
    let total = 0;
    for (const b of bufs) {
      if (!b.length) continue;
      let n: number;
      if (d.kind === "stdio") {
        throw new PathError(Errno.EBADF, "not readable");
      } else if (d.kind === "file") {
        n = d.file.readSync(b) ?? 0;
      } else {
        throw new PathError(Errno.EISDIR, "is a directory");
      }
      total += n;
      if (n < b.length) break;
    }
    return total;
  }

  #write(d: Desc, bufs: Uint8Array[]): number {
    let total = 0;
    for (const b of bufs) {
      if (!b.length) continue;
      if (d.kind === "stdio") {
        throw new PathError(Errno.EBADF, "stdin is not writable");
      } else if (d.kind === "file") {
        if (d.append) d.file.seekSync(0, Deno.SeekMode.End);
        let off = 0;
        while (off < b.length) off += d.file.writeSync(b.subarray(off));
      } else {
        throw new PathError(Errno.EISDIR, "is a directory");
      }
      total += b.length;
    }
    return total;
  }

  /** fd_read of stdin: one chunk, spread over the buffers; ready now or later. */
  #readStdin(iovs: number, len: number, out: number): number | Promise<number> {
    const max = this.#iovs(iovs, len).reduce((n, b) => n + b.length, 0);
    const put = (chunk: Uint8Array): number => {
      // Views are taken again: the memory's buffer may be new after a wait.
      let at = 0;
      for (const b of this.#iovs(iovs, len)) {
        if (at >= chunk.length) break;
        const part = chunk.subarray(at, at + b.length);
        b.set(part);
        at += part.length;
      }
      this.#view().setUint32(out, at, true);
      return Errno.SUCCESS;
    };
    if (max === 0) return put(new Uint8Array(0));
    return this.#settle(() => this.#opts.stdio.readStdin(max), put);
  }

  /** fd_write of stdout or stderr: the buffers as one chunk; done now or later. */
  #writeStdio(fd: 1 | 2, iovs: number, len: number, out: number): number | Promise<number> {
    const bufs = this.#iovs(iovs, len);
    const data = new Uint8Array(bufs.reduce((n, b) => n + b.length, 0));
    let at = 0;
    for (const b of bufs) {
      data.set(b, at);
      at += b.length;
    }
    this.#view().setUint32(out, data.length, true);
    if (!data.length) return Errno.SUCCESS;
    return this.#settle(() => this.#opts.stdio.write(fd, data), () => Errno.SUCCESS);
  }

  /** `then` of what `fn` returns, at once when it is no promise; errors become errno. */
  #settle<T>(fn: () => T | Promise<T>, then: (v: T) => number): number | Promise<number> {
    const fail = (e: unknown): number => {
      if (e instanceof ProcExit || e instanceof Interrupt) throw e;
      return errnoOf(e);
    };
    try {
      const v = fn();
      return v instanceof Promise ? v.then((x) => this.#call(() => then(x)), fail) : then(v);
    } catch (e) {
      return fail(e);
    }
  }

  /** The import object for `wasi_snapshot_preview1`. */
  imports(): Imports {
    return {
      ...this.#argsEnvImports(),
      ...this.#clockRandomImports(),
      ...this.#fdLifecycleImports(),
      ...this.#fdStatImports(),
      ...this.#fdDataImports(),
      ...this.#pathImports(),
      ...this.#pollProcImports(),
    };
  }

  /** Descriptor n (EBADF when there is none). */
  #desc(n: number): Desc {
    const d = this.#fds.get(n);
    if (!d) throw new PathError(Errno.EBADF, "bad fd");
    return d;
  }

  /** Descriptor n as a regular file (EISDIR for a directory, ESPIPE for stdio). */
  #file(n: number): FileDesc {
    const d = this.#desc(n);
    if (d.kind !== "file") {
      throw new PathError(d.kind === "dir" ? Errno.EISDIR : Errno.ESPIPE, "not a file");
    }
    return d;
  }

  /** Preopen n, or undefined when n is not one. */
  #preopen(n: number): string | undefined {
    const d = this.#fds.get(n);
    return d?.kind === "dir" ? d.preopen : undefined;
  }

  /** args_* and environ_*: the OCI process's args and env. */
  #argsEnvImports(): Imports {
    return {
      args_get: (argv: number, buf: number) =>
        this.#call(() => this.#writeList(this.#opts.args, argv, buf)),
      args_sizes_get: (c: number, s: number) =>
        this.#call(() => this.#sizes(this.#opts.args, c, s)),
      environ_get: (env: number, buf: number) =>
        this.#call(() => this.#writeList(this.#opts.env, env, buf)),
      environ_sizes_get: (c: number, s: number) =>
        this.#call(() => this.#sizes(this.#opts.env, c, s)),
    };
  }

  /** Clocks (realtime and monotonic, microsecond resolution) and randomness. */
  #clockRandomImports(): Imports {
    return {
      clock_res_get: (_id: number, res: number) =>
        this.#call(() => this.#view().setBigUint64(res, 1000n, true)),
      clock_time_get: (id: number, _prec: bigint, out: number) =>
        this.#call(() => this.#view().setBigUint64(out, clockNs(id), true)),
      random_get: (buf: number, len: number) =>
        this.#call(() => {
          for (let off = 0; off < len; off += 65536) {
            crypto.getRandomValues(this.#bytes(buf + off, Math.min(65536, len - off)));
          }
        }),
    };
  }

  /** Closing, renumbering, syncing and sizing descriptors. */
  #fdLifecycleImports(): Imports {
    return {
      fd_advise: () => Errno.SUCCESS,
      fd_allocate: (n: number, off: bigint, len: bigint) =>
        this.#call(() => {
          const f = this.#file(n);
          const end = Number(off + len);
          if (f.file.statSync().size < end) f.file.truncateSync(end);
        }),
      fd_close: (n: number) =>
        this.#call(() => {
          const d = this.#desc(n);
          if (d.kind === "file") d.file.close();
          if (d.kind === "dir" && d.preopen) return Errno.ENOTSUP;
          this.#fds.delete(n);
        }),
      fd_datasync: (n: number) => this.#call(() => this.#file(n).file.syncDataSync()),
      fd_sync: (n: number) => this.#call(() => this.#file(n).file.syncSync()),
      fd_renumber: (from: number, to: number) =>
        this.#call(() => {
          const d = this.#desc(from);
          const old = this.#fds.get(to);
          if (old?.kind === "file") old.file.close();
          this.#fds.set(to, d);
          this.#fds.delete(from);
        }),
    };
  }

  /** Descriptor and file attributes, and the preopens' names. */
  #fdStatImports(): Imports {
    return {
      fd_fdstat_get: (n: number, out: number) =>
        this.#call(() => {
          const d = this.#desc(n);
          const v = this.#view();
          const type = d.kind === "stdio" ? FT.CHAR : d.kind === "dir" ? FT.DIR : FT.FILE;
          v.setUint8(out, type);
          v.setUint16(out + 2, d.kind === "file" && d.append ? FDFLAGS.APPEND : 0, true);
          v.setBigUint64(out + 8, d.kind === "file" ? d.rights : ALL_RIGHTS, true);
          v.setBigUint64(out + 16, ALL_RIGHTS, true);
        }),
      fd_fdstat_set_flags: (n: number, flags: number) =>
        this.#call(() => {
          const d = this.#desc(n);
          if (d.kind === "file") d.append = (flags & FDFLAGS.APPEND) !== 0;
        }),
      fd_fdstat_set_rights: () => Errno.SUCCESS,
      fd_filestat_get: (n: number, out: number) =>
        this.#call(() => {
          const d = this.#desc(n);
          if (d.kind === "stdio") {
            this.#bytes(out, 64).fill(0);
            this.#view().setUint8(out + 16, FT.CHAR);
            return;
          }
          const st = d.kind === "file"
            ? d.file.statSync()
            : Deno.statSync(resolveIn(d.root, d.comps, ".", true));
          this.#writeFilestat(out, st);
        }),
      fd_filestat_set_size: (n: number, size: bigint) =>
        this.#call(() => this.#file(n).file.truncateSync(Number(size))),
      fd_filestat_set_times: (n: number, atim: bigint, mtim: bigint, flags: number) =>
        this.#call(() => {
          const f = this.#file(n);
          f.file.utimeSync(...newTimes(f.file.statSync(), atim, mtim, flags));
        }),
      fd_prestat_get: (n: number, out: number) =>
        this.#call(() => {
          const guest = this.#preopen(n);
          if (!guest) return Errno.EBADF;
          const v = this.#view();
          v.setUint8(out, 0);
          v.setUint32(out + 4, te.encode(guest).length, true);
        }),
      fd_prestat_dir_name: (n: number, ptr: number, len: number) =>
        this.#call(() => {
          const guest = this.#preopen(n);
          if (!guest) return Errno.EBADF;
          const b = te.encode(guest);
          if (b.length > len) return Errno.ENAMETOOLONG;
          this.#bytes(ptr, b.length).set(b);
        }),
    };
  }

  /** Reading, writing and seeking descriptors, and listing directories. */
  #fdDataImports(): Imports {
    return {
      fd_pread: (n: number, iovs: number, len: number, off: bigint, out: number) =>
        this.#call(() => {
          const f = this.#file(n);
          const r = this.#atOffset(f, off, () => this.#read(f, this.#iovs(iovs, len)));
          this.#view().setUint32(out, r, true);
        }),
      fd_pwrite: (n: number, iovs: number, len: number, off: bigint, out: number) =>
        this.#call(() => {
          const f = this.#file(n);
          const w = this.#atOffset(
            f,
            off,
            () => this.#write({ ...f, append: false }, this.#iovs(iovs, len)),
          );
          this.#view().setUint32(out, w, true);
        }),
      fd_read: (n: number, iovs: number, len: number, out: number) => {
        const d = this.#fds.get(n);
        return d?.kind === "stdio" && d.fd === 0
          ? this.#readStdin(iovs, len, out)
          : this.#call(() =>
            this.#view().setUint32(out, this.#read(this.#desc(n), this.#iovs(iovs, len)), true)
          );
      },
      fd_write: (n: number, iovs: number, len: number, out: number) => {
        const d = this.#fds.get(n);
        return d?.kind === "stdio" && d.fd !== 0
          ? this.#writeStdio(d.fd, iovs, len, out)
          : this.#call(() =>
            this.#view().setUint32(out, this.#write(this.#desc(n), this.#iovs(iovs, len)), true)
          );
      },
      fd_readdir: (n: number, buf: number, len: number, cookie: bigint, out: number) =>
        this.#call(() =>
          this.#view().setUint32(out, this.#readdir(this.#dir(n), buf, len, cookie), true)
        ),
      fd_seek: (n: number, off: bigint, whence: number, out: number) =>
        this.#call(() => {
          const f = this.#file(n);
          const mode = [Deno.SeekMode.Start, Deno.SeekMode.Current, Deno.SeekMode.End][whence];
          if (mode === undefined) return Errno.EINVAL;
          this.#view().setBigUint64(out, BigInt(f.file.seekSync(Number(off), mode)), true);
        }),
      fd_tell: (n: number, out: number) =>
        this.#call(() =>
          this.#view().setBigUint64(
            out,
            BigInt(this.#file(n).file.seekSync(0, Deno.SeekMode.Current)),
            true,
          )
        ),
    };
  }

  /** Runs io at offset off of f; f's own position is kept. */
  #atOffset(f: FileDesc, off: bigint, io: () => number): number {
    const pos = f.file.seekSync(0, Deno.SeekMode.Current);
    f.file.seekSync(Number(off), Deno.SeekMode.Start);
    try {
      return io();
    } finally {
      f.file.seekSync(pos, Deno.SeekMode.Start);
    }
  }

  /**
   * fd_readdir: dirents from cookie on, as many as fit in len bytes (the last
   * one cut short when it does not fit). The listing is taken at cookie 0 and
   * kept, so later cookies index the same entries. Returns the bytes used.
   */
  #readdir(d: DirDesc, buf: number, len: number, cookie: bigint): number {
    if (cookie === 0n || !d.entries) {
      const host = resolveIn(d.root, d.comps, ".", true);
      d.entries = [
        { name: ".", type: FT.DIR },
        { name: "..", type: FT.DIR },
        ...[...Deno.readDirSync(host)].map((e) => ({
          name: e.name,
          type: e.isDirectory ? FT.DIR : e.isSymlink ? FT.SYMLINK : e.isFile ? FT.FILE : FT.UNKNOWN,
        })),
      ];
    }
    let used = 0;
    for (let i = Number(cookie); i < d.entries.length && used < len; i++) {
      const e = d.entries[i];
      const name = te.encode(e.name);
      const rec = new Uint8Array(24 + name.length);
      const rv = new DataView(rec.buffer);
      rv.setBigUint64(0, BigInt(i + 1), true);
      rv.setBigUint64(8, 0n, true);
      rv.setUint32(16, name.length, true);
      rv.setUint8(20, e.type);
      rec.set(name, 24);
      const take = Math.min(rec.length, len - used);
      this.#bytes(buf + used, take).set(rec.subarray(0, take));
      used += take;
    }
    return used;
  }

  /** Operations on paths under a directory descriptor (see paths.ts for the confinement). */
  #pathImports(): Imports {
    return {
      path_create_directory: (dirfd: number, p: number, l: number) =>
        this.#call(() => Deno.mkdirSync(this.#path(dirfd, p, l, false).host)),
      path_filestat_get: (dirfd: number, flags: number, p: number, l: number, out: number) =>
        this.#call(() => {
          const { host } = this.#path(dirfd, p, l, (flags & 1) !== 0);
          this.#writeFilestat(out, (flags & 1) ? Deno.statSync(host) : Deno.lstatSync(host));
        }),
      path_filestat_set_times: (
        dirfd: number,
        flags: number,
        p: number,
        l: number,
        atim: bigint,
        mtim: bigint,
        fst: number,
      ) =>
        this.#call(() => {
          const { host } = this.#path(dirfd, p, l, (flags & 1) !== 0);
          Deno.utimeSync(host, ...newTimes(Deno.statSync(host), atim, mtim, fst));
        }),
      path_link: (
        ofd: number,
        _f: number,
        op: number,
        ol: number,
        nfd: number,
        np: number,
        nl: number,
      ) =>
        this.#call(() =>
          Deno.linkSync(this.#path(ofd, op, ol, false).host, this.#path(nfd, np, nl, false).host)
        ),
      path_open: (
        dirfd: number,
        dirflags: number,
        p: number,
        l: number,
        oflags: number,
        rights: bigint,
        _inheriting: bigint,
        fdflags: number,
        out: number,
      ) =>
        this.#call(() => {
          const { dir, host } = this.#path(dirfd, p, l, (dirflags & 1) !== 0);
          this.#view().setUint32(out, this.#open(dir, host, oflags, rights, fdflags), true);
        }),
      path_readlink: (dirfd: number, p: number, l: number, buf: number, len: number, out: number) =>
        this.#call(() => {
          const b = te.encode(Deno.readLinkSync(this.#path(dirfd, p, l, false).host));
          const n = Math.min(b.length, len);
          this.#bytes(buf, n).set(b.subarray(0, n));
          this.#view().setUint32(out, n, true);
        }),
      path_remove_directory: (dirfd: number, p: number, l: number) =>
        this.#call(() => {
          const { host } = this.#path(dirfd, p, l, false);
          if (!Deno.lstatSync(host).isDirectory) return Errno.ENOTDIR;
          Deno.removeSync(host);
        }),
      path_rename: (ofd: number, op: number, ol: number, nfd: number, np: number, nl: number) =>
        this.#call(() =>
          Deno.renameSync(this.#path(ofd, op, ol, false).host, this.#path(nfd, np, nl, false).host)
        ),
      path_symlink: (op: number, ol: number, dirfd: number, np: number, nl: number) =>
        this.#call(() =>
          Deno.symlinkSync(this.#str(op, ol), this.#path(dirfd, np, nl, false).host)
        ),
      path_unlink_file: (dirfd: number, p: number, l: number) =>
        this.#call(() => {
          const { host } = this.#path(dirfd, p, l, false);
          if (Deno.lstatSync(host).isDirectory) return Errno.EISDIR;
          Deno.removeSync(host);
        }),
    };
  }

  /**
   * path_open of host (resolved under dir): a directory gets a directory
   * descriptor; a file is opened as oflags and rights ask. Returns the new fd.
   */
  #open(dir: DirDesc, host: string, oflags: number, rights: bigint, fdflags: number): number {
    let st: Deno.FileInfo | undefined;
    try {
      st = Deno.statSync(host);
    } catch { /* created below if asked */ }
    if (st?.isDirectory || (oflags & OFLAGS.DIRECTORY)) {
      if (!st) throw new PathError(Errno.ENOENT, "no such directory");
      if (!st.isDirectory) throw new PathError(Errno.ENOTDIR, "not a directory");
      return this.#newFd({ kind: "dir", root: dir.root, comps: componentsUnder(dir.root, host) });
    }
    const write = (rights & RIGHT_WRITE) !== 0n || (oflags & (OFLAGS.CREAT | OFLAGS.TRUNC)) !== 0;
    const f = Deno.openSync(host, {
      read: (rights & RIGHT_READ) !== 0n || !write,
      write,
      create: (oflags & OFLAGS.CREAT) !== 0,
      createNew: (oflags & OFLAGS.EXCL) !== 0,
      truncate: (oflags & OFLAGS.TRUNC) !== 0,
    });
    return this.#newFd({
      kind: "file",
      file: f,
      host,
      append: (fdflags & FDFLAGS.APPEND) !== 0,
      rights,
    });
  }

  /** poll_oneoff, the process's exit, scheduling; sockets are not offered. */
  #pollProcImports(): Imports {
    return {
      poll_oneoff: (inPtr: number, outPtr: number, n: number, nevents: number) => {
        let ms = 0;
        const errno = this.#call(() => {
          ms = this.#poll(inPtr, outPtr, n, nevents);
        });
        if (errno !== Errno.SUCCESS || ms <= 0) return errno;
        const sleep = this.#opts.sleep ??
          ((t: number) => void Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, t));
        return this.#settle(() => sleep(ms), () => Errno.SUCCESS);
      },
      proc_exit: (code: number) => {
        throw new ProcExit(code);
      },
      proc_raise: () => Errno.ENOSYS,
      sched_yield: () => Errno.SUCCESS,
      sock_accept: () => Errno.ENOTSUP,
      sock_recv: () => Errno.ENOTSUP,
      sock_send: () => Errno.ENOTSUP,
      sock_shutdown: () => Errno.ENOTSUP,
    };
  }

  /**
   * poll_oneoff: fd subscriptions are reported ready; with none, the clock events are, and
   * the call sleeps until the earliest: returns how long, in ms.
   */
  #poll(inPtr: number, outPtr: number, n: number, nevents: number): number {
    const v = this.#view();
    let sleepNs = -1n;
    let count = 0;
    const events: { userdata: bigint; type: number; fd?: boolean }[] = [];
    for (let i = 0; i < n; i++) {
      const s = inPtr + i * 48;
      const userdata = v.getBigUint64(s, true);
      const tag = v.getUint8(s + 8);
      if (tag === 0) {
        let timeout = v.getBigUint64(s + 24, true);
        const abs = (v.getUint16(s + 40, true) & 1) !== 0;
        if (abs) {
          const now = clockNs(v.getUint32(s + 16, true));
          timeout = timeout > now ? timeout - now : 0n;
        }
        if (sleepNs < 0n || timeout < sleepNs) sleepNs = timeout;
        events.push({ userdata, type: 0 });
      } else {
        events.push({ userdata, type: tag, fd: true });
      }
    }
    const fdEvents = events.filter((e) => e.fd);
    const ready = fdEvents.length ? fdEvents : events;
    for (const e of ready) {
      const o = outPtr + count * 32;
      v.setBigUint64(o, e.userdata, true);
      v.setUint16(o + 8, 0, true);
      v.setUint8(o + 10, e.type);
      v.setBigUint64(o + 16, e.fd ? 1n : 0n, true);
      v.setUint16(o + 24, 0, true);
      count++;
    }
    v.setUint32(nevents, count, true);
    return !fdEvents.length && sleepNs > 0n ? Number(sleepNs / 1_000_000n) : 0;
  }
}
