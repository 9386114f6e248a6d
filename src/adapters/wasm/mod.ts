/**
 * The Wasm sandbox kind: `kuasar wasm` / `wasm-sandboxer`.
 *
 * @module
 */
import { join } from "node:path";
import { z } from "zod";
import type { KindParts } from "../../ports/sandbox_kind.ts";
import type { HostKind, HostKindContext } from "../kind_host.ts";
import { Logger } from "../../lib/log.ts";
import { findExecutable, firstFile } from "../os/executables.ts";
import type { NodeCheck } from "../../domain/doctor.ts";
import { ENGINES } from "./host/protocol.ts";
import { WasmHostClient } from "./host_client.ts";
import { WasmContainerRuntime } from "./wasm_container_runtime.ts";
import { WasmSandboxBackend } from "./wasm_sandbox_backend.ts";

/** `[wasm]` of the config file. */
export const wasmSettings = z.strictObject({
  /** Engine of containers that do not ask for one (annotation `io.kuasar.wasm.engine`). */
  engine: z.enum(ENGINES).optional(),
  /** Embedded-engine workers kept ready for new tasks. */
  warm_workers: z.number().int().min(0).max(64).optional(),
  /** libwasmtime.so (Wasmtime's C API) for the wasmtime engine. */
  wasmtime_lib: z.string().min(1).optional(),
  /** `wasmtime` CLI, used for the wasmtime engine when the library is absent. */
  wasmtime: z.string().min(1).optional(),
  /** `wasmedge` CLI for the wasmedge engine. */
  wasmedge: z.string().min(1).optional(),
});

/** Where a Wasmtime C library is looked for when the config names none. */
function defaultWasmtimeLib(): string | undefined {
  const home = Deno.env.get("HOME");
  return firstFile([
    Deno.env.get("KUASAR_WASMTIME_LIB"),
    "/usr/local/lib/libwasmtime.so",
    "/usr/lib/libwasmtime.so",
    home ? join(home, ".cache/kuasar-tools/wasmtime-50.0.1/libwasmtime.so") : undefined,
  ]);
}

/** Descriptor of the Wasm kind. */
export const wasmKind: HostKind = {
  name: "wasm",
  binaryName: "wasm-sandboxer",
  description: "pods of WebAssembly modules (embedded V8/WASI engine, Wasmtime, WasmEdge)",
  defaultListen: "/run/wasm-sandboxer.sock",
  defaultDir: "/run/kuasar-wasm",
  // Not one of Kuasar's (only its vmm reads a file by default): beside vmm's, by kind.
  defaultConfig: "/var/lib/kuasar/config_wasm.toml",
  settingsSchema: wasmSettings,
  nodeChecks({ settings }): Promise<NodeCheck[]> {
    const s = settings as z.infer<typeof wasmSettings>;
    const engine = s.engine ?? "embedded";
    const optional = (name: string, found: string | undefined, install: string): NodeCheck => {
      if (found) return { id: name, kind: "wasm", status: "ok", detail: found };
      return {
        id: name,
        kind: "wasm",
        status: engine === name ? "fail" : "skip",
        detail: engine === name
          ? `[wasm] engine = "${name}", and ${name} is not installed`
          : `${name} is not installed: only containers that ask for it (annotation ` +
            "io.kuasar.wasm.engine) need it",
        fix: install,
      };
    };
    return Promise.resolve([
      { id: "engine", kind: "wasm", status: "ok", detail: "embedded engine (V8 + WASI) in kuasar" },
      optional(
        "wasmtime",
        s.wasmtime_lib ? firstFile([s.wasmtime_lib]) : defaultWasmtimeLib() ??
          findExecutable(s.wasmtime ?? "wasmtime"),
        "scripts/install_wasmtime.sh installs its C library (or set [wasm] wasmtime_lib)",
      ),
      optional(
        "wasmedge",
        findExecutable(s.wasmedge ?? "wasmedge"),
        "install WasmEdge (or set [wasm] wasmedge)",
      ),
    ]);
  },
  create(ctx: HostKindContext): Promise<KindParts> {
    const s = ctx.settings as z.infer<typeof wasmSettings>;
    const host = new WasmHostClient({
      layout: ctx.layout,
      supervisor: ctx.supervisor,
      warm: s.warm_workers ?? 2,
      wasmtimeLib: s.wasmtime_lib ?? defaultWasmtimeLib(),
      wasmtimeCli: s.wasmtime ?? findExecutable("wasmtime"),
      wasmedge: s.wasmedge ?? findExecutable("wasmedge"),
      logLevel: Logger.level,
    });
    return Promise.resolve({
      backend: new WasmSandboxBackend(host),
      runtime: new WasmContainerRuntime({
        dir: ctx.dir,
        layout: ctx.layout,
        supervisor: ctx.supervisor,
        host,
        streams: ctx.streams,
        engine: s.engine ?? "embedded",
      }),
      close: () => {
        host.close();
        return Promise.resolve();
      },
    });
  },
};
