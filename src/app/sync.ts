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
