/**
 * Port: where sandbox records live between restarts.
 *
 * @module
 */
import type { SandboxRecord } from "../domain/sandbox.ts";

/** A record that could not be read back, with the reason. */
export interface BrokenRecord {
  readonly id: string;
  readonly error: string;
}

/** Durable storage of sandbox records; `save` must be atomic (a crash leaves old or new). */
export interface SandboxStore {
  /** The directory owned by a sandbox (created by `prepare`, removed by `remove`). */
  sandboxDir(id: string): string;
  /** Creates the sandbox directory; fails if it already exists. */
  prepare(id: string): Promise<void>;
  /** Persists a record atomically. */
  save(record: SandboxRecord): Promise<void>;
  /** Every record on disk, and the directories that hold no readable record. */
  list(): Promise<{ records: SandboxRecord[]; broken: BrokenRecord[] }>;
  /** Deletes the sandbox directory and everything in it. */
  remove(id: string): Promise<void>;
}
