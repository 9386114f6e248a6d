/**
 * A wall-clock instant with nanosecond precision, kept as two integers so it
 * survives JSON (nanoseconds since the epoch do not fit a JS number exactly).
 *
 * @module
 */

/** Seconds and nanoseconds since the Unix epoch, like google.protobuf.Timestamp. */
export interface Instant {
  readonly seconds: number;
  readonly nanos: number;
}

/** The instant of a `Date` (millisecond precision). */
export function instantFromDate(d: Date): Instant {
  const ms = d.getTime();
  const seconds = Math.floor(ms / 1000);
  return { seconds, nanos: (ms - seconds * 1000) * 1_000_000 };
}

/** The current instant, with sub-millisecond precision from the monotonic clock. */
export function now(): Instant {
  const ns = BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6));
  return {
    seconds: Number(ns / 1_000_000_000n),
    nanos: Number(ns % 1_000_000_000n),
  };
}

/** Milliseconds since the epoch (loses sub-millisecond precision). */
export function toMillis(i: Instant): number {
  return i.seconds * 1000 + Math.floor(i.nanos / 1_000_000);
}
