/**
 * The Wasm test modules, built from tests/wasm/ by the suite itself: WAT with
 * wabt's `wat2wasm`, C with `clang --target=wasm32-wasi` and wasi-libc
 * (Debian packages). Built once per source content into a shared cache.
 *
 * @module
 */
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { CreateTaskRequest } from "../../src/gen/containerd/runtime/task/v3/shim.ts";
import type { TestDaemon } from "./daemon.ts";
import { has } from "./env.ts";
import { createRequest, createTask, randomId, type TestPod } from "./pod.ts";

const SRC = fileURLToPath(new URL("../wasm/", import.meta.url));
const CACHE = Deno.env.get("KUASAR_TEST_WASM") ?? "/var/cache/kuasar-test/wasm";

/** The modules by name (file name without extension). */
export type WasmModules = Record<
  "hello" | "exit3" | "loop" | "trap" | "echo" | "cat" | "memhog",
  string
>;

/** Why Wasm tests cannot build their modules here, or undefined. */
export function wasmToolsUnavailable(): string | undefined {
  if (!has("wat2wasm")) return "wat2wasm is not installed (Debian package wabt)";
  if (!has("clang")) return "clang is not installed";
  try {
    Deno.statSync("/usr/include/wasm32-wasi/stdio.h");
  } catch {
    return "wasi-libc is not installed (Debian package wasi-libc)";
  }
  return undefined;
}

/** Where the suite finds libwasmtime (scripts/install_wasmtime.sh puts it there). */
export const WASMTIME_LIB = Deno.env.get("KUASAR_WASMTIME_LIB") ??
  join(Deno.env.get("HOME") ?? "/root", ".cache/kuasar-tools/wasmtime-50.0.1/libwasmtime.so");

/** Why the wasmtime engine cannot be tested here, or undefined. */
export function wasmtimeUnavailable(): string | undefined {
  try {
    Deno.statSync(WASMTIME_LIB);
    return undefined;
  } catch {
    return `libwasmtime is not installed at ${WASMTIME_LIB} (scripts/install_wasmtime.sh)`;
  }
}

async function hash(data: Uint8Array<ArrayBuffer>): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  return Array.from(d.subarray(0, 8), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function run(cmd: string, args: string[]): Promise<void> {
  const r = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  if (!r.success) {
    throw new Error(`${cmd} ${args.join(" ")} failed: ${new TextDecoder().decode(r.stderr)}`);
  }
}

/** Builds (or finds cached) every test module; returns their paths. */
export async function buildWasmModules(): Promise<WasmModules> {
  await Deno.mkdir(CACHE, { recursive: true });
  const out: Record<string, string> = {};
  for await (const e of Deno.readDir(SRC)) {
    const m = e.name.match(/^(.*)\.(wat|c)$/);
    if (!m) continue;
    const src = join(SRC, e.name);
    const target = join(CACHE, `${m[1]}-${await hash(await Deno.readFile(src))}.wasm`);
    try {
      await Deno.stat(target);
    } catch {
      const tmp = `${target}.${crypto.randomUUID()}`;
      if (m[2] === "wat") await run("wat2wasm", [src, "-o", tmp]);
      else await run("clang", ["--target=wasm32-wasi", "-O2", "-s", "-o", tmp, src]);
      await Deno.rename(tmp, target);
    }
    out[m[1]] = target;
  }
  return out as WasmModules;
}

/** A container of a Wasm pod. */
export interface WasmContainerOptions {
  /** Module (a key of WasmModules) placed in the image as /app.wasm. */
  readonly module: keyof WasmModules;
  /** process.args after args[0] ("/app.wasm", or "/app.wasm#func" with `func`). */
  readonly args?: string[];
  readonly func?: string;
  readonly env?: string[];
  readonly stdin?: string;
  readonly stdout?: string;
  readonly stderr?: string;
  readonly memoryLimit?: number;
  readonly annotations?: Record<string, string>;
  /** Host directory bind-mounted at /data. */
  readonly dataDir?: string;
  /** Use this file as the entrypoint instead of a module (non-Wasm containers). */
  readonly entrypoint?: string;
}

/**
 * Writes an image-like lower layer (the module as /app.wasm, /etc/motd) and a
 * bundle as containerd's CRI plugin would, and calls Task.Create with an
 * overlay rootfs mount of that layer.
 */
export async function createWasmContainer(
  d: TestDaemon,
  pod: TestPod,
  modules: WasmModules,
  o: WasmContainerOptions,
  id = randomId(),
): Promise<{ id: string; pid: number; bundle: string }> {
  return await createTask(pod, await prepareWasmContainer(d, pod, modules, o, id));
}

/** Writes the layer and bundle of `createWasmContainer`; returns its Task.Create request. */
export async function prepareWasmContainer(
  d: Pick<TestDaemon, "base">,
  pod: Pick<TestPod, "id">,
  modules: WasmModules,
  o: WasmContainerOptions,
  id = randomId(),
): Promise<CreateTaskRequest> {
  const layer = join(d.base, "layers", id);
  await Deno.mkdir(join(layer, "etc"), { recursive: true });
  await Deno.copyFile(modules[o.module], join(layer, "app.wasm"));
  await Deno.writeTextFile(join(layer, "etc/motd"), "motd from the image\n");
  const bundle = join(d.base, "bundles", id);
  await Deno.mkdir(join(bundle, "rootfs"), { recursive: true });
  const upper = join(d.base, "snapshots", id, "upper"),
    work = join(d.base, "snapshots", id, "work");
  await Deno.mkdir(upper, { recursive: true });
  await Deno.mkdir(work, { recursive: true });
  const spec = {
    ociVersion: "1.1.0",
    process: {
      args: [o.entrypoint ?? (o.func ? `/app.wasm#${o.func}` : "/app.wasm"), ...(o.args ?? [])],
      env: o.env ?? ["PATH=/"],
      cwd: "/",
      user: { uid: 0, gid: 0 },
    },
    root: { path: "rootfs" },
    mounts: [
      { destination: "/proc", type: "proc", source: "proc", options: ["nosuid"] },
      ...(o.dataDir
        ? [{ destination: "/data", type: "bind", source: o.dataDir, options: ["rbind", "ro"] }]
        : []),
    ],
    annotations: {
      "io.kubernetes.cri.container-type": "container",
      "io.kubernetes.cri.sandbox-id": pod.id,
      ...o.annotations,
    },
    linux: {
      resources: o.memoryLimit ? { memory: { limit: o.memoryLimit } } : {},
      namespaces: [{ type: "pid" }, { type: "mount" }],
    },
  };
  await Deno.writeTextFile(join(bundle, "config.json"), JSON.stringify(spec));
  return createRequest(id, bundle, [{
    type: "overlay",
    source: "overlay",
    target: "",
    options: [`lowerdir=${layer}`, `upperdir=${upper}`, `workdir=${work}`],
  }], o);
}
