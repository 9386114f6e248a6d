/**
 * How the host reaches the agent: a vsock port where the host has
 * vhost-vsock, a virtio-serial port (named by the host, e.g. "agent.0")
 * where it does not. Both carry ttrpc.
 *
 * @module
 */
import type { ByteStream } from "../adapters/ttrpc/frame.ts";

/** The /dev node of the virtio-serial port named `name`, if the guest has one. */
export function findVirtioPort(
  name: string,
  sysDir = "/sys/class/virtio-ports",
): string | undefined {
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(sysDir)];
  } catch {
    return undefined;
  }
  for (const e of entries) {
    try {
      if (Deno.readTextFileSync(`${sysDir}/${e.name}/name`).trim() === name) {
        return `/dev/${e.name}`;
      }
    } catch { /* no name */ }
  }
  return undefined;
}

const O_RDWR = 2, O_CLOEXEC = 0o2000000;

type Libc = {
  open(path: Uint8Array, flags: number): number;
  read(fd: number, buf: Uint8Array, n: bigint): Promise<bigint>;
  write(fd: number, buf: Uint8Array, n: bigint): Promise<bigint>;
  close(fd: number): number;
};

let libc: Libc | undefined;

function lib(): Libc {
  if (libc) return libc;
  const l = Deno.dlopen("libc.so.6", {
    open: { parameters: ["buffer", "i32"], result: "i32" },
    // On threads of their own: a read blocked on the port must not hold up a write.
    read: { parameters: ["i32", "buffer", "usize"], result: "isize", nonblocking: true },
    write: { parameters: ["i32", "buffer", "usize"], result: "isize", nonblocking: true },
    close: { parameters: ["i32"], result: "i32" },
  });
  libc = {
    open: (p, f) => l.symbols.open(p, f) as number,
    read: (fd, b, n) => l.symbols.read(fd, b, n) as Promise<bigint>,
    write: (fd, b, n) => l.symbols.write(fd, b, n) as Promise<bigint>,
    close: (fd) => l.symbols.close(fd) as number,
  };
  return libc;
}

/** The agent's end of a virtio-serial port: one ttrpc session per host connection. */
export interface PortSessions {
  /** Waits for the host to connect (and send); the session ends when the host goes away. */
  nextSession(): Promise<ByteStream>;
}

/**
 * A virtio-serial port, opened once for good. Deno's file handles run one
 * operation at a time, so a read waiting for the host's next request would
 * block the reply to the last one; libc's read and write on their own
 * threads do not (and the port allows a single open, so no second handle).
 * A read returns 0 while no host is connected: that ends a session, and the
 * next host connection (a restarted sandboxer) gets a fresh one, since its
 * ttrpc stream ids start again.
 */
export function openPort(path: string): PortSessions {
  const c = lib();
  const fd = c.open(new TextEncoder().encode(path + "\0"), O_RDWR | O_CLOEXEC);
  if (fd < 0) throw new Error(`cannot open ${path}`);
  const buf = new Uint8Array(64 * 1024);
  const readSome = async () => {
    const n = Number(await c.read(fd, buf, BigInt(buf.length)));
    if (n < 0) throw new Error(`read ${path} failed`);
    return n;
  };
  return {
    async nextSession(): Promise<ByteStream> {
      let n: number;
      while ((n = await readSome()) === 0) await new Promise((r) => setTimeout(r, 20));
      let pending: Uint8Array | undefined = buf.slice(0, n);
      let ended = false;
      return {
        read: async (p: Uint8Array) => {
          if (pending) {
            const k = Math.min(p.length, pending.length);
            p.set(pending.subarray(0, k));
            pending = k < pending.length ? pending.subarray(k) : undefined;
            return k;
          }
          if (ended) return null;
          const m = Number(await c.read(fd, p, BigInt(p.length)));
          if (m < 0) throw new Error(`read ${path} failed`);
          if (m === 0) ended = true; // the host went away
          return m === 0 ? null : m;
        },
        write: async (p: Uint8Array) => {
          const m = Number(await c.write(fd, p, BigInt(p.length)));
          if (m < 0) throw new Error(`write ${path} failed`);
          return m;
        },
        // The port stays open for the next host connection.
        close: () => {
          ended = true;
        },
      };
    },
  };
}
