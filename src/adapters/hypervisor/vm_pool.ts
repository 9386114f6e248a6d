/**
 * A pool of VMs made ahead of their pods (`[hypervisor] template_pool = N`): restored from the
 * template and run through a throwaway container, so that a pod's start only hands one over.
 * Under emulation most of a fresh clone's first container is the translation of code the
 * template VM had already run; a VM of the pool has paid it before any pod waits.
 *
 * The pool makes one VM at a time (making one is seconds of CPU under emulation, and pods
 * starting meanwhile need the same CPUs) until it holds `size`, and again after each take. A
 * VM that dies while pooled is dropped; after a failed make the next waits `retryMs`.
 *
 * @module
 */
import { log } from "../../lib/log.ts";

export interface VmPoolOptions<T> {
  /** How many ready VMs the pool keeps. */
  readonly size: number;
  /** Makes one ready VM (or throws why not). */
  readonly make: () => Promise<T>;
  /** Ends a VM the pool no longer keeps (dead, unfit, or the daemon stops). */
  readonly discard: (vm: T) => Promise<void>;
  /** Whether a pooled VM still runs. */
  readonly alive: (vm: T) => boolean;
  /** Wait after a failed make before the next. */
  readonly retryMs?: number;
}

export class VmPool<T> {
  #o: VmPoolOptions<T>;
  #ready: T[] = [];
  #filling = false;
  #closed = false;
  #retry: ReturnType<typeof setTimeout> | undefined;
  #log = log.with({ component: "vm-pool" });

  constructor(o: VmPoolOptions<T>) {
    this.#o = o;
  }

  /** How many VMs are ready. */
  get size(): number {
    return this.#ready.length;
  }

  /**
   * A ready VM that `fits`, out of the pool (the pool makes another); undefined when none is
   * ready. Dead ones met on the way are discarded.
   */
  take(fits: (vm: T) => boolean = () => true): T | undefined {
    let found: T | undefined;
    for (const vm of [...this.#ready]) {
      if (!this.#o.alive(vm)) {
        this.#drop(vm);
        continue;
      }
      if (found === undefined && fits(vm)) {
        found = vm;
        this.#ready.splice(this.#ready.indexOf(vm), 1);
      }
    }
    this.fill();
    return found;
  }

  /** Makes VMs until the pool is full (in the background; once at a time). */
  fill(): void {
    if (this.#closed || this.#filling || this.#retry) return;
    this.#filling = true;
    (async () => {
      try {
        while (!this.#closed && this.#ready.filter((v) => this.#o.alive(v)).length < this.#o.size) {
          if (!await this.#makeOne()) return;
        }
      } finally {
        // In the same turn as the loop's last look: a take right after it starts another.
        this.#filling = false;
      }
    })();
  }

  /** Makes a VM into the pool; false after a failure (the next try is in `retryMs`). */
  async #makeOne(): Promise<boolean> {
    const t0 = performance.now();
    let vm: T;
    try {
      vm = await this.#o.make();
    } catch (e) {
      this.#log.warn("no VM made ahead for the pool: pods restore their own meanwhile", {
        error: String(e),
        retryInS: Math.round((this.#o.retryMs ?? 60_000) / 1000),
      });
      this.#retry = setTimeout(() => {
        this.#retry = undefined;
        this.fill();
      }, this.#o.retryMs ?? 60_000);
      return false;
    }
    if (this.#closed) {
      await this.#o.discard(vm).catch(() => {});
      return false;
    }
    this.#ready.push(vm);
    this.#log.info("vm pooled", {
      ready: this.#ready.length,
      of: this.#o.size,
      ms: Math.round(performance.now() - t0),
    });
    return true;
  }

  /** Ends the ready VMs that are `stale` (dead, or of an old template), and makes others. */
  prune(stale: (vm: T) => boolean): void {
    for (const vm of [...this.#ready]) if (stale(vm)) this.#drop(vm);
    this.fill();
  }

  /**
   * Ends the pooled VMs and stops making more (the daemon stops; the one being made, if any, is
   * the maker's to end).
   */
  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#retry);
    const vms = this.#ready.splice(0);
    for (const vm of vms) await this.#o.discard(vm).catch(() => {});
  }

  #drop(vm: T): void {
    this.#ready.splice(this.#ready.indexOf(vm), 1);
    this.#o.discard(vm).catch(() => {});
  }
}
