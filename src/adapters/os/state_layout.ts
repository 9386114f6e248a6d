/**
 * What lives directly under a sandboxer's --dir: one directory per pod,
 * named by its id (`<dir>/<id>/`, Kuasar's layout), and the daemon's own
 * entries (exit records, runc's root, sockets, logs…). Pod ids follow
 * containerd's rule (src/domain/ids.ts: they start with a letter or digit),
 * so every daemon entry is named with a leading `.`: no id can ever name,
 * delete or shadow one of them.
 *
 * Versions before this layout used the same names without the dot
 * (`runc`, `exits`, `relay.sock`…), which made `Shutdown("runc")` delete the
 * runc state of every pod. A --dir in that old layout is kept as it is on an
 * upgrade, not moved: running processes hold those paths (monitor helpers
 * write exits to `<dir>/exits/…`, the relay listens on `<dir>/relay.sock`,
 * a Wasm host on `<dir>/wasm-host.sock`), and runsc keeps mounts in its
 * root, so no rename at start-up is safe while pods run. The old names then
 * stay reserved (an id equal to one is refused) until the directory is
 * cleared: the defaults are under /run, so the next boot starts with the
 * new layout.
 *
 * @module
 */
import { basename, dirname, join } from "node:path";
import { validateId } from "../../domain/ids.ts";

/** The daemon's own entries under --dir, by purpose, with their old (pre-dot) names. */
const ENTRIES = {
  /** Exit records of monitored processes (ExitWatcher). */
  exits: "exits",
  /** Short names of unix sockets whose natural path would be too long. */
  sockets: "s",
  /** runc --root of the runC kind (unless configured). */
  runcRoot: "runc",
  /** runsc --root of the gVisor kind (unless configured). */
  runscRoot: "runsc",
  /** The gVisor pods' one-file pause rootfs. */
  pauseRootfs: "pause-rootfs",
  /** The task relay's control socket, backend socket and log. */
  relayControl: "relay.sock",
  relayBackend: "task-backend.sock",
  relayLog: "relay.log",
  /** The Wasm host's control socket, log and stdio sockets. */
  wasmHostSocket: "wasm-host.sock",
  wasmHostLog: "wasm-host.log",
  wasmIo: "wasm-io",
  /** The vmm kind's VM templates (`[hypervisor] template`, unless `template_dir` is set). */
  vmTemplates: "vm-templates",
} as const;

/** A daemon-owned entry under --dir. */
export type DaemonEntry = keyof typeof ENTRIES;

/** The old names, which are valid pod ids. */
export const OLD_ENTRY_NAMES: readonly string[] = Object.values(ENTRIES);

/** The name of `entry` in the current layout. */
export function entryName(entry: DaemonEntry): string {
  return `.${ENTRIES[entry]}`;
}

async function isDir(path: string): Promise<boolean> {
  return await Deno.stat(path).then((s) => s.isDirectory, () => false);
}

async function exists(path: string): Promise<boolean> {
  return await Deno.lstat(path).then(() => true, () => false);
}

/** Where the daemon's entries of one --dir are, and which names pods may not take. */
export class StateLayout {
  readonly dir: string;
  /** Whether the --dir was made by a version that used the old names (still in use). */
  readonly old: boolean;
  readonly #reserved = new Map<string, string>();

  constructor(dir: string, old = false) {
    this.dir = dir;
    this.old = old;
    if (old) { for (const n of OLD_ENTRY_NAMES) this.#reserved.set(n, `its ${n} (old layout)`); }
  }

  /**
   * The layout of an existing --dir: the old one when a previous version's
   * exit directory is there (every version made it at start-up) and the
   * current one's is not. A pod directory named `exits` (its sandbox.json)
   * is a pod, not the old layout.
   */
  static async detect(dir: string): Promise<StateLayout> {
    const oldExits = join(dir, ENTRIES.exits);
    const old = await isDir(oldExits) &&
      !await exists(join(oldExits, "sandbox.json")) &&
      !await exists(join(dir, entryName("exits")));
    return new StateLayout(dir, old);
  }

  /** Path of a daemon entry. */
  path(entry: DaemonEntry): string {
    return join(this.dir, this.old ? ENTRIES[entry] : entryName(entry));
  }

  /**
   * Reserves the name of a configured path directly under --dir (e.g.
   * `[runc] root = "<dir>/runc"`) that an id could take.
   */
  reserve(path: string, what: string): void {
    if (dirname(join(path)) !== join(this.dir)) return;
    const name = basename(path);
    try {
      validateId("sandbox", name);
    } catch {
      return; // no id can take it
    }
    this.#reserved.set(name, what);
  }

  /** What the daemon keeps under `name`, when a pod may not be called so. */
  reservedFor(name: string): string | undefined {
    return this.#reserved.get(name);
  }
}

/**
 * The Wasm host's stdio socket directory, beside the exit directory whose
 * records it writes: the host process knows only the exit file paths, and
 * follows whichever layout the daemon chose.
 */
export function wasmIoDirBeside(exitsDir: string): string {
  const old = basename(exitsDir) === ENTRIES.exits;
  return join(dirname(exitsDir), old ? ENTRIES.wasmIo : entryName("wasmIo"));
}
