/**
 * Whether containerd on this node can drive a sandboxer: its version (2.x
 * attaches to the Sandbox API, 1.7 only through shim mode) and its config as
 * containerd itself reads it (the main file, then what its `imports` name:
 * containerd ≥ 2.2 writes `imports = ["/etc/containerd/conf.d/*.toml"]` into
 * the config `containerd config default` prints, but imports nothing a
 * config file does not name): a proxy plugin at the sandboxer's socket, CRI
 * handlers naming it, no pause image pull, and a `runtime_type` whose stub
 * containerd can resolve.
 *
 * @module
 */
import { dirname, isAbsolute, join } from "node:path";
import { parse as parseToml } from "smol-toml";
import type { NodeCheck } from "../../domain/doctor.ts";
import { messageOf } from "../../domain/errors.ts";
import { findExecutable } from "../os/executables.ts";
import { toolVersion } from "./probes.ts";

/** containerd's PATH under systemd (its unit sets none). */
export const CONTAINERD_DEFAULT_PATH =
  "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/** Where kuasar install puts the drop-ins, and what containerd's default config imports. */
export const DROP_IN_IMPORT = "/etc/containerd/conf.d/*.toml";

/** A containerd release, as `containerd --version` prints it. */
export interface ContainerdVersion {
  readonly major: number;
  readonly minor: number;
  readonly text: string;
}

/** `containerd github.com/containerd/containerd/v2 v2.4.2 …` → 2.4. */
export function parseContainerdVersion(line: string): ContainerdVersion | undefined {
  const m = line.match(/\sv?(\d+)\.(\d+)\.(\d+)\S*/);
  return m ? { major: Number(m[1]), minor: Number(m[2]), text: m[0].trim() } : undefined;
}

/** One file of containerd's config, parsed. */
export interface ConfigFile {
  readonly path: string;
  readonly doc: Record<string, unknown>;
}

type Table = Record<string, unknown>;
const table = (v: unknown): Table =>
  v && typeof v === "object" && !Array.isArray(v) ? v as Table : {};

function importsOf(doc: Table, file: string): string[] {
  const imports = Array.isArray(doc.imports) ? doc.imports.map(String) : [];
  return imports.flatMap((entry) => expandImport(entry, dirname(file)));
}

/** Whether the `imports` entry `entry` of a config in `base` names the file `file`. */
export function importCovers(entry: string, base: string, file: string): boolean {
  const path = isAbsolute(entry) ? entry : join(base, entry);
  if (dirname(path) !== dirname(file)) return false;
  return globOf(path.slice(path.lastIndexOf("/") + 1)).test(file.slice(file.lastIndexOf("/") + 1));
}

/** A file name pattern (`*`, `?`) as a regular expression. */
function globOf(name: string): RegExp {
  const parts = name.split(/([*?])/).map((p) =>
    p === "*" ? "[^/]*" : p === "?" ? "[^/]" : escapeRegExp(p)
  );
  return new RegExp(`^${parts.join("")}$`);
}

/** Files matching an `imports` entry: a path, or a pattern in its last component. */
function expandImport(entry: string, base: string): string[] {
  const path = isAbsolute(entry) ? entry : join(base, entry);
  const name = path.slice(path.lastIndexOf("/") + 1);
  if (!/[*?]/.test(name)) return [path];
  const re = globOf(name);
  try {
    return [...Deno.readDirSync(dirname(path))].filter((e) => re.test(e.name))
      .map((e) => join(dirname(path), e.name)).sort();
  } catch {
    return [];
  }
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/**
 * The main config and what it imports, in containerd's order (later files
 * override earlier ones key by key). A missing main file is containerd's
 * defaults; a file that does not parse is an error naming it.
 */
export function readContainerdConfig(main: string): ConfigFile[] {
  const files: ConfigFile[] = [];
  const load = (path: string): Table | undefined => {
    let text: string;
    try {
      text = Deno.readTextFileSync(path);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return undefined;
      throw new Error(`${path}: ${messageOf(e)}`);
    }
    try {
      return parseToml(text) as Table;
    } catch (e) {
      throw new Error(`${path} is not valid TOML: ${messageOf(e)}`);
    }
  };
  const doc = load(main) ?? {};
  files.push({ path: main, doc });
  // containerd follows imports breadth-first, imported files' imports included.
  const seen = new Set([main]);
  const pending = importsOf(doc, main);
  while (pending.length) {
    const path = pending.shift()!;
    if (seen.has(path)) continue;
    seen.add(path);
    const d = load(path);
    if (d) {
      files.push({ path, doc: d });
      pending.push(...importsOf(d, path));
    }
  }
  return files;
}

function isDirectory(path: string): boolean {
  try {
    return Deno.statSync(path).isDirectory;
  } catch {
    return false;
  }
}

function existsFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/** A CRI runtime handler found in the config. */
interface Handler {
  readonly name: string;
  readonly file: string;
  readonly settings: Table;
}

/** CRI runtime handlers across the files (v3 tables, and v2 ones containerd 2.x migrates). */
function handlers(files: readonly ConfigFile[]): Handler[] {
  const byName = new Map<string, Handler>();
  for (const f of files) {
    const plugins = table(f.doc.plugins);
    for (const id of ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime"]) {
      const runtimes = table(table(table(plugins[id]).containerd).runtimes);
      for (const [name, settings] of Object.entries(runtimes)) {
        const prev = byName.get(name)?.settings ?? {};
        byName.set(name, { name, file: f.path, settings: { ...prev, ...table(settings) } });
      }
    }
  }
  return [...byName.values()];
}

/** Where containerd finds a shim binary for `runtimeType`, or why it cannot. */
export function resolveShim(
  runtimeType: string,
  containerdBinary: string | undefined,
  path = CONTAINERD_DEFAULT_PATH,
): { path: string } | { why: string } {
  if (isAbsolute(runtimeType)) {
    return findExecutable(runtimeType)
      ? { path: runtimeType }
      : { why: `${runtimeType} does not exist or is not executable` };
  }
  // containerd's rule: io.containerd.kuasar-runc.v1 → containerd-shim-kuasar-runc-v1
  const parts = runtimeType.split(".");
  if (parts.length < 2) return { why: `"${runtimeType}" is not a runtime name` };
  const binary = `containerd-shim-${parts.at(-2)}-${parts.at(-1)}`;
  const dirs = [...path.split(":"), ...(containerdBinary ? [dirname(containerdBinary)] : [])];
  for (const d of dirs) {
    if (d && findExecutable(join(d, binary))) return { path: join(d, binary) };
  }
  return { why: `${binary} is on neither containerd's PATH (${path}) nor beside containerd` };
}

/** What the kind's containerd handlers are checked against. */
export interface SandboxerTarget {
  readonly kind: string;
  /** The sandboxer's Controller socket. */
  readonly listen: string;
}

/**
 * containerd 2.x: a `[proxy_plugins]` entry of type sandbox at the
 * sandboxer's socket, CRI handlers using it, each without pause image pull
 * and with a stub containerd resolves.
 */
export function checkSandboxHandlers(
  files: readonly ConfigFile[],
  target: SandboxerTarget,
  containerdBinary: string | undefined,
): NodeCheck[] {
  const { kind, listen } = target;
  const dropIn = `deploy/containerd/kuasar-${kind}.toml`;
  const copyFix = `copy ${dropIn} (installed as /etc/containerd/conf.d/kuasar-${kind}.toml) ` +
    "into containerd's imports and restart containerd";
  const plugins = new Map<string, { address: string; file: string }>();
  for (const f of files) {
    for (const [name, p] of Object.entries(table(f.doc.proxy_plugins))) {
      const t = table(p);
      if (t.type === "sandbox") {
        plugins.set(name, { address: String(t.address ?? ""), file: f.path });
      }
    }
  }
  const mine = [...plugins].filter(([, p]) => p.address === listen).map(([name]) => name);
  const where = files.map((f) => f.path).join(", ");
  if (!mine.length) {
    const installed = `${dirname(DROP_IN_IMPORT)}/kuasar-${kind}.toml`;
    const unread = !files.some((f) => f.path === installed) && existsFile(installed);
    const elsewhere = plugins.get(`kuasar-${kind}`);
    if (elsewhere && !unread) {
      return [{
        id: "containerd.proxy-plugin",
        kind,
        status: "fail",
        detail: `proxy plugin kuasar-${kind} (${elsewhere.file}) is at ${elsewhere.address}, ` +
          `not at the sandboxer's ${listen}`,
        fix: `make its address ${listen}, or run the sandboxer with --listen ${elsewhere.address}`,
      }];
    }
    return [{
      id: "containerd.proxy-plugin",
      kind,
      status: "fail",
      detail: `no [proxy_plugins] entry of type "sandbox" at ${listen} in ${where}` +
        (unread ? ` (${installed} is there, but no imports line names it)` : ""),
      fix: unread
        ? `add imports = ["${DROP_IN_IMPORT}"] at the top of ${files[0]?.path} (before its ` +
          "first [table]) and restart containerd"
        : copyFix,
    }];
  }
  const out: NodeCheck[] = [{
    id: "containerd.proxy-plugin",
    kind,
    status: "ok",
    detail: `proxy plugin ${mine.join(", ")} at ${listen}`,
  }];
  const using = handlers(files).filter((h) => mine.includes(String(h.settings.sandboxer ?? "")));
  if (!using.length) {
    out.push({
      id: "containerd.handler",
      kind,
      status: "fail",
      detail: `no CRI runtime handler has sandboxer = "${mine[0]}"`,
      fix: copyFix,
    });
    return out;
  }
  for (const h of using) {
    const problems: string[] = [];
    const fixes: string[] = [];
    if (h.settings.disable_pause_image_pull !== true) {
      problems.push("CRI pulls the pause image for it (a node without registry access fails)");
      fixes.push("set disable_pause_image_pull = true");
    }
    const type = String(h.settings.runtime_type ?? "");
    const shim = resolveShim(type, containerdBinary);
    if ("why" in shim) {
      problems.push(`containerd cannot resolve runtime_type "${type}": ${shim.why}`);
      fixes.push(
        isAbsolute(type)
          ? (isDirectory(type)
            ? `${type} is a directory: name the stub binary in it`
            : "start the sandboxer before containerd (it installs the stub at start), or " +
              "kuasar install")
          : `set runtime_type to the stub's absolute path, /var/lib/kuasar/bin/containerd-shim-kuasar-${kind}-v1`,
      );
    }
    out.push(
      problems.length
        ? {
          id: "containerd.handler",
          kind,
          status: "fail",
          detail: `handler ${h.name} (${h.file}): ${problems.join("; ")}`,
          fix: fixes.join("; "),
        }
        : {
          id: "containerd.handler",
          kind,
          status: "ok",
          detail: `handler ${h.name}: stub ${(shim as { path: string }).path}` +
            `${h.settings.io_type ? `, io_type ${h.settings.io_type}` : ""}`,
        },
    );
  }
  return out;
}

/**
 * containerd 1.7: CRI handlers in shim mode whose stub resolves to this
 * kind's `containerd-shim-kuasar-<kind>-v2` (docs/engines.md).
 */
export function checkShimModeHandlers(
  files: readonly ConfigFile[],
  kind: string,
  containerdBinary: string | undefined,
): NodeCheck[] {
  const stub = `containerd-shim-kuasar-${kind}-v2`;
  const using = handlers(files).filter((h) =>
    h.settings.sandbox_mode === "shim" && String(h.settings.runtime_type ?? "").endsWith(stub)
  );
  if (!using.length) {
    return [{
      id: "containerd.handler",
      kind,
      status: "fail",
      detail: `no CRI runtime handler with sandbox_mode = "shim" runs ${stub}`,
      fix: "add the handler of docs/engines.md (containerd 1.7) and restart containerd",
    }];
  }
  return using.map((h): NodeCheck => {
    const shim = resolveShim(String(h.settings.runtime_type), containerdBinary);
    return "why" in shim
      ? {
        id: "containerd.handler",
        kind,
        status: "fail",
        detail: `handler ${h.name}: ${shim.why}`,
        fix: "start the sandboxer: it installs the stub at start",
      }
      : { id: "containerd.handler", kind, status: "ok", detail: `handler ${h.name}: ${shim.path}` };
  });
}

/** containerd as found on the node: its version finding and, when it drives sandboxers, its config. */
export interface ContainerdInspection {
  readonly check: NodeCheck;
  /** Absent when containerd is missing, too old, or its config does not load. */
  readonly config?: {
    readonly files: readonly ConfigFile[];
    /** 1.7: handlers in shim mode rather than proxy plugins. */
    readonly shimMode: boolean;
    readonly binary: string;
  };
}

/** containerd's version and config (`binary` default: containerd on PATH; config default /etc). */
export async function inspectContainerd(
  binary?: string,
  main = "/etc/containerd/config.toml",
): Promise<ContainerdInspection> {
  const id = "containerd";
  const v = await toolVersion(binary ?? "containerd", ["--version"]);
  if ("why" in v) {
    const found = !!findExecutable(binary ?? "containerd");
    return {
      check: found || binary
        ? {
          id,
          status: "fail",
          detail: `containerd does not answer --version: ${v.why}`,
          fix: "pass --containerd with the containerd binary the node runs",
        }
        : {
          id,
          status: "skip",
          detail: `containerd not found (${v.why})`,
          fix: "iSulad nodes: docs/engines.md has its daemon.json",
        },
    };
  }
  const version = /^containerd\s/.test(v.line) ? parseContainerdVersion(v.line) : undefined;
  if (!version) {
    return {
      check: {
        id,
        status: "fail",
        detail: `${v.path} does not say it is containerd: "${v.line}"`,
        fix: "pass --containerd with the containerd binary the node runs",
      },
    };
  }
  const shimMode = version.major === 1 && version.minor === 7;
  if (version.major < 2 && !shimMode) {
    return {
      check: {
        id,
        status: "fail",
        detail: `${v.path} ${version.text} drives no sandboxer (1.7 in shim mode or 2.x needed)`,
        fix: "install containerd 2.x (or pass --containerd with the one containerd runs)",
      },
    };
  }
  let files: ConfigFile[];
  try {
    files = readContainerdConfig(main);
  } catch (e) {
    return {
      check: {
        id,
        status: "fail",
        detail: messageOf(e),
        fix: "fix the file: containerd refuses to start with it",
      },
    };
  }
  const read = `${v.path} ${version.text}; config ${files.map((f) => f.path).join(", ")}`;
  return {
    check: shimMode
      ? {
        id,
        status: "warn",
        detail: `${read}: 1.7 has no Sandbox API, only the shim mode (a stub per pod start, ` +
          "no per-pod process)",
        fix: "containerd 2.x attaches to the sandboxers directly; 1.7 needs docs/engines.md's " +
          "config and ENABLE_CRI_SANDBOXES=1",
      }
      : { id, status: "ok", detail: read },
    config: { files, shimMode, binary: v.path },
  };
}

/** The kind's CRI handlers in the containerd config found (nothing when there is none). */
export function containerdHandlerChecks(
  inspection: ContainerdInspection,
  target: SandboxerTarget,
): NodeCheck[] {
  const c = inspection.config;
  if (!c) return [];
  return c.shimMode
    ? checkShimModeHandlers(c.files, target.kind, c.binary)
    : checkSandboxHandlers(c.files, target, c.binary);
}
