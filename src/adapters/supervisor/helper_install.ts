/**
 * Puts the native helper (built from native/*.c) in place. The binary ships
 * inside kuasar (src/gen/helper/) so a node needs nothing else; it is
 * written once per content hash to a directory that allows execution (/run
 * is often mounted noexec, so not under --dir by default). Apart from
 * helper.ts, so what only starts helpers (the guest agent, whose image has
 * the binary) does not carry the embedded copy.
 *
 * @module
 */
import { dirname, join } from "node:path";
import { UnavailableError } from "../../domain/errors.ts";
import { log } from "../../lib/log.ts";

/** Where the helper comes from. */
export interface HelperLocation {
  /** An explicit binary (flag or KUASAR_HELPER); skips the embedded copy. */
  readonly path?: string;
  /** Directory the embedded binary is written to. */
  readonly installDir: string;
}

/** Installs (if needed) and returns the path of the helper binary. */
export async function installHelper(loc: HelperLocation): Promise<string> {
  const candidates = [
    loc.path,
    Deno.env.get("KUASAR_HELPER"),
    join(dirname(Deno.execPath()), "kuasar-helper"),
  ];
  for (const c of candidates) {
    if (c && await isExecutable(c)) return c;
  }
  if (loc.path) {
    throw new UnavailableError(`Helper binary "${loc.path}" is missing or not executable`);
  }
  if (Deno.build.arch !== "x86_64") {
    throw new UnavailableError(
      `No embedded helper for ${Deno.build.arch}: build native/*.c ` +
        "(musl-gcc -static, as scripts/gen_helper.ts does) and pass --helper",
    );
  }
  // A literal specifier, so bundles and compiled binaries carry the module.
  const mod = await import("../../gen/helper/kuasar_helper_x86_64.ts");
  const target = join(loc.installDir, `kuasar-helper-${mod.HELPER_SHA256.slice(0, 16)}`);
  if (await isExecutable(target)) return target;
  await Deno.mkdir(loc.installDir, { recursive: true, mode: 0o755 });
  const bytes = Uint8Array.from(atob(mod.HELPER_BASE64), (c) => c.charCodeAt(0));
  const tmp = `${target}.${crypto.randomUUID()}`;
  await Deno.writeFile(tmp, bytes, { mode: 0o755 });
  await Deno.rename(tmp, target);
  log.info("installed helper binary", { path: target });
  return target;
}

/**
 * Links the helper as containerd's shims of a kind in `dir` (put `dir` on
 * containerd's PATH):
 * - `containerd-shim-kuasar-<kind>-v1`: containerd 2.x requires a binary named
 *   after the runtime_type even when it attaches to a sandboxer directly;
 * - `containerd-shim-kuasar-<kind>-v2`: containerd 1.7's shim mode, which asks
 *   this sandboxer for each pod's address through its backend socket, named in
 *   the file `containerd-shim-kuasar-<kind>-v2.sandboxer` next to it (the last
 *   sandboxer of a kind started with this `dir` is the one it reaches).
 */
export async function installShimStubs(
  helper: string,
  dir: string,
  kind: string,
  backendSocket: string,
): Promise<void> {
  await Deno.mkdir(dir, { recursive: true, mode: 0o755 });
  for (const v of ["v1", "v2"]) {
    await linkAs(helper, join(dir, `containerd-shim-kuasar-${kind}-${v}`));
  }
  const sidecar = join(dir, `containerd-shim-kuasar-${kind}-v2.sandboxer`);
  const tmp = `${sidecar}.${crypto.randomUUID()}`;
  await Deno.writeTextFile(tmp, backendSocket + "\n", { mode: 0o644 });
  await Deno.chmod(tmp, 0o644);
  await Deno.rename(tmp, sidecar);
}

async function linkAs(helper: string, link: string): Promise<void> {
  try {
    if (await Deno.readLink(link) === helper) return;
  } catch { /* absent or not a link */ }
  const tmp = `${link}.${crypto.randomUUID()}`;
  await Deno.symlink(helper, tmp);
  await Deno.rename(tmp, link);
}

async function isExecutable(path: string): Promise<boolean> {
  try {
    const st = await Deno.stat(path);
    return st.isFile && ((st.mode ?? 0) & 0o111) !== 0;
  } catch {
    return false;
  }
}
