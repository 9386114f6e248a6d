/**
 * Which containers are WebAssembly and how their OCI spec maps onto WASI:
 * the entrypoint (`process.args[0]`, resolved inside the rootfs like a
 * chroot would) is the module, `module.wasm#func` names an export to call,
 * args and env pass through, the rootfs is preopened as `/` and every bind
 * mount of a directory at its destination, and the memory limit caps the
 * module's linear memory.
 *
 * @module
 */
import { join } from "node:path";
import { FailedPreconditionError, InvalidArgumentError } from "../../domain/errors.ts";
import type { OciSpec } from "../../domain/oci.ts";
import { isWasm } from "./wasi/module.ts";
import { PathError, resolveIn } from "./wasi/paths.ts";
import { type EngineName, ENGINES } from "./host/protocol.ts";

/** Annotations that mark a container as Wasm (as crun, runwasi and Kuasar read them). */
export const WASM_ANNOTATIONS: Readonly<Record<string, string>> = {
  "module.wasm.image/variant": "compat",
  "module.wasm.image/variant.smart": "compat-smart",
  "run.oci.handler": "wasm",
};

/** Annotation (container or pod) that picks the engine. */
export const ENGINE_ANNOTATION = "io.kuasar.wasm.engine";

/** The module and export a spec's entrypoint names. */
export interface WasmEntry {
  /** Path inside the rootfs. */
  readonly path: string;
  readonly func: string;
}

/** Splits `process.args[0]` into module path and export (`/app.wasm#run`). */
export function wasmEntry(spec: OciSpec): WasmEntry {
  const arg0 = spec.process?.args?.[0];
  if (!arg0) {
    throw new InvalidArgumentError("The container has no entrypoint: process.args is empty");
  }
  const hash = arg0.lastIndexOf("#");
  if (hash > 0 && hash < arg0.length - 1) {
    return { path: arg0.slice(0, hash), func: arg0.slice(hash + 1) };
  }
  return { path: arg0, func: "_start" };
}

/** Whether the spec's annotations say Wasm. */
export function annotatedWasm(spec: OciSpec): boolean {
  const a = spec.annotations ?? {};
  return Object.entries(WASM_ANNOTATIONS).some(([k, v]) => a[k] === v);
}

const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/**
 * Host path of the entrypoint inside `rootfs`, resolved without leaving it. A
 * bare name is looked up in the process's PATH, as runc does for a native
 * entrypoint, so `sh` is found (and refused as not Wasm) like `/bin/sh`.
 */
export function modulePath(
  rootfs: string,
  entry: WasmEntry,
  cwd = "/",
  env: string[] = [],
): string {
  const base = cwd.split("/").filter((c) => c && c !== ".");
  const candidates = entry.path.includes("/") ? [entry.path] : [
    ...(env.find((e) => e.startsWith("PATH="))?.slice(5) ?? DEFAULT_PATH).split(":")
      .filter((d) => d.startsWith("/")).map((d) => `${d}/${entry.path}`),
    entry.path,
  ];
  let why = "";
  for (const c of candidates) {
    try {
      const host = resolveIn(rootfs, base, c, true);
      Deno.statSync(host);
      return host;
    } catch (e) {
      if (!(e instanceof PathError) && !(e instanceof Deno.errors.NotFound)) throw e;
      why ||= e instanceof PathError ? e.message : "no such file";
    }
  }
  throw new FailedPreconditionError(`Cannot find the entrypoint "${entry.path}": ${why}`);
}

/**
 * Throws unless the file at `hostPath` is a Wasm module. A container that is
 * not Wasm is refused with a clear FAILED_PRECONDITION: a Wasm pod has no
 * Linux namespaces to run a native binary in (use the runc handler for those).
 */
export async function checkIsWasm(
  hostPath: string,
  entry: WasmEntry,
  annotated: boolean,
): Promise<void> {
  let head: Uint8Array;
  try {
    using f = await Deno.open(hostPath, { read: true });
    head = new Uint8Array(8);
    let n = 0;
    while (n < 8) {
      const r = await f.read(head.subarray(n));
      if (r === null) break;
      n += r;
    }
    head = head.subarray(0, n);
  } catch (e) {
    throw new FailedPreconditionError(
      `Cannot read the entrypoint "${entry.path}": ${(e as Error).message}`,
    );
  }
  if (isWasm(head)) return;
  throw new FailedPreconditionError(
    annotated
      ? `The container is annotated as Wasm but its entrypoint "${entry.path}" is not a ` +
        `WebAssembly module`
      : `The container is not WebAssembly: its entrypoint "${entry.path}" is not a Wasm module. ` +
        `A Wasm sandbox runs Wasm modules only; run native containers with the runc handler`,
  );
}

/** Bind mounts that are directories become preopens (files cannot be preopened in WASI). */
export async function preopensOf(
  spec: OciSpec,
  rootfs: string,
): Promise<{ guest: string; host: string }[]> {
  const out = [{ guest: "/", host: rootfs }];
  for (const m of spec.mounts ?? []) {
    const bind = m.type === "bind" || (m.options ?? []).some((o) => o === "bind" || o === "rbind");
    if (!bind || !m.source || !m.destination.startsWith("/")) continue;
    try {
      if (!(await Deno.stat(m.source)).isDirectory) continue;
    } catch {
      continue;
    }
    out.push({ guest: m.destination, host: m.source });
  }
  return out;
}

/** `linux.resources.memory.limit`, if positive. */
export function memoryLimitOf(spec: OciSpec): number | undefined {
  const mem = spec.linux?.resources?.memory as { limit?: number } | undefined;
  const limit = Number(mem?.limit ?? 0);
  return limit > 0 ? limit : undefined;
}

/** The engine a container asks for (its annotation, else the pod's, else the default). */
export function engineOf(
  spec: OciSpec,
  podAnnotations: Readonly<Record<string, string>>,
  fallback: EngineName,
): EngineName {
  const asked = spec.annotations?.[ENGINE_ANNOTATION] ?? podAnnotations[ENGINE_ANNOTATION];
  if (!asked) return fallback;
  if (!(ENGINES as readonly string[]).includes(asked)) {
    throw new InvalidArgumentError(
      `Unknown Wasm engine "${asked}" in ${ENGINE_ANNOTATION}: expected ${ENGINES.join(", ")}`,
    );
  }
  return asked as EngineName;
}

/** The bundle's rootfs directory. */
export function rootfsOf(bundle: string, spec: OciSpec): string {
  const p = spec.root?.path ?? "rootfs";
  return p.startsWith("/") ? p : join(bundle, p);
}
