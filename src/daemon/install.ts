/**
 * `kuasar install` / `kuasar uninstall`: puts a working sandboxer on a node
 * (or into a staging root) and takes exactly that away again.
 *
 * What goes where (under `root`, naming the node's final paths):
 * - the executable at `<prefix>/bin/kuasar`: the compiled binary, or a
 *   launcher running the bundle on the Deno runtime installed beside it in
 *   `<prefix>/lib/kuasar/`; Kuasar's names (`runc-sandboxer`, …,
 *   `kuasar-ctl`) as links to it;
 * - the helper and containerd's stubs in /var/lib/kuasar/bin, so containerd
 *   finds them before a sandboxer first starts;
 * - per kind: the systemd unit, the containerd 2.x drop-in, the default
 *   config where Kuasar has one (vmm), and the guest image for vmm.
 *
 * Every file written is recorded with its hash in a manifest. Installing
 * again changes only what differs; a config an operator edited is kept; a
 * file that was not installed here is never overwritten (unless `force`).
 * Uninstall removes what the manifest lists and is unchanged, plus what the
 * sandboxers put in the helper directory (helper copies, stubs), then the
 * directories install created if empty. Pods' state (`--dir`) is not
 * touched.
 *
 * @module
 */
import { dirname, isAbsolute, join, normalize, resolve, sep } from "node:path";
import type { HostKind } from "../adapters/kind_host.ts";
import { DEFAULT_GUEST_DIR } from "../adapters/hypervisor/vmm_config.ts";
import { V8_FLAGS } from "../adapters/os/self_command.ts";
import { parse as parseToml } from "smol-toml";
import { importCovers } from "../adapters/doctor/containerd_checks.ts";
import { InvalidArgumentError } from "../domain/errors.ts";
import { containerdDropIn, defaultKindConfig, NODE_PATHS, systemdUnit } from "./deploy_files.ts";

/** What is installed as the `kuasar` executable. */
export type ProgramSource =
  | { readonly form: "compiled"; readonly binary: string }
  | { readonly form: "bundle"; readonly dir: string; readonly deno: string };

export interface InstallOptions {
  /** Staging root (DESTDIR); "/" installs on this node. */
  readonly root: string;
  /** Where the executable goes (`<prefix>/bin`, `<prefix>/lib/kuasar`); default /usr/local. */
  readonly prefix: string;
  readonly kinds: readonly HostKind[];
  readonly program: ProgramSource;
  /** The helper binary's bytes and hash (the embedded one). */
  readonly helper: { readonly bytes: Uint8Array; readonly sha256: string };
  /** Where the vmm guest image is taken from; default /var/lib/kuasar/guest. */
  readonly guestImage?: string;
  /** Replace files install did not put there. */
  readonly force?: boolean;
}

/** The manifest: what install wrote, under `root`. */
export const MANIFEST = "/var/lib/kuasar/install.json";

interface FileEntry {
  readonly type: "file";
  readonly path: string;
  readonly sha256: string;
  readonly mode: number;
  /** An operator may edit it: kept when changed. */
  readonly config?: boolean;
  /** Being written when the manifest was saved: the content it is being replaced by. */
  readonly pending?: string;
}
interface LinkEntry {
  readonly type: "symlink";
  readonly path: string;
  readonly target: string;
}
type Entry = FileEntry | LinkEntry;

interface Manifest {
  readonly version: 1;
  readonly prefix: string;
  readonly kinds: string[];
  readonly entries: Entry[];
  /** Directories install created, parents first. */
  readonly dirs: string[];
}

/** One planned file: its bytes now, or a file to copy (large: runtimes, images). */
type Planned =
  | {
    readonly type: "file";
    readonly path: string;
    readonly mode: number;
    readonly data: Uint8Array;
    readonly config?: boolean;
  }
  | { readonly type: "copy"; readonly path: string; readonly mode: number; readonly from: string }
  | { readonly type: "symlink"; readonly path: string; readonly target: string };

/** What an install or uninstall did, path by path. */
export interface ChangeReport {
  readonly written: string[];
  readonly unchanged: string[];
  readonly removed: string[];
  /** Left in place, with why. */
  readonly kept: { path: string; why: string }[];
  readonly notes: string[];
}

const te = new TextEncoder();

async function sha256(data: Uint8Array<ArrayBuffer>): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", data);
  return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function fileHash(path: string): Promise<string | undefined> {
  try {
    return await sha256(await Deno.readFile(path));
  } catch {
    return undefined;
  }
}

/** A node path as the manifest and the plan name it: absolute, normalized, no "..". */
function nodePath(path: unknown): string {
  if (
    typeof path !== "string" || !isAbsolute(path) || normalize(path) !== path ||
    path.split("/").includes("..")
  ) {
    throw new InvalidArgumentError(
      `not an absolute, normalized node path: ${JSON.stringify(path)}`,
    );
  }
  return path;
}

function under(root: string, path: string): string {
  return join(root, nodePath(path));
}

/**
 * `path` under `root`, refused when an existing component of it is a symlink
 * leading out of the root (a staging root's absolute links name the host's
 * paths): install and uninstall never write or remove outside the root.
 */
async function inside(root: string, path: string): Promise<string> {
  const dest = under(root, path);
  if (resolve(root) === "/") return dest;
  const top = await Deno.realPath(root);
  for (let d = dirname(dest);; d = dirname(d)) {
    let real: string;
    try {
      real = await Deno.realPath(d);
    } catch {
      if (dirname(d) === d) break;
      continue;
    }
    if (real !== top && !real.startsWith(top + sep)) {
      throw new InvalidArgumentError(
        `${dest}: ${d} leads out of the root (to ${real}); refusing to write or remove there`,
      );
    }
    break;
  }
  return dest;
}

/** The launcher of the bundle form: finds its runtime and bundle relative to itself. */
export function launcherScript(): string {
  return `#!/bin/sh
# kuasar: the sandboxer bundle on the Deno runtime installed with it (kuasar install).
# Kuasar's names (runc-sandboxer, kuasar-ctl, ...) link here; the name is passed on.
lib="$(dirname "$(readlink -f "$0")")/../lib/kuasar"
export DENO_NO_UPDATE_CHECK=1
KUASAR_ARGV0="\${0##*/}" exec "$lib/deno" run -A --unstable-vsock --v8-flags=${V8_FLAGS} \\
  "$lib/kuasar.js" "$@"
`;
}

/** Everything install writes, by final path. */
export async function plan(opts: InstallOptions): Promise<{ files: Planned[]; notes: string[] }> {
  const files: Planned[] = [];
  const notes: string[] = [];
  const bin = join(opts.prefix, "bin");
  const exe = join(bin, "kuasar");
  if (opts.program.form === "compiled") {
    files.push({ type: "copy", path: exe, mode: 0o755, from: opts.program.binary });
  } else {
    const { dir, deno } = opts.program;
    const lib = join(opts.prefix, "lib", "kuasar");
    files.push(
      { type: "copy", path: join(lib, "deno"), mode: 0o755, from: deno },
      ...["kuasar.js", "kuasar-wasm-worker.js"].map((f): Planned => ({
        type: "copy",
        path: join(lib, f),
        mode: 0o644,
        from: join(dir, f),
      })),
      { type: "file", path: exe, mode: 0o755, data: te.encode(launcherScript()) },
    );
  }
  for (const name of ["kuasar-ctl", ...opts.kinds.map((k) => k.binaryName)]) {
    files.push({ type: "symlink", path: join(bin, name), target: "kuasar" });
  }
  const helperName = `kuasar-helper-${opts.helper.sha256.slice(0, 16)}`;
  files.push({
    type: "file",
    path: join(NODE_PATHS.helperDir, helperName),
    mode: 0o755,
    data: opts.helper.bytes,
  });
  for (const kind of opts.kinds) {
    for (const v of ["v1", "v2"]) {
      files.push({
        type: "symlink",
        path: join(NODE_PATHS.helperDir, `containerd-shim-kuasar-${kind.name}-${v}`),
        target: helperName,
      });
    }
    files.push(
      {
        type: "file",
        path: join(NODE_PATHS.units, `kuasar-${kind.name}.service`),
        mode: 0o644,
        data: te.encode(systemdUnit(kind, exe)),
        // An operator's edit stays (a drop-in in kuasar-<kind>.service.d/ is the better place).
        config: true,
      },
      {
        type: "file",
        path: join(NODE_PATHS.containerdDropIns, `kuasar-${kind.name}.toml`),
        mode: 0o644,
        data: te.encode(containerdDropIn(kind)),
        config: true,
      },
    );
    const config = defaultKindConfig(kind);
    if (config && kind.defaultConfig) {
      files.push({
        type: "file",
        path: kind.defaultConfig,
        mode: 0o644,
        data: te.encode(config),
        config: true,
      });
    }
    if (kind.name === "vmm") notes.push(...await guestImage(opts, files));
  }
  return { files, notes };
}

/** The vmm guest image's files, unless they are already where they belong. */
async function guestImage(opts: InstallOptions, files: Planned[]): Promise<string[]> {
  const from = opts.guestImage ?? DEFAULT_GUEST_DIR;
  const names: string[] = [];
  try {
    for await (const e of Deno.readDir(from)) if (e.isFile) names.push(e.name);
  } catch (e) {
    if (opts.guestImage) {
      throw new InvalidArgumentError(`--guest-image ${from}: ${(e as Error).message}`);
    }
    return [`vmm: no guest image at ${from} (deno task guest-image builds it): not installed`];
  }
  const dest = under(opts.root, DEFAULT_GUEST_DIR);
  if (await Deno.realPath(from).catch(() => from) === await Deno.realPath(dest).catch(() => "")) {
    return [`vmm: the guest image is in place at ${DEFAULT_GUEST_DIR} (deno task guest-image)`];
  }
  for (const n of names.sort()) {
    files.push({
      type: "copy",
      path: join(DEFAULT_GUEST_DIR, n),
      mode: 0o644,
      from: join(from, n),
    });
  }
  return [];
}

/**
 * Whether containerd's config imports the drop-ins' directory: containerd
 * reads only what its config file's `imports` name (`containerd config
 * default` prints that line since 2.2). Editing an operator's config.toml is
 * theirs to do; install says so.
 */
async function dropInsRead(root: string, kinds: readonly HostKind[]): Promise<string[]> {
  const config = "/etc/containerd/config.toml";
  const line = `imports = ["${NODE_PATHS.containerdDropIns}/*.toml"]`;
  const where = `at the top of ${config} (before its first [table])`;
  let doc: Record<string, unknown>;
  try {
    doc = parseToml(await Deno.readTextFile(under(root, config)));
  } catch (e) {
    return [
      e instanceof Deno.errors.NotFound
        ? `containerd: ${config} is absent, and without it containerd reads no drop-in: ` +
          `write one with ${line} (containerd config default prints it since 2.2)`
        : `containerd: ${config} does not parse (${(e as Error).message})`,
    ];
  }
  const imports = Array.isArray(doc.imports) ? doc.imports.map(String) : [];
  const unread = kinds.map((k) => `${NODE_PATHS.containerdDropIns}/kuasar-${k.name}.toml`)
    .filter((f) => !imports.some((i) => importCovers(i, dirname(config), f)));
  if (!unread.length) return [];
  return [`containerd does not read ${unread.join(", ")}: add ${line} ${where}`];
}

async function readManifest(root: string): Promise<Manifest | undefined> {
  let m: Manifest;
  try {
    m = JSON.parse(await Deno.readTextFile(under(root, MANIFEST))) as Manifest;
    if (!m || !Array.isArray(m.entries) || !Array.isArray(m.dirs)) {
      throw new Error("no entries or dirs list");
    }
    for (const e of m.entries) {
      nodePath(e?.path);
      if (e.type !== "file" && e.type !== "symlink") {
        throw new Error(`entry type ${(e as { type: unknown }).type}`);
      }
    }
    m.dirs.forEach(nodePath);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw new InvalidArgumentError(
      `${under(root, MANIFEST)} is unreadable: ${(e as Error).message}`,
    );
  }
  return m;
}

/** Creates `dir`'s missing parents (0755), recording each under `root`. */
async function mkdirs(
  root: string,
  dir: string,
  created: string[],
  onRecord?: () => Promise<void>,
): Promise<void> {
  const missing: string[] = [];
  for (let d = dir; d !== "/" && d !== "."; d = dirname(d)) {
    try {
      await Deno.lstat(under(root, d));
      break;
    } catch {
      missing.unshift(d);
    }
  }
  for (const d of missing) {
    if (!created.includes(d)) created.push(d);
    await onRecord?.();
    await Deno.mkdir(await inside(root, d), { mode: 0o755 });
    await Deno.chmod(under(root, d), 0o755);
  }
}

/** Writes atomically (temp + rename), with the mode set exactly. */
async function writeAtomically(dest: string, write: (tmp: string) => Promise<void>, mode: number) {
  const tmp = `${dest}.kuasar-install.${crypto.randomUUID().slice(0, 8)}`;
  try {
    await write(tmp);
    await Deno.chmod(tmp, mode);
    await Deno.rename(tmp, dest);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}

/** Installs (or brings up to date) what `plan` lists; idempotent. */
export async function install(opts: InstallOptions): Promise<ChangeReport> {
  if (!opts.root) throw new InvalidArgumentError("--root is empty (the node is --root /)");
  if (!isAbsolute(opts.prefix)) {
    throw new InvalidArgumentError(`--prefix must be an absolute path, not "${opts.prefix}"`);
  }
  const report: ChangeReport = { written: [], unchanged: [], removed: [], kept: [], notes: [] };
  await Deno.mkdir(opts.root, { recursive: true, mode: 0o755 });
  const old = await readManifest(opts.root);
  const ours = new Map((old?.entries ?? []).map((e) => [e.path, e]));
  const dirs = [...(old?.dirs ?? [])];
  const entries: Entry[] = [];
  // The manifest as saved before each change: an install killed half-way leaves a record of
  // what it may have written, so that the next install owns it and uninstall removes it.
  const journal = new Map(ours);
  const save = async (m: Manifest) => {
    await writeAtomically(
      await inside(opts.root, MANIFEST),
      (tmp) => Deno.writeTextFile(tmp, JSON.stringify(m, null, 2) + "\n"),
      0o644,
    );
  };
  const record = () =>
    save({
      version: 1,
      prefix: opts.prefix,
      kinds: [...new Set([...(old?.kinds ?? []), ...opts.kinds.map((k) => k.name)])],
      entries: [...journal.values()],
      dirs,
    });
  const { files, notes } = await plan(opts);
  report.notes.push(...notes, ...await dropInsRead(opts.root, opts.kinds));
  await mkdirs(opts.root, dirname(MANIFEST), dirs);
  for (const f of files) {
    const dest = await inside(opts.root, f.path);
    const mine = ours.get(f.path);
    let st: Deno.FileInfo | undefined;
    try {
      st = await Deno.lstat(dest);
    } catch { /* absent */ }
    if (f.type === "symlink") {
      const current = st?.isSymlink ? await Deno.readLink(dest) : undefined;
      if (current === f.target) {
        report.unchanged.push(f.path);
        if (mine) entries.push(mine);
        continue;
      }
      // A link someone else made (to their own build, say) is theirs, as a file is.
      if (st && !mine && !opts.force) {
        report.kept.push({
          path: f.path,
          why: "not installed by kuasar install (--force replaces it)",
        });
        continue;
      }
      const entry: LinkEntry = { type: "symlink", path: f.path, target: f.target };
      await mkdirs(opts.root, dirname(f.path), dirs, record);
      journal.set(f.path, entry);
      await record();
      // No chmod: it would follow the link (a link's own mode means nothing on Linux).
      const tmp = `${dest}.kuasar-install.${crypto.randomUUID().slice(0, 8)}`;
      await Deno.symlink(f.target, tmp);
      await Deno.rename(tmp, dest);
      entries.push(entry);
      report.written.push(f.path);
      continue;
    }
    const data = f.type === "file" ? f.data : undefined;
    const from = f.type === "copy" ? f.from : "";
    const want = data ? await sha256(data as Uint8Array<ArrayBuffer>) : await fileHash(from);
    if (!want) throw new InvalidArgumentError(`cannot read ${from || f.path}`);
    const have = st?.isFile ? await fileHash(dest) : undefined;
    const config = f.type === "file" && !!f.config;
    const entry: FileEntry = { type: "file", path: f.path, sha256: want, mode: f.mode, config };
    if (have === want) {
      if (mine) {
        if ((st!.mode! & 0o7777) !== f.mode) await Deno.chmod(dest, f.mode);
        entries.push(entry);
      }
      report.unchanged.push(f.path);
      continue;
    }
    if (st) {
      const editedByOperator = mine?.type === "file" && mine.sha256 !== have &&
        mine.pending !== have;
      if (!mine && !opts.force) {
        report.kept.push({
          path: f.path,
          why: "not installed by kuasar install (--force replaces it)",
        });
        continue;
      }
      if (config && editedByOperator && !opts.force) {
        report.kept.push({ path: f.path, why: "edited since install: kept (--force replaces it)" });
        entries.push(mine);
        continue;
      }
    }
    await mkdirs(opts.root, dirname(f.path), dirs, record);
    journal.set(f.path, {
      ...entry,
      sha256: mine?.type === "file" && have === mine.sha256 ? mine.sha256 : want,
      pending: want,
    });
    await record();
    await writeAtomically(
      dest,
      (tmp) => data ? Deno.writeFile(tmp, data, { mode: f.mode }) : Deno.copyFile(from, tmp),
      f.mode,
    );
    entries.push(entry);
    report.written.push(f.path);
  }
  // What an earlier install put there and this one no longer wants (fewer kinds, say).
  const now = new Set(entries.map((e) => e.path));
  for (const e of journal.values()) {
    if (!now.has(e.path)) await removeEntry(opts.root, e, report);
  }
  // And the directories only those held (the guest image's, say).
  const needed = [...now, MANIFEST];
  for (const d of [...dirs].reverse()) {
    if (needed.some((p) => p.startsWith(`${d}/`))) continue;
    await Deno.remove(await inside(opts.root, d)).then(() => {
      dirs.splice(dirs.indexOf(d), 1);
      report.removed.push(d);
    }).catch(() => {/* not empty: someone else's files */});
  }
  await save({
    version: 1,
    prefix: opts.prefix,
    kinds: opts.kinds.map((k) => k.name),
    entries,
    dirs,
  });
  return report;
}

async function removeEntry(root: string, e: Entry, report: ChangeReport): Promise<void> {
  const dest = await inside(root, e.path);
  try {
    const st = await Deno.lstat(dest);
    if (e.type === "symlink") {
      if (!st.isSymlink || await Deno.readLink(dest) !== e.target) {
        report.kept.push({ path: e.path, why: "no longer the link install made: kept" });
        return;
      }
    } else if (
      !st.isFile || ![e.sha256, e.pending].includes(await fileHash(dest))
    ) {
      report.kept.push({ path: e.path, why: "changed since install: kept" });
      return;
    }
    await Deno.remove(dest);
    report.removed.push(e.path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
}

/** Files of this program the sandboxers themselves put in the helper directory. */
function isHelperDirFile(name: string): boolean {
  return name.startsWith("kuasar-helper-") || name.startsWith("containerd-shim-kuasar-");
}

/** Removes what install put under `root` (and the helper directory's program files). */
export async function uninstall(root: string): Promise<ChangeReport> {
  if (!root) throw new InvalidArgumentError("--root is empty (the node is --root /)");
  const report: ChangeReport = { written: [], unchanged: [], removed: [], kept: [], notes: [] };
  const m = await readManifest(root);
  if (!m) {
    report.notes.push(
      `nothing to do: no ${under(root, MANIFEST)} (kuasar install was not run here)`,
    );
    return report;
  }
  for (const e of [...m.entries].reverse()) await removeEntry(root, e, report);
  try {
    const dir = await inside(root, join(NODE_PATHS.helperDir, "x")).then(dirname);
    for await (const e of Deno.readDir(dir)) {
      if (!isHelperDirFile(e.name)) continue;
      const path = join(NODE_PATHS.helperDir, e.name);
      await Deno.remove(join(dir, e.name)).catch(() => {});
      report.removed.push(path);
    }
  } catch (e) {
    if (e instanceof InvalidArgumentError) throw e;
    /* no helper dir */
  }
  await Deno.remove(under(root, MANIFEST)).catch(() => {});
  report.removed.push(MANIFEST);
  for (const d of [...m.dirs].reverse()) {
    try {
      await Deno.remove(await inside(root, d));
      report.removed.push(d);
    } catch { /* not empty (a user's files, pods' state) or gone */ }
  }
  return report;
}

/** A report as lines for people, paths as on the node (under `root` when staged). */
export function reportLines(report: ChangeReport, root: string): string[] {
  const at = (p: string) => root === "/" ? p : `${root}${p}`;
  return [
    ...report.written.map((p) => `installed ${at(p)}`),
    ...report.removed.map((p) => `removed ${at(p)}`),
    ...report.kept.map((k) => `kept ${at(k.path)}: ${k.why}`),
    ...(report.unchanged.length ? [`${report.unchanged.length} files already up to date`] : []),
    ...report.notes,
  ];
}
