/**
 * An unbounded async queue: producers `push`, one consumer iterates; `close`
 * ends the iteration (with an error, optionally). A producer that must not
 * run ahead of the consumer awaits `taken`.
 *
 * @module
 */
export class AsyncQueue<T> implements AsyncIterable<T> {
  #items: T[] = [];
  #waiter: ((r: IteratorResult<T>) => void) | undefined;
  #failer: ((e: unknown) => void) | undefined;
  #closed = false;
  #error: unknown;
  #emptied: (() => void)[] = [];

  get closed(): boolean {
    return this.#closed;
  }

  push(item: T): void {
    if (this.#closed) return;
    if (this.#waiter) {
      const w = this.#waiter;
      this.#waiter = this.#failer = undefined;
      w({ value: item, done: false });
    } else {
      this.#items.push(item);
    }
  }

  /** Resolves once the consumer has taken every item pushed so far (or the queue closed). */
  taken(): Promise<void> {
    if (!this.#items.length || this.#closed) return Promise.resolve();
    return new Promise((r) => this.#emptied.push(r));
  }

  /** Ends the queue; items already pushed are still delivered. */
  close(error?: unknown): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const r of this.#emptied.splice(0)) r();
    this.#error = error;
    if (this.#waiter) {
      const w = this.#waiter, f = this.#failer;
      this.#waiter = this.#failer = undefined;
      if (error !== undefined) f!(error);
      else w({ value: undefined, done: true });
    }
  }

  /** The next item, or undefined once closed and drained. */
  async shift(): Promise<T | undefined> {
    const r = await this.#next();
    return r.done ? undefined : r.value;
  }

  #next(): Promise<IteratorResult<T>> {
    if (this.#items.length) {
      const value = this.#items.shift()!;
      if (!this.#items.length) { for (const r of this.#emptied.splice(0)) r(); }
      return Promise.resolve({ value, done: false });
    }
    if (this.#closed) {
      return this.#error !== undefined
        ? Promise.reject(this.#error)
        : Promise.resolve({ value: undefined, done: true });
    }
    return new Promise((resolve, reject) => {
      this.#waiter = resolve;
      this.#failer = reject;
    });
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return { next: () => this.#next() };
  }
}
