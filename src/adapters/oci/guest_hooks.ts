/**
 * OCI hooks in a VM's guest: the spec's hooks name programs by path, and
 * only those the guest has can run there (a host's GPU or network hook is
 * not in the guest image). Kuasar's agent runs the hooks it can; so does
 * this one, through runc, after dropping the others with a log line:
 * createRuntime, createContainer and startContainer, poststart, poststop,
 * and the deprecated prestart.
 *
 * @module
 */
import type { OciSpec } from "../../domain/oci.ts";

interface Hook {
  path?: unknown;
  [key: string]: unknown;
}

/** The spec with only the hooks whose program `runnable` says exists; what was dropped. */
export function keepRunnableHooks(
  spec: OciSpec,
  runnable: (path: string) => boolean,
): { spec: OciSpec; dropped: string[] } {
  const hooks = spec.hooks as Record<string, Hook[] | undefined> | undefined;
  if (!hooks || typeof hooks !== "object") return { spec, dropped: [] };
  const dropped: string[] = [];
  const kept: Record<string, Hook[]> = {};
  for (const [stage, list] of Object.entries(hooks)) {
    if (!Array.isArray(list)) continue;
    const ok = list.filter((h) => {
      const path = typeof h?.path === "string" ? h.path : "";
      if (path.startsWith("/") && runnable(path)) return true;
      dropped.push(`${stage}: ${path || "(no path)"}`);
      return false;
    });
    if (ok.length) kept[stage] = ok;
  }
  const out: OciSpec = { ...spec };
  if (Object.keys(kept).length) out.hooks = kept;
  else delete out.hooks;
  return { spec: out, dropped };
}

/** Whether `path` is an executable file here. */
export function isExecutableFile(path: string): boolean {
  try {
    const st = Deno.statSync(path);
    return st.isFile && ((st.mode ?? 0) & 0o111) !== 0;
  } catch {
    return false;
  }
}
