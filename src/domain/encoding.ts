/**
 * Base64 for the byte payloads kept in JSON records (protobuf Any values).
 *
 * @module
 */

/** Base64 of bytes (chunked: spreading a large array into fromCharCode overflows the stack). */
export function base64Encode(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i += 0x8000) s += String.fromCharCode(...b.subarray(i, i + 0x8000));
  return btoa(s);
}

/** Bytes of base64 text. */
export function base64Decode(s: string): Uint8Array {
  return Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
}
