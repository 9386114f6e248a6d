/**
 * The sandboxer's TOML config: `[sandbox]` for daemon-wide settings and one
 * table named after the kind (`[runc]`, `[wasm]`…). Everything is validated
 * at start; an unknown key or a wrong type is an error naming the key, never
 * a silent default.
 *
 * @module
 */
import { parse as parseToml } from "smol-toml";
import { z } from "zod";
import { InvalidArgumentError } from "../domain/errors.ts";

/** `[sandbox]`: settings every kind shares. */
export const sandboxSection = z.strictObject({
  log_level: z.enum(["trace", "debug", "info", "warn", "error"]).optional(),
  /** Task API version Start reports: 3 (containerd ≥ 2.1) or 2 (Kuasar's containerd, iSulad). */
  task_api_version: z.union([z.literal(2), z.literal(3)]).optional(),
  /** Grace period of Stop when the request carries none. */
  stop_timeout_secs: z.number().int().min(0).optional(),
  /** A sandbox created and never started is shut down after this long (0: never). */
  created_sandbox_timeout_secs: z.number().int().min(0).optional(),
  /** containerd's ttrpc socket for task events ("" = only log them). */
  containerd_address: z.string().optional(),
  /** An installed helper binary to use instead of the embedded one. */
  helper: z.string().optional(),
  /** Where the embedded helper is written (must allow exec). */
  helper_dir: z.string().optional(),
  /** OTLP spans to OTEL_EXPORTER_OTLP_ENDPOINT from the start; SIGUSR1 toggles them at run time. */
  enable_tracing: z.boolean().optional(),
});

/** Daemon-wide settings. */
export type SandboxSection = z.infer<typeof sandboxSection>;

/** A parsed config: the shared section and the kind's own (validated by the kind). */
export interface Config {
  readonly sandbox: SandboxSection;
  readonly kind: Record<string, unknown>;
}

/** Formats zod issues as "key.path: message" lines. */
function describe(err: z.ZodError, prefix: string): string {
  return err.issues.map((i) => {
    const path = [prefix, ...i.path.map(String)].filter(Boolean).join(".");
    return `${path}: ${i.message}`;
  }).join("; ");
}

/**
 * Parses config text for `kind`, validating `[sandbox]` and `[<kind>]` with
 * `kindSchema`. Throws `InvalidArgumentError` naming the file and key.
 */
export function parseConfig(
  text: string,
  kind: string,
  kindSchema: z.ZodType,
  source = "config",
): Config {
  let doc: Record<string, unknown>;
  try {
    doc = parseToml(text) as Record<string, unknown>;
  } catch (e) {
    throw new InvalidArgumentError(
      `Cannot parse ${source}: ${(e as Error).message.split("\n")[0]}`,
    );
  }
  const known = new Set(["sandbox", kind]);
  const unknown = Object.keys(doc).filter((k) => !known.has(k));
  if (unknown.length) {
    throw new InvalidArgumentError(
      `Invalid ${source}: unknown table or key ${
        unknown.map((k) => `"${k}"`).join(", ")
      } (expected [sandbox] and [${kind}])`,
    );
  }
  const s = sandboxSection.safeParse(doc.sandbox ?? {});
  if (!s.success) {
    throw new InvalidArgumentError(`Invalid ${source}: ${describe(s.error, "sandbox")}`);
  }
  const k = kindSchema.safeParse(doc[kind] ?? {});
  if (!k.success) throw new InvalidArgumentError(`Invalid ${source}: ${describe(k.error, kind)}`);
  return { sandbox: s.data, kind: k.data as Record<string, unknown> };
}

/** Reads and parses a config file; a missing file is an error only if `required`. */
export async function loadConfig(
  path: string | undefined,
  kind: string,
  kindSchema: z.ZodType,
  required: boolean,
): Promise<Config> {
  if (!path) return parseConfig("", kind, kindSchema);
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound && !required) return parseConfig("", kind, kindSchema);
    throw new InvalidArgumentError(`Cannot read config "${path}": ${(e as Error).message}`);
  }
  return parseConfig(text, kind, kindSchema, `config "${path}"`);
}
