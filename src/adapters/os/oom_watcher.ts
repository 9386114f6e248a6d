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
 * One epoll set holds every descriptor, waited on by a single FFI call off
 * the event loop: one thread however many pods. A notification is only a
 * hint; the `oom_kill` counter decides, so a container is reported once per
 * kill and never for a cgroup removal or a `memory.high` event.
 *
 * @module
 */
import { join } from "node:path";
import { log } from "../../lib/log.ts";
import { type CgroupPaths, type CgroupRoot, hostCgroupRoot, oomKills } from "./cgroups.ts";

const EFD_NONBLOCK = 0o4000, EFD_CLOEXEC = 0o2000000;
const O_RDONLY = 0, O_CLOEXEC = 0o2000000;
const IN_NONBLOCK = 0o4000, IN_CLOEXEC = 0o2000000, IN_MODIFY = 0x2;
const EPOLL_CTL_ADD = 1, EPOLL_CTL_DEL = 2, EPOLLIN = 0x1;
/**
 * struct epoll_event {u32 events; u64 data}: packed on x86-64 (12 bytes, data
 * at 4), naturally aligned elsewhere (16 bytes, data at 8).
 */
const EPOLL_PACKED = Deno.build.arch === "x86_64";
const EPOLL_EVENT_SIZE = EPOLL_PACKED ? 12 : 16;
const EPOLL_DATA_OFFSET = EPOLL_PACKED ? 4 : 8;
const MAX_EVENTS = 32;
/**
 * When to read the counter after a notification (ms, each after the one
 * before). v1 signals as the cgroup runs out of memory, before the kernel has
 * killed a victim; v2 counts the kill before it notifies.
 */
const RECHECK_V1_MS = [0, 50, 200, 1000];
const RECHECK_V2_MS = [0];
/** Epoll data of the wake-up eventfd and of the inotify descriptor; watches count up from here. */
const WAKE_TOKEN = 0n, INOTIFY_TOKEN = 1n;

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

/** What a watch is for. */
interface WatchRequest {
  readonly key: string;
  readonly paths: CgroupPaths;
  readonly onOom: () => void;
  /** OOM kills already reported (or there before the watch began). */
  reported: bigint;
}

interface Watched extends WatchRequest {
  /** v1: the eventfd (in the epoll set under `token`) and the memory.oom_control descriptor. */
  readonly efd?: number;
  readonly ofd?: number;
  readonly token?: bigint;
  /** v2: the inotify watch descriptor (one per file, shared by watches of the same cgroup). */
  readonly wd?: number;
  /** A check runs; `again`: another hint came meanwhile. */
  checking?: boolean;
  again?: boolean;
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
  /** v1: epoll token → watch. Tokens are never reused, so a stale event finds nothing. */
  #byToken = new Map<bigint, Watched>();
  #nextToken = 2n;
  /** v2: watch descriptor → the watches on that file. */
  #byWd = new Map<number, Set<Watched>>();
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
      const req = { key, paths, onOom, reported };
      const w = this.#at.unified ? this.#watchV2(c, req) : this.#watchV1(c, req);
      if (!w) return;
      this.#byKey.set(key, w);
      this.#loop ??= this.#run(c).catch((e) =>
        this.#log.error("OOM watch ended; kills are seen when containers exit", { error: e })
      );
    } catch (e) {
      this.#log.warn("cannot watch a cgroup for OOM kills", { key, error: e });
    }
  }

  #watchV1(c: Libc, req: WatchRequest): Watched | undefined {
    const dir = req.paths.memory;
    if (dir === undefined) return undefined;
    const memory = join(this.#at.root, "memory", dir);
    const efd = c.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd < 0) throw new Error("eventfd failed");
    const ofd = c.open(cstr(join(memory, "memory.oom_control")), O_RDONLY | O_CLOEXEC);
    if (ofd < 0) {
      c.close(efd);
      throw new Error(`cannot open memory.oom_control of ${dir}`);
    }
    const token = this.#nextToken++;
    try {
      Deno.writeTextFileSync(join(memory, "cgroup.event_control"), `${efd} ${ofd}`);
      this.#add(c, efd, token);
    } catch (e) {
      c.close(efd);
      c.close(ofd);
      throw e;
    }
    const w: Watched = { ...req, efd, ofd, token };
    this.#byToken.set(token, w);
    return w;
  }

  #watchV2(c: Libc, req: WatchRequest): Watched | undefined {
    const dir = req.paths[""];
    if (dir === undefined) return undefined;
    if (this.#inotify < 0) {
      const fd = c.inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
      if (fd < 0) throw new Error("inotify_init1 failed");
      try {
        this.#add(c, fd, INOTIFY_TOKEN);
      } catch (e) {
        c.close(fd);
        throw e;
      }
      this.#inotify = fd;
    }
    const file = join(this.#at.root, dir, "memory.events");
    // Watching a file twice gives the same descriptor: containers of one cgroup share it.
    const wd = c.inotify_add_watch(this.#inotify, cstr(file), IN_MODIFY);
    if (wd < 0) throw new Error(`cannot watch memory.events of ${dir}`);
    const w: Watched = { ...req, wd };
    const set = this.#byWd.get(wd) ?? new Set();
    set.add(w);
    this.#byWd.set(wd, set);
    return w;
  }

  /** Stops watching `key` (its cgroup may already be gone). */
  unwatch(key: string): void {
    const w = this.#byKey.get(key);
    if (!w) return;
    this.#byKey.delete(key);
    const c = this.#libc;
    if (!c) return;
    if (w.wd !== undefined) {
      const set = this.#byWd.get(w.wd);
      set?.delete(w);
      if (!set?.size) {
        this.#byWd.delete(w.wd);
        c.inotify_rm_watch(this.#inotify, w.wd);
      }
    }
    if (w.token !== undefined) {
      this.#byToken.delete(w.token);
      c.epoll_ctl(this.#epoll, EPOLL_CTL_DEL, w.efd!, new Uint8Array(EPOLL_EVENT_SIZE));
      c.close(w.efd!);
      c.close(w.ofd!);
    }
  }

  /**
   * Reports kills not yet reported (when a container's init exits), then
   * stops watching; false if `key` was not watched.
   */
  async finish(key: string): Promise<boolean> {
    const w = this.#byKey.get(key);
    if (!w) return false;
    await this.#check(w);
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
    let c: Libc | undefined;
    try {
      c = Deno.dlopen("libc.so.6", SYMBOLS).symbols;
      this.#epoll = c.epoll_create1(O_CLOEXEC);
      if (this.#epoll < 0) throw new Error("epoll_create1 failed");
      this.#wake = c.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
      if (this.#wake < 0) throw new Error("eventfd failed");
      this.#add(c, this.#wake, WAKE_TOKEN);
      this.#libc = c;
    } catch (e) {
      this.#log.warn("OOM kills are only seen when a container exits", { error: e });
      for (const fd of [this.#wake, this.#epoll]) if (c && fd >= 0) c.close(fd);
      this.#libc = null;
    }
    return this.#libc;
  }

  #add(c: Libc, fd: number, token: bigint): void {
    const ev = new Uint8Array(EPOLL_EVENT_SIZE);
    const v = new DataView(ev.buffer);
    v.setUint32(0, EPOLLIN, true);
    v.setBigUint64(EPOLL_DATA_OFFSET, token, true);
    if (c.epoll_ctl(this.#epoll, EPOLL_CTL_ADD, fd, ev) !== 0) throw new Error("epoll_ctl failed");
  }

  async #run(c: Libc): Promise<void> {
    const events = new Uint8Array(EPOLL_EVENT_SIZE * MAX_EVENTS);
    const v = new DataView(events.buffer);
    const drain = new Uint8Array(4096);
    while (!this.#closed) {
      const n = await c.epoll_wait(this.#epoll, events, MAX_EVENTS, -1);
      if (this.#closed) break;
      const due = new Set<Watched>();
      for (let i = 0; i < n; i++) {
        const token = v.getBigUint64(i * EPOLL_EVENT_SIZE + EPOLL_DATA_OFFSET, true);
        if (token === WAKE_TOKEN) continue;
        if (token === INOTIFY_TOKEN) {
          for (const wd of this.#inotifyWds(c, drain)) {
            for (const w of this.#byWd.get(wd) ?? []) due.add(w);
          }
          continue;
        }
        // Only a live watch's own eventfd is read; a stale token finds nothing.
        const w = this.#byToken.get(token);
        if (!w) continue;
        c.read(w.efd!, drain, 8n);
        due.add(w);
      }
      for (const w of due) this.#checkSoon(w);
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

  /** Checks `w` after a hint; one check per watch at a time, a hint meanwhile runs it again. */
  #checkSoon(w: Watched): void {
    if (w.checking) {
      w.again = true;
      return;
    }
    w.checking = true;
    (async () => {
      do {
        w.again = false;
        for (const ms of this.#at.unified ? RECHECK_V2_MS : RECHECK_V1_MS) {
          if (ms) await new Promise((r) => setTimeout(r, ms));
          if (this.#closed || this.#byKey.get(w.key) !== w) return;
          if (await this.#check(w)) break;
        }
      } while (w.again);
    })().catch((e) => this.#log.warn("OOM check failed", { key: w.key, error: e }))
      .finally(() => (w.checking = false));
  }

  /** Reports new kills; true if there were some. */
  async #check(w: Watched): Promise<boolean> {
    // A removed cgroup (v1 signals that too) reads as no kills.
    const kills = await oomKills(w.paths, this.#at).catch(() => 0n);
    if (kills <= w.reported) return false;
    w.reported = kills;
    this.#log.info("OOM kill", { key: w.key, kills: Number(kills) });
    w.onOom();
    return true;
  }
}
