/**
 * Sandbox records as `<dir>/<id>/sandbox.json`, written atomically (temporary
 * file, fsync, rename, fsync of the directory) so a crash at any point, of
 * the daemon or the node, leaves the old or the new record, never a torn one.
 *
 * @module
 */
import { join } from "node:path";
import { AlreadyExistsError } from "../../domain/errors.ts";
import type { SandboxRecord } from "../../domain/sandbox.ts";
import type { BrokenRecord, SandboxStore } from "../../ports/sandbox_store.ts";
import { validateId } from "../../domain/ids.ts";
import { unmountAll } from "../os/mounts.ts";

const RECORD = "sandbox.json";
/** Version of the record layout, bumped on incompatible changes. */
const FORMAT = 1;

/**
 * Directory names under --dir that are not sandboxes (daemon-wide state of
 * the kinds: exit records, sockets, runc's and runsc's roots, the gVisor
 * pods' pause rootfs, the Wasm host's io sockets); a restart must not take
 * them for the remains of a crashed Create.
 */
const RESERVED = new Set(["exits", "s", "runc", "runsc", "pause-rootfs", "wasm-io"]);

async function syncDir(dir: string): Promise<void> {
  const d = await Deno.open(dir, { read: true });
  try {
    await d.sync();
  } finally {
    d.close();
  }
}

/** JSON-file store rooted at the sandboxer's --dir. */
export class JsonSandboxStore implements SandboxStore {
  readonly root: string;

  constructor(root: string) {
    this.root = root;
  }

  sandboxDir(id: string): string {
    return join(this.root, validateId("sandbox", id));
  }

  async prepare(id: string): Promise<void> {
    try {
      await Deno.mkdir(this.sandboxDir(id), { mode: 0o700 });
    } catch (e) {
      if (e instanceof Deno.errors.AlreadyExists) {
        throw new AlreadyExistsError(`Sandbox "${id}" already exists (directory present)`);
      }
      throw e;
    }
    // The new directory's entry, so the first record saved in it survives a power loss too.
    await syncDir(this.root);
  }

  async save(record: SandboxRecord): Promise<void> {
    const dir = this.sandboxDir(record.id);
    const tmp = join(dir, `.${RECORD}.${crypto.randomUUID()}`);
    const body = new TextEncoder().encode(JSON.stringify({ format: FORMAT, record }));
    const f = await Deno.open(tmp, { write: true, createNew: true, mode: 0o600 });
    try {
      let off = 0;
      while (off < body.length) off += await f.write(body.subarray(off));
      await f.sync();
    } finally {
      f.close();
    }
    try {
      await Deno.rename(tmp, join(dir, RECORD));
    } catch (e) {
      await Deno.remove(tmp).catch(() => {});
      throw e;
    }
    // The rename itself survives a power loss only once the directory is synced.
    await syncDir(dir);
  }

  async list(): Promise<{ records: SandboxRecord[]; broken: BrokenRecord[] }> {
    const records: SandboxRecord[] = [];
    const broken: BrokenRecord[] = [];
    let entries: Deno.DirEntry[];
    try {
      entries = await Array.fromAsync(Deno.readDir(this.root));
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return { records, broken };
      throw e;
    }
    for (const e of entries) {
      if (!e.isDirectory || RESERVED.has(e.name)) continue;
      try {
        validateId("sandbox", e.name);
      } catch {
        continue; // not ours
      }
      const dir = join(this.root, e.name);
      try {
        const j = JSON.parse(await Deno.readTextFile(join(dir, RECORD)));
        if (j.format !== FORMAT || j.record?.id !== e.name) {
          throw new Error(`unexpected record format`);
        }
        records.push(j.record as SandboxRecord);
      } catch (err) {
        broken.push({ id: e.name, error: (err as Error).message });
      }
      // Temporary files of a write interrupted by a crash.
      for await (const f of Deno.readDir(dir)) {
        if (f.name.startsWith(`.${RECORD}.`)) await Deno.remove(join(dir, f.name)).catch(() => {});
      }
    }
    return { records, broken };
  }

  async remove(id: string): Promise<void> {
    const dir = this.sandboxDir(id);
    await unmountAll(dir);
    await Deno.remove(dir, { recursive: true }).catch((e) => {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    });
  }
}
