/**
 * Checks a pod's network namespace path at Controller.Create: it must be a
 * network namespace file (nsfs, type net), such as CNI's bind mount under
 * /var/run/netns or /proc/<pid>/ns/net. Anything else (`/etc/passwd`, a
 * directory, `/dev/null`, another namespace type, a path that does not exist)
 * is INVALID_ARGUMENT here rather than an INTERNAL error at Start, when the
 * holder's setns(2) fails, or never (the Wasm kind does not join it).
 *
 * statfs(2) tells the file system before anything is opened (opening an
 * arbitrary device can have effects); only an nsfs file is then opened for
 * the NS_GET_NSTYPE ioctl. Through libc (Deno FFI); where libc cannot be
 * loaded only existence and file type are checked.
 *
 * @module
 */
import { InvalidArgumentError } from "../../domain/errors.ts";

/** statfs f_type of the namespace file system. */
const NSFS_MAGIC = 0x6e736673n;
/** ioctl(2) request: the namespace type of an nsfs fd, as a CLONE_NEW* flag. */
const NS_GET_NSTYPE = 0xb703n;
const CLONE_NEWNET = 0x40000000;
const O_RDONLY = 0, O_NOCTTY = 0o400, O_NONBLOCK = 0o4000, O_CLOEXEC = 0o2000000;
/** Room for struct statfs (120 bytes on 64-bit Linux); f_type is its first field. */
const STATFS_SIZE = 256;

interface Libc {
  statfs(path: Uint8Array<ArrayBuffer>, buf: Uint8Array<ArrayBuffer>): Promise<number>;
  open(path: Uint8Array<ArrayBuffer>, flags: number): Promise<number>;
  fstatfs(fd: number, buf: Uint8Array<ArrayBuffer>): number;
  ioctl(fd: number, request: bigint): number;
  close(fd: number): number;
}

let libc: Libc | null | undefined;

function load(): Libc | null {
  if (libc !== undefined) return libc;
  try {
    // statfs and open may wait on a slow file system: off the event loop.
    const lib = Deno.dlopen("libc.so.6", {
      statfs: { parameters: ["buffer", "buffer"], result: "i32", nonblocking: true },
      open: { parameters: ["buffer", "i32"], result: "i32", nonblocking: true },
      fstatfs: { parameters: ["i32", "buffer"], result: "i32" },
      ioctl: { parameters: ["i32", "u64"], result: "i32" },
      close: { parameters: ["i32"], result: "i32" },
    });
    libc = lib.symbols;
  } catch {
    libc = null;
  }
  return libc;
}

function cstr(s: string): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(s + "\0");
}

function fsType(buf: Uint8Array<ArrayBuffer>): bigint {
  return new DataView(buf.buffer).getBigUint64(0, true);
}

/** Why `path` is not a usable network namespace, or undefined when it is. */
export async function netnsProblem(path: string): Promise<string | undefined> {
  if (!path.startsWith("/")) return "an absolute path is required";
  if (path.includes("\0")) return "it contains a NUL byte";
  let st: Deno.FileInfo;
  try {
    st = await Deno.stat(path);
  } catch {
    return "it does not exist";
  }
  // nsfs files (bind mounts of them, or /proc/<pid>/ns/net followed) are regular files.
  if (!st.isFile) return "it is not a network namespace file";
  const c = load();
  if (!c) return undefined;
  const buf = new Uint8Array(STATFS_SIZE);
  if (await c.statfs(cstr(path), buf) !== 0) return "it cannot be examined (statfs failed)";
  if (fsType(buf) !== NSFS_MAGIC) return "it is not a namespace file (not on nsfs)";
  const fd = await c.open(cstr(path), O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return "it cannot be opened";
  try {
    // The file may have been replaced since statfs: look again at what was opened.
    if (c.fstatfs(fd, buf) !== 0 || fsType(buf) !== NSFS_MAGIC) {
      return "it is not a namespace file (not on nsfs)";
    }
    const type = c.ioctl(fd, NS_GET_NSTYPE);
    if (type < 0) return "it is not a namespace file (NS_GET_NSTYPE failed)";
    if (type !== CLONE_NEWNET) return "it is a namespace of another type than network";
    return undefined;
  } finally {
    c.close(fd);
  }
}

/** Throws `InvalidArgumentError` unless `path` is a network namespace file. */
export async function checkNetnsPath(path: string): Promise<void> {
  const problem = await netnsProblem(path);
  if (problem) throw new InvalidArgumentError(`Invalid netns path "${path}": ${problem}`);
}
