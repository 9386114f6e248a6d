import assert from "node:assert/strict";
import { readAnswer } from "./api_http.ts";

/** A reader giving `parts` one read each, then the end. */
function reader(...parts: string[]) {
  const chunks = parts.map((p) => new TextEncoder().encode(p));
  return {
    read(p: Uint8Array): Promise<number | null> {
      const c = chunks.shift();
      if (!c) return Promise.resolve(null);
      p.set(c);
      return Promise.resolve(c.length);
    },
  };
}

Deno.test("api http: an answer split anywhere, interim 1xx skipped, a body to the connection's end", async () => {
  assert.deepEqual(
    await readAnswer(reader("HTTP/1.1 200 OK\r", "\nContent-Length: 2\r\n\r", "\n{", "}")),
    { status: 200, body: "{}" },
  );
  assert.deepEqual(
    await readAnswer(reader("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")),
    { status: 204, body: "" },
  );
  assert.deepEqual(
    await readAnswer(reader("HTTP/1.1 500 Internal\r\nConnection: close\r\n\r\nVm", "Error")),
    { status: 500, body: "VmError" },
  );
});

Deno.test("api http: what is not a well-formed answer is an error, not a guess", async () => {
  for (
    const bad of [
      "HTTP/1.1 2000 OK\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: 0x2\r\n\r\n{}",
      "HTTP/1.1 200 OK\r\nContent-Length: 1e1\r\n\r\n{}",
      "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}",
      "SSH-2.0-OpenSSH\r\n\r\n",
    ]
  ) {
    await assert.rejects(() => readAnswer(reader(bad)), { name: "UnavailableError" }, bad);
  }
});
