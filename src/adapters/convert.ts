/**
 * Conversions between generated protobuf types and domain types that both
 * transports (gRPC Controller, ttrpc Task API) share.
 *
 * @module
 */
import { base64Decode, base64Encode } from "../domain/encoding.ts";
import type { StoredAny } from "../domain/sandbox.ts";
import type { Mount } from "../domain/task.ts";
import type { Instant } from "../domain/time.ts";
import type { Any } from "../gen/containerd/google/protobuf/any.ts";
import type { Timestamp } from "../gen/containerd/google/protobuf/timestamp.ts";
import type { Mount as PbMount } from "../gen/containerd/types/mount.ts";

/** google.protobuf.Timestamp of an instant (undefined stays unset). */
export function toTimestamp(i: Instant | undefined): Timestamp | undefined {
  return i ? { seconds: BigInt(i.seconds), nanos: i.nanos } : undefined;
}

/** Instant of a google.protobuf.Timestamp. */
export function fromTimestamp(t: Timestamp | undefined): Instant | undefined {
  return t ? { seconds: Number(t.seconds), nanos: t.nanos } : undefined;
}

/** Domain mount of a containerd.types.Mount. */
export function fromPbMount(m: PbMount): Mount {
  return { type: m.type, source: m.source, target: m.target, options: [...m.options] };
}

/** containerd.types.Mount of a domain mount. */
export function toPbMount(m: Mount): PbMount {
  return { type: m.type, source: m.source, target: m.target, options: [...m.options] };
}

/** A protobuf Any kept verbatim in a record. */
export function toStoredAny(a: Any): StoredAny {
  return { typeUrl: a.typeUrl, value: base64Encode(a.value) };
}

/** The protobuf Any of a stored one. */
export function fromStoredAny(a: StoredAny): Any {
  return { typeUrl: a.typeUrl, value: base64Decode(a.value) };
}
