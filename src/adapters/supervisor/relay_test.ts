import assert from "node:assert/strict";
import { join } from "node:path";
import { installHelper } from "./helper_install.ts";
import { Relay } from "./relay.ts";

/** Reads a FIFO until EOF or `ms`; "eof" or "open" (still waiting for a writer's close). */
async function endsWithin(reader: Deno.FsFile, ms: number): Promise<"eof" | "open"> {
  const buf = new Uint8Array(64);
  const read = (async () => {
    while ((await reader.read(buf)) !== null) { /* drain */ }
    return "eof" as const;
  })();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"open">((r) => (timer = setTimeout(() => r("open"), ms)));
  try {
    return await Promise.race([read, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test({
  name: "relay: a held FIFO's output does not end with its writer, only once released",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "relay-hold-" });
    const relay = new Relay(await installHelper({ installDir: join(dir, "bin") }), {
      control: join(dir, "control.sock"),
      backend: join(dir, "backend.sock"),
      log: join(dir, "relay.log"),
    });
    const fifo = join(dir, "stdout");
    const reader = await (async () => {
      await new Deno.Command("mkfifo", { args: [fifo] }).output();
      // containerd's side: the reader, opened before any writer.
      const rw = await Deno.open(fifo, { read: true, write: true });
      const r = await Deno.open(fifo, { read: true });
      rw.close();
      return r;
    })();
    try {
      // Not a FIFO, or no such file: refused, nothing held.
      assert.equal(await relay.hold("pod1", join(dir, "relay.log")), false);
      assert.equal(await relay.hold("pod1", join(dir, "missing")), false);
      const w = await Deno.open(fifo, { write: true });
      assert.equal(await relay.hold("pod1", fifo), true);
      assert.equal(await relay.hold("pod1", fifo), true, "a second hold of the same path is one");
      await w.write(new TextEncoder().encode("before\n"));
      w.close(); // the daemon's own write end goes (a restart)
      assert.equal(await endsWithin(reader, 300), "open");
      await relay.release(fifo);
      assert.equal(await endsWithin(reader, 5000), "eof");
      // A pod's close lets its holds go too; an idle relay may then quit.
      const w2 = await Deno.open(fifo, { write: true });
      assert.equal(await relay.hold("pod2", fifo), true);
      w2.close();
      assert.equal(await endsWithin(reader, 300), "open");
      await relay.close("pod2");
      assert.equal(await endsWithin(reader, 5000), "eof");
    } finally {
      reader.close();
      await relay.quit();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
