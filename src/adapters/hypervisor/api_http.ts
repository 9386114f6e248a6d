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

/**
 * Reads one response: status line, headers, and a body of its Content-Length (or, without one,
 * to the end of the connection); interim 1xx answers are skipped.
 */
export async function readAnswer(
  conn: { read(p: Uint8Array): Promise<number | null> },
): Promise<ApiAnswer> {
  let buf: Uint8Array = new Uint8Array(0);
  const chunk = new Uint8Array(16384);
  let eof = false;
  const more = async () => {
    const n = await conn.read(chunk);
    if (n === null) {
      eof = true;
      return;
    }
    if (buf.length + n > MAX_BODY + 65536) {
      throw new UnavailableError("The VMM's answer is too big");
    }
    buf = concat(buf, chunk.subarray(0, n));
  };
  for (;;) {
    let end: number;
    while ((end = indexOf(buf, HEAD_END)) < 0) {
      if (buf.length > 65536) throw new UnavailableError("The VMM's answer has no end of headers");
      await more();
      if (eof) throw new UnavailableError("The VMM closed its API connection mid-answer");
    }
    const lines = new TextDecoder().decode(buf.subarray(0, end)).split("\r\n");
    const status = /^HTTP\/1\.[01] (\d{3})(?: |$)/.exec(lines[0]);
    if (!status) throw new UnavailableError(`Not an HTTP answer: ${JSON.stringify(lines[0])}`);
    const code = Number(status[1]);
    const start = end + HEAD_END.length;
    if (code < 200) {
      buf = buf.subarray(start); // 100 Continue and the like: the answer follows
      continue;
    }
    const lengths = new Set<string>();
    for (const l of lines.slice(1)) {
      const i = l.indexOf(":");
      const name = l.slice(0, i).trim().toLowerCase();
      if (name === "transfer-encoding") {
        throw new UnavailableError(
          "The VMM answered with a Transfer-Encoding this client does not read",
        );
      }
      if (name === "content-length") lengths.add(l.slice(i + 1).trim());
    }
    if (lengths.size > 1) throw new UnavailableError("The VMM's answer has two Content-Lengths");
    const [declared] = lengths;
    if (declared !== undefined && !/^\d{1,9}$/.test(declared)) {
      throw new UnavailableError(`The VMM's answer has a bad Content-Length: ${declared}`);
    }
    let length: number;
    if (declared !== undefined) length = Number(declared);
    else if (code === 204 || code === 304) length = 0;
    else {
      while (!eof) await more(); // no length: the body ends with the connection
      length = buf.length - start;
    }
    if (length > MAX_BODY) throw new UnavailableError(`The VMM's answer is too big: ${length}`);
    while (buf.length < start + length) {
      await more();
      if (eof) throw new UnavailableError("The VMM closed its API connection mid-answer");
    }
    return { status: code, body: new TextDecoder().decode(buf.subarray(start, start + length)) };
  }
}

const HEAD_END = enc.encode("\r\n\r\n");

function indexOf(hay: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}
