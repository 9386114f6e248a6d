/**
 * Sandbox records as `<dir>/<id>/sandbox.json`, written atomically (temporary
 * file, fsync, rename, fsync of the directory) so a crash at any point, of
 * the daemon or the node, leaves the old or the new record, never a torn one.
 *
 * @module
 */
import { join } from "node:path";
import { AlreadyExistsError, FailedPreconditionError } from "../../domain/errors.ts";
import type { SandboxRecord } from "../../domain/sandbox.ts";
import type { BrokenRecord, SandboxStore } from "../../ports/sandbox_store.ts";
import { validateId } from "../../domain/ids.ts";
import { unmountAll } from "../os/mounts.ts";
import { StateLayout } from "../os/state_layout.ts";
import { log } from "../../lib/log.ts";

const RECORD = "sandbox.json";
/** Version of the record layout, bumped on incompatible changes. */
const FORMAT = 1;

async function syncDir(dir: string): Promise<void> {
  const d = await Deno.open(dir, { read: true });
  try {
    await d.sync();
  } finally {
    d.close();
  }
}

/**
 * JSON-file store rooted at the sandboxer's --dir. The daemon's own entries
 * there are named so that no id can take them (see state_layout.ts); only
 * in a --dir of the old layout, or with a root configured as `<dir>/<name>`,
 * are some ids the daemon's, and those are refused, and never removed.
 */
export class JsonSandboxStore implements SandboxStore {
  readonly root: string;
  readonly #layout: StateLayout;
  #log = log.with({ component: "store" });

  constructor(root: string, layout = new StateLayout(root)) {
    this.root = root;
    this.#layout = layout;
  }

  sandboxDir(id: string): string {
    return join(this.root, validateId("sandbox", id));
  }

  async prepare(id: string): Promise<void> {
    const reserved = this.#layout.reservedFor(validateId("sandbox", id));
    if (reserved) {
      throw new FailedPreconditionError(
        `Sandbox id "${id}" is taken by the sandboxer's own state in --dir (${reserved}); ` +
          `choose another id`,
      );
    }
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
      if (!e.isDirectory) continue;
      try {
        validateId("sandbox", e.name);
      } catch {
        continue; // the daemon's own entries (".runc"…) and foreign names: no pod has such an id
      }
      const dir = join(this.root, e.name);
      const reserved = this.#layout.reservedFor(e.name);
      if (reserved && !await Deno.stat(join(dir, RECORD)).then(() => true, () => false)) {
        // Not silently: a pod made under this name would have a record.
        this.#log.info("not a sandbox: the daemon's own state", { entry: e.name, holds: reserved });
        continue;
      }
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
    const reserved = this.#layout.reservedFor(id);
    if (reserved) {
      // A pod an older version let share the daemon's entry: the entry stays, only the record goes.
      this.#log.warn("keeping the daemon's state the sandbox's directory shares", {
        sandbox: id,
        holds: reserved,
      });
      await Deno.remove(join(dir, RECORD)).catch(() => {});
      return;
    }
    await unmountAll(dir);
    await Deno.remove(dir, { recursive: true }).catch((e) => {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    });
  }
}
