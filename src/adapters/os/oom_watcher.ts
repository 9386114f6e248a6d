/**
 * Out-of-memory kills in running containers, as they happen.
 *
 * Checking a container's OOM counter only when its init exits misses the
 * common case: the kernel kills one process (an exec, a worker) and the
 * container goes on. containerd's shim reports those, so we do too, the way
 * the kernel offers it:
 * - cgroup v1: an eventfd registered through `cgroup.event_control` against
 *   `memory.oom_control` (it also fires when the cgroup goes away);
 * - cgroup v2: an inotify watch on `memory.events` (modified on every count).
 *
 * One epoll set holds every container's descriptor, waited on by a single
 * FFI call off the event loop: one thread however many pods. A notification
 * is only a hint; the `oom_kill` counter decides, so a container is reported
 * once per kill and never for a cgroup removal.
 *
 * @module
 */
import { join } from "node:path";
import { log } from "../../log.ts";
import { type CgroupPaths, type CgroupRoot, hostCgroupRoot, oomKills } from "./cgroups.ts";

const EFD_NONBLOCK = 0o4000, EFD_CLOEXEC = 0o2000000;
const O_RDONLY = 0, O_CLOEXEC = 0o2000000;
const IN_NONBLOCK = 0o4000, IN_CLOEXEC = 0o2000000, IN_MODIFY = 0x2;
const EPOLL_CTL_ADD = 1, EPOLL_CTL_DEL = 2, EPOLLIN = 0x1;
/** struct epoll_event is packed on x86-64: u32 events, u64 data. */
const EPOLL_EVENT_SIZE = 12;
const MAX_EVENTS = 32;
/** When to read the counter after a notification (ms, each after the one before). */
const RECHECK_MS = [0, 50, 200, 1000];

const SYMBOLS = {
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  inotify_init1: { parameters: ["i32"], result: "i32" },
  inotify_add_watch: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  inotify_rm_watch: { parameters: ["i32", "i32"], result: "i32" },
  epoll_create1: { parameters: ["i32"], result: "i32" },
  epoll_ctl: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  epoll_wait: { parameters: ["i32", "buffer", "i32", "i32"], result: "i32", nonblocking: true },
  open: { parameters: ["buffer", "i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
} as const;

type Libc = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

function cstr(s: string): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(s + "\0");
}

interface Watched {
  readonly paths: CgroupPaths;
  readonly onOom: () => void;
  /** OOM kills already reported (or there before the watch began). */
  reported: bigint;
  /** v1: the eventfd and the memory.oom_control descriptor; v2: the inotify watch. */
  readonly fds: number[];
  readonly wd?: number;
}

/** Watches containers' cgroups for OOM kills. */
export class OomWatcher {
  #libc: Libc | null | undefined;
  #epoll = -1;
  /** v2: the one inotify descriptor, in the epoll set. */
  #inotify = -1;
  /** Written to end the wait on close. */
  #wake = -1;
  #byKey = new Map<string, Watched>();
  /** v1 eventfd → key; v2 inotify watch descriptor → key. */
  #byFd = new Map<number, string>();
  #byWd = new Map<number, string>();
  #loop: Promise<void> | undefined;
  #closed = false;
  #log = log.with({ component: "oom" });
  #at: CgroupRoot;

  /** `at`: where the cgroups are (the host's mount; a fixture tree in tests). */
  constructor(at: CgroupRoot = hostCgroupRoot()) {
    this.#at = at;
  }

  /**
   * Reports OOM kills in `paths` through `onOom` until `unwatch(key)`.
   * `reported` is the count already known (0 for a new cgroup; the current
   * count after a restart, as events of the daemon's downtime are lost).
   */
  watch(key: string, paths: CgroupPaths, onOom: () => void, reported = 0n): void {
    if (this.#closed || this.#byKey.has(key)) return;
    const c = this.#setup();
    if (!c) return;
    try {
      const w = this.#at.unified
        ? this.#watchV2(c, paths, onOom, reported)
        : this.#watchV1(c, paths, onOom, reported);
      if (!w) return;
      this.#byKey.set(key, w);
      if (w.fds.length) this.#byFd.set(w.fds[0], key);
      if (w.wd !== undefined) this.#byWd.set(w.wd, key);
      this.#loop ??= this.#run(c);
      this.#log.debug("watching for OOM kills", { key, fds: w.fds, wd: w.wd });
    } catch (e) {
      this.#log.warn("cannot watch a cgroup for OOM kills", { key, error: e });
    }
  }

  #watchV1(c: Libc, paths: CgroupPaths, onOom: () => void, reported: bigint): Watched | undefined {
    const dir = paths.memory;
    if (dir === undefined) return undefined;
    const efd = c.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd < 0) throw new Error("eventfd failed");
    const ofd = c.open(
      cstr(join(this.#at.root, "memory", dir, "memory.oom_control")),
      O_RDONLY | O_CLOEXEC,
    );
    if (ofd < 0) {
      c.close(efd);
      throw new Error(`cannot open memory.oom_control of ${dir}`);
    }
    const w: Watched = { paths, onOom, reported, fds: [efd, ofd] };
    try {
      Deno.writeTextFileSync(
        join(this.#at.root, "memory", dir, "cgroup.event_control"),
        `${efd} ${ofd}`,
      );
      this.#add(c, efd);
    } catch (e) {
      for (const fd of w.fds) c.close(fd);
      throw e;
    }
    return w;
  }

  #watchV2(c: Libc, paths: CgroupPaths, onOom: () => void, reported: bigint): Watched | undefined {
    const dir = paths[""];
    if (dir === undefined) return undefined;
    if (this.#inotify < 0) {
      this.#inotify = c.inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
      if (this.#inotify < 0) throw new Error("inotify_init1 failed");
      this.#add(c, this.#inotify);
    }
    const wd = c.inotify_add_watch(
      this.#inotify,
      cstr(join(this.#at.root, dir, "memory.events")),
      IN_MODIFY,
    );
    if (wd < 0) throw new Error(`cannot watch memory.events of ${dir}`);
    return { paths, onOom, reported, fds: [], wd };
  }

  /** Stops watching `key` (its cgroup may already be gone). */
  unwatch(key: string): void {
    const w = this.#byKey.get(key);
    if (!w) return;
    this.#byKey.delete(key);
    const c = this.#libc;
    if (!c) return;
    if (w.wd !== undefined) {
      this.#byWd.delete(w.wd);
      c.inotify_rm_watch(this.#inotify, w.wd);
    }
    if (w.fds.length) {
      this.#byFd.delete(w.fds[0]);
      c.epoll_ctl(this.#epoll, EPOLL_CTL_DEL, w.fds[0], new Uint8Array(EPOLL_EVENT_SIZE));
      for (const fd of w.fds) c.close(fd);
    }
  }

  /**
   * Reports kills not yet reported (when a container's init exits), then
   * stops watching; false if `key` was not watched.
   */
  async finish(key: string): Promise<boolean> {
    if (!this.#byKey.has(key)) return false;
    await this.#check(key);
    this.unwatch(key);
    return true;
  }

  /** Ends the wait and releases every descriptor. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const key of [...this.#byKey.keys()]) this.unwatch(key);
    const c = this.#libc;
    if (!c || this.#epoll < 0) return;
    c.write(this.#wake, new BigUint64Array([1n]), 8n);
    await this.#loop;
    for (const fd of [this.#inotify, this.#wake, this.#epoll]) if (fd >= 0) c.close(fd);
  }

  #setup(): Libc | null {
    if (this.#libc !== undefined) return this.#libc;
    try {
      const c = Deno.dlopen("libc.so.6", SYMBOLS).symbols;
      const epoll = c.epoll_create1(O_CLOEXEC);
      const wake = c.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
      if (epoll < 0 || wake < 0) throw new Error("epoll_create1 or eventfd failed");
      this.#epoll = epoll;
      this.#wake = wake;
      this.#add(c, wake);
      this.#libc = c;
    } catch (e) {
      this.#log.warn("OOM kills are only seen when a container exits", { error: e });
      this.#libc = null;
    }
    return this.#libc;
  }

  #add(c: Libc, fd: number): void {
    const ev = new Uint8Array(EPOLL_EVENT_SIZE);
    const v = new DataView(ev.buffer);
    v.setUint32(0, EPOLLIN, true);
    v.setBigUint64(4, BigInt(fd), true);
    if (c.epoll_ctl(this.#epoll, EPOLL_CTL_ADD, fd, ev) !== 0) throw new Error("epoll_ctl failed");
  }

  async #run(c: Libc): Promise<void> {
    const events = new Uint8Array(EPOLL_EVENT_SIZE * MAX_EVENTS);
    const v = new DataView(events.buffer);
    const drain = new Uint8Array(4096);
    while (!this.#closed) {
      const n = await c.epoll_wait(this.#epoll, events, MAX_EVENTS, -1);
      if (this.#closed) break;
      const due = new Set<string>();
      for (let i = 0; i < n; i++) {
        const fd = Number(v.getBigUint64(i * EPOLL_EVENT_SIZE + 4, true));
        if (fd === this.#wake) continue;
        if (fd === this.#inotify) {
          for (const wd of this.#inotifyWds(c, drain)) {
            const key = this.#byWd.get(wd);
            if (key) due.add(key);
          }
          continue;
        }
        c.read(fd, drain, 8n);
        const key = this.#byFd.get(fd);
        if (key) due.add(key);
      }
      for (const key of due) this.#checkSoon(key);
    }
  }

  /**
   * v1 signals when the cgroup runs out of memory, before the kernel has
   * picked and killed a victim: look at the counter again a little later.
   */
  async #checkSoon(key: string): Promise<void> {
    for (const ms of RECHECK_MS) {
      if (ms) await new Promise((r) => setTimeout(r, ms));
      if (await this.#check(key)) return;
    }
  }

  /** Watch descriptors of the pending inotify events. */
  #inotifyWds(c: Libc, buf: Uint8Array<ArrayBuffer>): number[] {
    const wds: number[] = [];
    const v = new DataView(buf.buffer);
    for (;;) {
      const n = Number(c.read(this.#inotify, buf, BigInt(buf.length)));
      if (n <= 0) return wds;
      // struct inotify_event: i32 wd, u32 mask, u32 cookie, u32 len, name[len]
      for (let off = 0; off + 16 <= n; off += 16 + v.getUint32(off + 12, true)) {
        wds.push(v.getInt32(off, true));
      }
    }
  }

  /** Reports new kills; true if there were some (or the watch is over). */
  async #check(key: string): Promise<boolean> {
    const w = this.#byKey.get(key);
    if (!w) return true;
    // A removed cgroup (v1 signals that too) reads as no kills.
    const kills = await oomKills(w.paths, this.#at).catch(() => 0n);
    if (kills <= w.reported) return false;
    w.reported = kills;
    this.#log.info("OOM kill", { key, kills: Number(kills) });
    w.onOom();
    return true;
  }
}
