/**
 * An in-memory `SandboxStore` for unit tests. Records are kept as the JSON
 * text a real store would write, so a test can "crash" the daemon and start a
 * new one on what was persisted (`crashClone`).
 *
 * @module
 */
import { AlreadyExistsError } from "../../src/domain/errors.ts";
import { validateId } from "../../src/domain/ids.ts";
import type { SandboxRecord } from "../../src/domain/sandbox.ts";
import type { BrokenRecord, SandboxStore } from "../../src/ports/sandbox_store.ts";

/** Sandbox records in memory, serialised as JSON on every save. */
export class MemorySandboxStore implements SandboxStore {
  /** Sandbox directories that exist (prepared and not removed). */
  readonly dirs: Set<string> = new Set();
  /** id → JSON text of the last saved record. */
  readonly saved: Map<string, string> = new Map();
  /** Number of successful saves, per id. */
  readonly saveCounts: Map<string, number> = new Map();
  /** Set to make the next `save` fail with this error (then cleared). */
  failNextSave?: Error;

  sandboxDir(id: string): string {
    return `/memory/${validateId("sandbox", id)}`;
  }

  async prepare(id: string): Promise<void> {
    await Promise.resolve();
    if (this.dirs.has(id)) {
      throw new AlreadyExistsError(`Sandbox "${id}" already exists (directory present)`);
    }
    this.dirs.add(id);
  }

  async save(record: SandboxRecord): Promise<void> {
    await Promise.resolve();
    if (this.failNextSave) {
      const e = this.failNextSave;
      this.failNextSave = undefined;
      throw e;
    }
    if (!this.dirs.has(record.id)) throw new Error(`no directory for sandbox "${record.id}"`);
    this.saved.set(record.id, JSON.stringify(record));
    this.saveCounts.set(record.id, (this.saveCounts.get(record.id) ?? 0) + 1);
  }

  async list(): Promise<{ records: SandboxRecord[]; broken: BrokenRecord[] }> {
    await Promise.resolve();
    const records: SandboxRecord[] = [];
    const broken: BrokenRecord[] = [];
    for (const id of [...this.dirs].sort()) {
      const text = this.saved.get(id);
      if (text === undefined) {
        broken.push({ id, error: "no record" });
        continue;
      }
      try {
        records.push(JSON.parse(text) as SandboxRecord);
      } catch (e) {
        broken.push({ id, error: (e as Error).message });
      }
    }
    return { records, broken };
  }

  async remove(id: string): Promise<void> {
    await Promise.resolve();
    this.dirs.delete(id);
    this.saved.delete(id);
  }

  /** The record as last persisted (a fresh copy), if any. */
  load(id: string): SandboxRecord | undefined {
    const text = this.saved.get(id);
    return text === undefined ? undefined : JSON.parse(text) as SandboxRecord;
  }

  /** Puts raw text (possibly not JSON) as the record of `id`, as a torn or foreign file would. */
  putRaw(id: string, text: string): void {
    this.dirs.add(id);
    this.saved.set(id, text);
  }

  /** What a restarted daemon finds: a new store holding a copy of everything persisted. */
  crashClone(): MemorySandboxStore {
    const s = new MemorySandboxStore();
    for (const d of this.dirs) s.dirs.add(d);
    for (const [k, v] of this.saved) s.saved.set(k, v);
    return s;
  }
}
