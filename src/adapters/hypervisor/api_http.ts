/**
 * HTTP/1.1 over a VMM's unix API socket (Cloud Hypervisor's `--api-socket`,
 * Firecracker's `--api-sock`): one request per connection, JSON in and out.
 * Both VMMs answer with a Content-Length (no chunked bodies); an answer is
 * read to that length, bounded, and the connection closed.
 *
 * @module
 */
import { DeadlineExceededError, UnavailableError } from "../../domain/errors.ts";

/** A VMM's answer. */
export interface ApiAnswer {
  readonly status: number;
  /** The body as text ("" for 204). */
  readonly body: string;
}

/** An answer a VMM gives no body bigger than (vm.info of a VM with many devices is a few KiB). */
const MAX_BODY = 1 << 20;

/** Sends `method path` with `body` as JSON to the API socket at `socket`. */
export async function apiRequest(
  socket: string,
  method: "GET" | "PUT" | "PATCH",
  path: string,
  body?: unknown,
  timeoutMs = 10_000,
): Promise<ApiAnswer> {
  let conn: Deno.Conn;
  try {
    conn = await Deno.connect({ transport: "unix", path: socket });
  } catch (e) {
    throw new UnavailableError(`The VMM's API socket ${socket} does not answer: ${String(e)}`);
  }
  let late = false;
  const timer = setTimeout(() => (late = true, conn.close()), timeoutMs);
  try {
    const payload = body === undefined ? new Uint8Array() : enc.encode(JSON.stringify(body));
    const head = [
      `${method} ${path} HTTP/1.1`,
      "Host: localhost",
      "Accept: application/json",
      ...(body === undefined ? [] : ["Content-Type: application/json"]),
      `Content-Length: ${payload.length}`,
      "",
      "",
    ].join("\r\n");
    await writeAll(conn, concat(enc.encode(head), payload));
    return await readAnswer(conn);
  } catch (e) {
    if (late) throw new DeadlineExceededError(`${method} ${path}: no answer in ${timeoutMs} ms`);
    throw e;
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch { /* closed by the timer */ }
  }
}

const enc = new TextEncoder();

async function writeAll(conn: Deno.Conn, b: Uint8Array): Promise<void> {
  for (let off = 0; off < b.length;) off += await conn.write(b.subarray(off));
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** Reads one response: status line, headers, and a Content-Length body. */
export async function readAnswer(
  conn: { read(p: Uint8Array): Promise<number | null> },
): Promise<ApiAnswer> {
  let buf: Uint8Array = new Uint8Array(0);
  const chunk = new Uint8Array(16384);
  const more = async () => {
    const n = await conn.read(chunk);
    if (n === null) throw new UnavailableError("The VMM closed its API connection mid-answer");
    buf = concat(buf, chunk.subarray(0, n));
  };
  let end: number;
  while ((end = indexOf(buf, HEAD_END)) < 0) {
    if (buf.length > 65536) throw new UnavailableError("The VMM's answer has no end of headers");
    await more();
  }
  const lines = new TextDecoder().decode(buf.subarray(0, end)).split("\r\n");
  const status = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]);
  if (!status) throw new UnavailableError(`Not an HTTP answer: ${JSON.stringify(lines[0])}`);
  const headers = new Map(
    lines.slice(1).map((l) => {
      const i = l.indexOf(":");
      return [l.slice(0, i).trim().toLowerCase(), l.slice(i + 1).trim()] as const;
    }),
  );
  if (headers.get("transfer-encoding")) {
    throw new UnavailableError(
      "The VMM answered with a Transfer-Encoding this client does not read",
    );
  }
  const length = Number(headers.get("content-length") ?? "0");
  if (!Number.isSafeInteger(length) || length < 0 || length > MAX_BODY) {
    throw new UnavailableError(`The VMM's answer has a bad Content-Length: ${length}`);
  }
  const start = end + HEAD_END.length;
  while (buf.length < start + length) await more();
  return {
    status: Number(status[1]),
    body: new TextDecoder().decode(buf.subarray(start, start + length)),
  };
}

const HEAD_END = enc.encode("\r\n\r\n");

function indexOf(hay: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}
