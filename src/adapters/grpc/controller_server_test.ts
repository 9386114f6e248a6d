import assert from "node:assert/strict";
import { join } from "node:path";
import { InvalidArgumentError, UnavailableError } from "../../domain/errors.ts";
import { ensureSocketFree } from "./controller_server.ts";

Deno.test("--listen: a stale socket is replaced, a live one refused, anything else left alone", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "s.sock");
    await ensureSocketFree(path); // nothing there
    const live = Deno.listen({ transport: "unix", path });
    await assert.rejects(ensureSocketFree(path), UnavailableError);
    live.close(); // Deno unlinks its socket on close
    // A socket file nobody accepts on (a daemon killed -9): a second name of a bound socket.
    const stale = Deno.listen({ transport: "unix", path: join(dir, "stale.sock") });
    await Deno.link(join(dir, "stale.sock"), path);
    stale.close();
    assert.ok((await Deno.lstat(path)).isSocket);
    await ensureSocketFree(path);
    await assert.rejects(Deno.lstat(path), Deno.errors.NotFound);
    const file = join(dir, "config.toml");
    await Deno.writeTextFile(file, "precious");
    await assert.rejects(ensureSocketFree(file), InvalidArgumentError);
    assert.equal(await Deno.readTextFile(file), "precious");
    await Deno.symlink(file, join(dir, "link"));
    await assert.rejects(ensureSocketFree(join(dir, "link")), InvalidArgumentError);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
