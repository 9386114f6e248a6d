/**
 * Finding optional tools (engines) the way a shell would, without a shell.
 *
 * @module
 */
import { join } from "node:path";

/** The first executable file named `name` on PATH (or `name` itself if it has a `/`). */
export function findExecutable(name: string): string | undefined {
  const candidates = name.includes("/")
    ? [name]
    : (Deno.env.get("PATH") ?? "/usr/local/bin:/usr/bin:/bin").split(":").filter(Boolean)
      .map((d) => join(d, name));
  for (const c of candidates) {
    try {
      const st = Deno.statSync(c);
      if (st.isFile && ((st.mode ?? 0) & 0o111)) return c;
    } catch { /* not here */ }
  }
  return undefined;
}

/** The first of `paths` that exists as a file. */
export function firstFile(paths: readonly (string | undefined)[]): string | undefined {
  for (const p of paths) {
    if (!p) continue;
    try {
      if (Deno.statSync(p).isFile) return p;
    } catch { /* not here */ }
  }
  return undefined;
}
