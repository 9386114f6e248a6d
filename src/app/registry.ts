/**
 * The in-memory view of every sandbox of this daemon, backed by the store:
 * records, per-sandbox locks, and the latches Wait calls block on.
 *
 * @module
 */
import { NotFoundError } from "../domain/errors.ts";
import { validateId } from "../domain/ids.ts";
import type { SandboxExit, SandboxRecord } from "../domain/sandbox.ts";
import type { ContainerRecord, ExecRecord, ProcessExit } from "../domain/task.ts";
import type { SandboxStore } from "../ports/sandbox_store.ts";
import { KeyedMutex, KeyedRwMutex, Latch } from "../lib/sync.ts";

/** Records, locks and exit latches of all sandboxes. */
export class SandboxRegistry {
  readonly store: SandboxStore;
  /** Serialises every mutation of one sandbox (and its containers). */
  /**
   * Per-sandbox lock: pod-level calls (Controller) take it alone, container
   * calls (Task API) share it and take their container's `containerLock`, so
   * tasks of one pod proceed side by side but never during a pod's Stop.
   */
  readonly lock: KeyedRwMutex = new KeyedRwMutex();
  /** Per-container lock, by container id (ids are unique across pods). */
  readonly containerLock: KeyedMutex = new KeyedMutex();

  /** Runs a Task API call on container `id` of `sandboxId` under both locks. */
  withContainer<T>(sandboxId: string, id: string, fn: () => Promise<T>): Promise<T> {
    return this.lock.runShared(sandboxId, () => this.containerLock.run(id, fn));
  }
  #records = new Map<string, SandboxRecord>();
  #sandboxExits = new Map<string, Latch<SandboxExit>>();
  #processExits = new Map<string, Latch<ProcessExit>>();
  #saves = new Map<string, { tail: Promise<void>; queued?: Promise<void> }>();
  /** container id → sandbox id, so ids stay unique across pods. */
  #containers = new Map<string, string>();
  /**
   * Recovery gates: set while the records are listed, then one per pod until
   * that pod is recovered. Task calls the relay replays after a crash wait on
   * them, so they meet the recovered state, not the one recovery undoes.
   */
  #listing: Latch<void> | undefined;
  #recovering = new Map<string, Latch<void>>();

  constructor(store: SandboxStore) {
    this.store = store;
  }

  /** The record of `id`: INVALID_ARGUMENT for a malformed id, NOT_FOUND for an unknown one. */
  get(id: string): SandboxRecord {
    const r = this.#records.get(validateId("sandbox", id));
    if (!r) throw new NotFoundError(`Sandbox "${id}" not found`);
    return r;
  }

  /** The record of `id` if known (INVALID_ARGUMENT for a malformed id). */
  find(id: string): SandboxRecord | undefined {
    return this.#records.get(validateId("sandbox", id));
  }

  has(id: string): boolean {
    return this.#records.has(id);
  }

  all(): SandboxRecord[] {
    return [...this.#records.values()];
  }

  /** Holds task calls until `recovering` names the pods found on disk (idempotent). */
  beginRecovery(): void {
    this.#listing ??= new Latch<void>();
  }

  /** The pods being recovered: their task calls wait for `recovered`; others go on. */
  recovering(ids: readonly string[]): void {
    for (const id of ids) if (!this.#recovering.has(id)) this.#recovering.set(id, new Latch());
    this.#listing ??= new Latch<void>();
    this.#listing.set();
  }

  /** Pod `id` is recovered (or could not be): its task calls go on. */
  recovered(id: string): void {
    this.#recovering.get(id)?.set();
    this.#recovering.delete(id);
  }

  /** Resolves once pod `id` is not (or no longer) being recovered. */
  async whenRecovered(id: string): Promise<void> {
    if (this.#listing) await this.#listing.wait();
    await this.#recovering.get(id)?.wait();
  }

  /** Registers a record (after Create or recovery). */
  add(record: SandboxRecord): void {
    this.#records.set(record.id, record);
    const latch = new Latch<SandboxExit>();
    if (record.state === "stopped" && record.exit) latch.set(record.exit);
    this.#sandboxExits.set(record.id, latch);
    for (const c of Object.values(record.containers)) this.addContainer(record.id, c);
  }

  /** Forgets a sandbox; pending waiters are released with its exit (or a synthetic one). */
  remove(id: string, exit: SandboxExit): void {
    const r = this.#records.get(id);
    if (!r) return;
    for (const cid of Object.keys(r.containers)) this.removeContainer(cid);
    this.#sandboxExits.get(id)?.set(exit);
    this.#sandboxExits.delete(id);
    this.#records.delete(id);
  }

  /**
   * Persists a sandbox record. Records are mutated in place, so saves of one
   * sandbox coalesce: while a write runs, later calls share one queued write,
   * which stores the latest state.
   */
  save(record: SandboxRecord): Promise<void> {
    const id = record.id;
    const st = this.#saves.get(id);
    if (st?.queued) return st.queued;
    const prev = st?.tail ?? Promise.resolve();
    const queued: Promise<void> = prev.catch(() => {}).then(() => {
      const cur = this.#saves.get(id);
      if (cur?.queued === queued) cur.queued = undefined;
      // A sandbox removed meanwhile must not reappear on disk.
      if (this.#records.get(id) !== record) return;
      return this.store.save(record);
    });
    this.#saves.set(id, { tail: queued, queued });
    queued.finally(() => {
      if (this.#saves.get(id)?.tail === queued) this.#saves.delete(id);
    }).catch(() => {});
    return queued;
  }

  /** Resolves once no write of `id` is running or queued. */
  async flushSaves(id: string): Promise<void> {
    for (let st = this.#saves.get(id); st; st = this.#saves.get(id)) {
      await st.tail.catch(() => {});
    }
  }

  sandboxExit(id: string): Latch<SandboxExit> {
    const l = this.#sandboxExits.get(validateId("sandbox", id));
    if (!l) throw new NotFoundError(`Sandbox "${id}" not found`);
    return l;
  }

  /** The sandbox holding container `cid`, if any. */
  sandboxOfContainer(cid: string): string | undefined {
    return this.#containers.get(cid);
  }

  addContainer(sandboxId: string, c: ContainerRecord): void {
    this.#containers.set(c.id, sandboxId);
    this.#processExits.set(c.id, latchFor(c));
    for (const e of Object.values(c.execs)) this.addExec(c.id, e);
  }

  removeContainer(cid: string): void {
    this.#containers.delete(cid);
    for (const k of [...this.#processExits.keys()]) {
      if (k === cid || k.startsWith(cid + "/")) this.#processExits.delete(k);
    }
  }

  addExec(cid: string, e: ExecRecord): void {
    this.#processExits.set(`${cid}/${e.id}`, latchFor(e));
  }

  removeExec(cid: string, execId: string): void {
    this.#processExits.delete(`${cid}/${execId}`);
  }

  /** The exit latch of a container's init (no exec id) or of an exec process. */
  processExit(cid: string, execId?: string): Latch<ProcessExit> {
    const key = execId ? `${cid}/${execId}` : cid;
    const l = this.#processExits.get(key);
    if (!l) throw new NotFoundError(`Process "${key}" not found`);
    return l;
  }
}

function latchFor(p: { exit?: ProcessExit; state: string }): Latch<ProcessExit> {
  const l = new Latch<ProcessExit>();
  if (p.state === "stopped" && p.exit) l.set(p.exit);
  return l;
}
