/**
 * Gives memory back to the node after bursts of work.
 *
 * A sandboxer's steady state is idle; its peaks are bursts of pod starts and
 * stops. V8 and glibc both keep the high-water mark of a burst resident (the
 * measured effect: ~20 MiB of freed-but-resident malloc heap after 50 pod
 * stops), which would make the daemon look as if every pod cost hundreds of
 * KiB. Once calls have stopped for a while, this runs a full GC (when the
 * daemon runs with --v8-flags=--expose-gc) and glibc's malloc_trim(0)
 * (through FFI; skipped where libc has no such symbol).
 *
 * @module
 */
import { log } from "../../lib/log.ts";

interface Malloc {
  trim(pad: bigint): number;
  setOption(param: number, value: number): number;
}

let malloc: Malloc | null | undefined;

function glibcMalloc(): Malloc | null {
  if (malloc !== undefined) return malloc;
  try {
    const lib = Deno.dlopen("libc.so.6", {
      malloc_trim: { parameters: ["usize"], result: "i32" },
      mallopt: { parameters: ["i32", "i32"], result: "i32", optional: true },
    });
    malloc = {
      trim: (pad) => lib.symbols.malloc_trim(pad) as number,
      setOption: (param, value) => (lib.symbols.mallopt?.(param, value) ?? 0) as number,
    };
  } catch (e) {
    log.debug("glibc malloc tuning unavailable", { error: e });
    malloc = null;
  }
  return malloc;
}

/** mallopt's M_ARENA_MAX (glibc's malloc.h). */
const M_ARENA_MAX = -8;
/** Arenas the daemon's threads share (glibc's default: 8 per CPU). */
const DAEMON_MALLOC_ARENAS = 2;

/**
 * Caps glibc's malloc arenas from now on. glibc gives each new thread an arena of its own while
 * under its limit (8 per CPU); the daemon's blocking file-system threads come and go with
 * containerd's polling of its pods, each arena keeps the high-water mark of what was freed in
 * it, and so the daemon's memory grew with its pods in steps that `malloc_trim` could not give
 * back (measured under containerd from 10 to 100 pods: 7 more threads, two thread arenas grown
 * by ~6 MiB beside the main heap's ~3 MiB; capped, the arenas and main heap together were 19.1
 * MiB at 100 pods against 26.3). Arenas made before the call stay (two here, V8's and Deno's
 * start-up threads); glibc fixes its limit for good once more than 8 exist, so on a host where
 * start-up alone made that many the cap is a no-op.
 */
export function limitMallocArenas(): void {
  const m = glibcMalloc();
  if (m && m.setOption(M_ARENA_MAX, DAEMON_MALLOC_ARENAS) !== 1) {
    log.debug("mallopt(M_ARENA_MAX) refused", { arenas: DAEMON_MALLOC_ARENAS });
  }
}

/**
 * Collects garbage and returns free heap pages to the kernel, as far as the
 * runtime allows. A plain gc() keeps V8's grown young generation and pooled
 * pages (~14 MiB here) until V8's own memory reducer runs, half a minute
 * later; the "last-resort" collection (all available garbage, memory
 * footprint reduced) gives them back at once, for ~40 ms of an idle daemon.
 */
export function reclaimMemory(): void {
  (globalThis as { gc?: (o?: unknown) => void }).gc?.({
    type: "major",
    execution: "sync",
    flavor: "last-resort",
  });
  glibcMalloc()?.trim(0n);
  const m = Deno.memoryUsage();
  const mib = (x: number) => Math.round(x / 1048576 * 10) / 10;
  log.debug("memory reclaimed", {
    rssMiB: mib(m.rss),
    heapUsedMiB: mib(m.heapUsed),
    heapTotalMiB: mib(m.heapTotal),
    externalMiB: mib(m.external),
  });
}

/** Quiet time after the last call before the first reclaim pass. */
export const RECLAIM_QUIET_MS = 2000;
/** The second pass comes this many quiet periods after the first. */
const SECOND_PASS_FACTOR = 4;
/** Time after the last call by which both reclaim passes have run (with the default quiet time). */
export const RECLAIM_SETTLED_MS = RECLAIM_QUIET_MS * (1 + SECOND_PASS_FACTOR);
/**
 * Longest time calls may keep a reclaim waiting. containerd polls every pod
 * (status, stats): with tens of pods the daemon is never quiet for long, and
 * without a bound it would never give a burst's memory back (measured: ~0.9
 * MiB per pod retained at 50 pods under containerd).
 */
export const RECLAIM_MAX_DELAY_MS = 15_000;

/**
 * Calls `reclaimMemory` once activity has been quiet for `quietMs`, or
 * `maxDelayMs` after the first call since the last reclaim if it never is.
 */
export class IdleReclaimer {
  #quietMs: number;
  #maxDelayMs: number;
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** When the first call after the last reclaim came (undefined: none since). */
  #dirtySince: number | undefined;

  #reclaim: () => void;

  constructor(
    quietMs = RECLAIM_QUIET_MS,
    maxDelayMs = RECLAIM_MAX_DELAY_MS,
    reclaim: () => void = reclaimMemory,
  ) {
    this.#quietMs = quietMs;
    this.#maxDelayMs = maxDelayMs;
    this.#reclaim = reclaim;
  }

  /**
   * Notes activity; the reclaim happens `quietMs` after the last one (at the
   * latest `maxDelayMs` after the first), and once more a while later: work
   * that trails the calls (exit records, relay and monitor traffic) allocates
   * again after the first pass.
   */
  touch(): void {
    const now = Date.now();
    this.#dirtySince ??= now;
    const deadline = this.#dirtySince + this.#maxDelayMs - now;
    this.#schedule(Math.max(0, Math.min(this.#quietMs, deadline)), true);
  }

  #schedule(ms: number, again: boolean): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#dirtySince = undefined;
      this.#reclaim();
      if (again) this.#schedule(this.#quietMs * SECOND_PASS_FACTOR, false);
    }, ms);
    Deno.unrefTimer(this.#timer);
  }

  stop(): void {
    clearTimeout(this.#timer);
  }
}
