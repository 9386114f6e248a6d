/**
 * Small concurrency primitives for the use cases.
 *
 * @module
 */

/**
 * Serialises async work per key: two calls for the same sandbox never
 * interleave, calls for different sandboxes run concurrently.
 */
export class KeyedMutex {
  #tails = new Map<string, Promise<void>>();

  /** Runs `fn` once every earlier `run` with the same key has settled. */
  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const tail = prev.then(() => mine);
    this.#tails.set(key, tail);
    await prev;
    try {
      return await fn();
    } finally {
      release();
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    }
  }
}

interface RwState {
  readers: number;
  writer: boolean;
  queue: { exclusive: boolean; go: () => void }[];
}

/**
 * A keyed reader-writer lock: `runShared` calls for a key run together,
 * `run` runs alone. Waiting exclusive calls hold back later shared ones, so
 * a pod's Stop is not starved by a stream of container calls.
 */
export class KeyedRwMutex {
  #states = new Map<string, RwState>();

  /** Runs `fn` alone for `key`. */
  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    return this.#with(key, true, fn);
  }

  /** Runs `fn` alongside other shared calls for `key`. */
  runShared<T>(key: string, fn: () => Promise<T>): Promise<T> {
    return this.#with(key, false, fn);
  }

  async #with<T>(key: string, exclusive: boolean, fn: () => Promise<T>): Promise<T> {
    await this.#acquire(key, exclusive);
    try {
      return await fn();
    } finally {
      this.#release(key, exclusive);
    }
  }

  #acquire(key: string, exclusive: boolean): Promise<void> {
    let s = this.#states.get(key);
    if (!s) this.#states.set(key, s = { readers: 0, writer: false, queue: [] });
    if (!s.queue.length && this.#grantable(s, exclusive)) {
      this.#grant(s, exclusive);
      return Promise.resolve();
    }
    return new Promise((go) => s.queue.push({ exclusive, go }));
  }

  #grantable(s: RwState, exclusive: boolean): boolean {
    return exclusive ? !s.writer && !s.readers : !s.writer;
  }

  #grant(s: RwState, exclusive: boolean): void {
    if (exclusive) s.writer = true;
    else s.readers++;
  }

  #release(key: string, exclusive: boolean): void {
    const s = this.#states.get(key)!;
    if (exclusive) s.writer = false;
    else s.readers--;
    while (s.queue.length && this.#grantable(s, s.queue[0].exclusive)) {
      const next = s.queue.shift()!;
      this.#grant(s, next.exclusive);
      next.go();
    }
    if (!s.writer && !s.readers && !s.queue.length) this.#states.delete(key);
  }
}

/** A value that is set once; `wait` resolves when it is. */
export class Latch<T> {
  #value: T | undefined;
  #set = false;
  #waiters: ((v: T) => void)[] = [];

  get isSet(): boolean {
    return this.#set;
  }

  get value(): T | undefined {
    return this.#value;
  }

  /** Sets the value (first call wins) and wakes every waiter. */
  set(v: T): void {
    if (this.#set) return;
    this.#set = true;
    this.#value = v;
    for (const w of this.#waiters.splice(0)) w(v);
  }

  /** Resolves with the value once set; `signal` aborts the wait. */
  wait(signal?: AbortSignal): Promise<T> {
    if (this.#set) return Promise.resolve(this.#value as T);
    return new Promise<T>((resolve, reject) => {
      const w = (v: T) => {
        signal?.removeEventListener("abort", onAbort);
        resolve(v);
      };
      const onAbort = () => {
        const i = this.#waiters.indexOf(w);
        if (i >= 0) this.#waiters.splice(i, 1);
        reject(signal?.reason ?? new Error("aborted"));
      };
      if (signal?.aborted) return onAbort();
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#waiters.push(w);
    });
  }
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Resolves with `p`, or with `undefined` once `ms` passed first. */
export async function withTimeout<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const t = new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), ms)));
  try {
    return await Promise.race([p, t]);
  } finally {
    clearTimeout(timer);
  }
}
