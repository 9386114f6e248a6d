/**
 * Runs one WASI preview1 module with Wasmtime's C API (libwasmtime.so, installed by
 * scripts/install_wasmtime.sh) through Deno FFI.
 *
 * `Wasmtime.run` compiles the module and runs the guest on a thread of Deno's pool for blocking
 * calls (`nonblocking` FFI symbols), so a running guest costs that thread and Wasmtime's own
 * memory, not a Web Worker (a V8 isolate, ~6 MiB); many runs may be in flight at once (Deno's
 * pool has up to 512 threads: one per running guest). Each run gets its own engine with epoch
 * interruption on and the store's deadline one tick ahead: a single
 * `wasmtime_engine_increment_epoch` (that is `interrupt`, given the engine pointer that
 * `onEngine` received) makes the guest trap at its next loop back-edge or function entry. An
 * engine of its own per run keeps that tick from reaching anyone else's guest. A guest blocked
 * inside a WASI call (a read from an empty FIFO, a poll_oneoff sleep) only sees the
 * interruption once that call returns.
 *
 * The C structs passed by value below are laid out as in Wasmtime 50.0.1's headers
 * (`wasmtime/extern.h`, `wasmtime/instance.h`, `wasm.h`), checked with offsetof/sizeof against
 * those headers and by running against the library. Other versions may differ: use the one the
 * install script pins.
 *
 * @module
 */

/** What to run. */
export interface WasmtimeRun {
  /** Host path of the .wasm file. */
  readonly module: string;
  /** Export to call; "_start" for a command module. */
  readonly func: string;
  readonly args: readonly string[];
  /** "K=V" strings. */
  readonly env: readonly string[];
  /** guest path -> host directory; "/" is the container rootfs. */
  readonly preopens: readonly { guest: string; host: string }[];
  /** Bytes; linear memories may not grow past it (wasmtime_store_limiter). */
  readonly memoryLimit?: number;
  /**
   * Host paths (FIFOs or regular files) for the module's stdio; absent = /dev/null for stdin,
   * discarded output. Output files are opened with create + truncate, and opening a FIFO
   * blocks until its other end is open too.
   */
  readonly stdin?: string;
  readonly stdout?: string;
  readonly stderr?: string;
}

/** How a run ended. */
export interface WasmtimeExit {
  /**
   * proc_exit code, 0 when the function returned, 134 on a trap, 137 when interrupted;
   * 127 when the guest could not be started (unreadable, invalid or unlinkable module, no such
   * export, stdio or preopen that cannot be opened) and 1 on another engine error.
   */
  readonly status: number;
  /** Readable reason for a trap/interruption/error, for a log line. */
  readonly message?: string;
  readonly interrupted: boolean;
}

/** A trapped guest, as Wasmtime's CLI reports it: 128 + SIGABRT. */
export const TRAP_STATUS = 134;
/** An interrupted guest: 128 + SIGKILL, what a killed process reports. */
export const INTERRUPTED_STATUS = 137;
/** The guest never ran, as a shell reports a command it could not execute. */
export const NOT_STARTED_STATUS = 127;
/** An engine error other than a trap while the guest ran. */
export const ERROR_STATUS = 1;

// wasmtime/trap.h: `enum wasmtime_trap_code_enum`, WASMTIME_TRAP_CODE_INTERRUPT.
const TRAP_CODE_INTERRUPT = 10;
// wasmtime/extern.h: WASMTIME_EXTERN_FUNC.
const EXTERN_FUNC = 0;
// wasmtime_extern_t: { uint8_t kind; union { wasmtime_func_t func; ... } of; } — the union's
// largest members (global, table, memory, tag) are 24 bytes and it is 8-aligned, so `of`
// starts at 8 and the struct is 32 bytes.
const EXTERN_SIZE = 32;
const EXTERN_OF_OFFSET = 8;
// wasmtime_func_t: { uint64_t store_id; void *__private; } — 16 bytes.
const FUNC_SIZE = 16;
// wasmtime_instance_t: { uint64_t store_id; size_t __private; } — 16 bytes.
const INSTANCE_SIZE = 16;
// wasm_byte_vec_t (= wasm_name_t, wasm_message_t): { size_t size; uint8_t *data; } — 16 bytes.
const BYTE_VEC_SIZE = 16;
// wasmtime_val_t: { uint8_t kind; union wasmtime_valunion of; } — 32 bytes; only room for
// results is needed, their values are not read.
const VAL_SIZE = 32;

const SYMBOLS = {
  wasm_config_new: { parameters: [], result: "pointer" },
  wasmtime_config_epoch_interruption_set: { parameters: ["pointer", "bool"], result: "void" },
  wasm_engine_new_with_config: { parameters: ["pointer"], result: "pointer" },
  wasm_engine_delete: { parameters: ["pointer"], result: "void" },
  wasmtime_engine_increment_epoch: { parameters: ["pointer"], result: "void" },
  wasmtime_store_new: { parameters: ["pointer", "pointer", "pointer"], result: "pointer" },
  wasmtime_store_context: { parameters: ["pointer"], result: "pointer" },
  wasmtime_store_delete: { parameters: ["pointer"], result: "void" },
  wasmtime_store_limiter: {
    parameters: ["pointer", "i64", "i64", "i64", "i64", "i64"],
    result: "void",
  },
  wasmtime_context_set_epoch_deadline: { parameters: ["pointer", "u64"], result: "void" },
  wasmtime_context_set_wasi: { parameters: ["pointer", "pointer"], result: "pointer" },
  wasmtime_linker_new: { parameters: ["pointer"], result: "pointer" },
  wasmtime_linker_delete: { parameters: ["pointer"], result: "void" },
  wasmtime_linker_define_wasi: { parameters: ["pointer"], result: "pointer" },
  wasmtime_linker_instantiate: {
    parameters: ["pointer", "pointer", "pointer", "buffer", "buffer"],
    result: "pointer",
  },
  // Compiling and running take long: on Deno's blocking pool, off the JS thread.
  wasmtime_module_new: {
    parameters: ["pointer", "buffer", "usize", "buffer"],
    result: "pointer",
    nonblocking: true,
  },
  wasmtime_module_delete: { parameters: ["pointer"], result: "void" },
  wasmtime_instance_export_get: {
    parameters: ["pointer", "buffer", "buffer", "usize", "buffer"],
    result: "bool",
  },
  wasmtime_extern_delete: { parameters: ["buffer"], result: "void" },
  wasmtime_func_type: { parameters: ["pointer", "buffer"], result: "pointer" },
  wasm_functype_params: { parameters: ["pointer"], result: "pointer" },
  wasm_functype_results: { parameters: ["pointer"], result: "pointer" },
  wasm_functype_delete: { parameters: ["pointer"], result: "void" },
  wasmtime_func_call: {
    parameters: ["pointer", "buffer", "pointer", "usize", "buffer", "usize", "buffer"],
    result: "pointer",
    nonblocking: true,
  },
  wasmtime_error_exit_status: { parameters: ["pointer", "buffer"], result: "bool" },
  wasmtime_error_message: { parameters: ["pointer", "buffer"], result: "void" },
  wasmtime_error_delete: { parameters: ["pointer"], result: "void" },
  wasmtime_trap_code: { parameters: ["pointer", "buffer"], result: "bool" },
  wasm_trap_message: { parameters: ["pointer", "buffer"], result: "void" },
  wasm_trap_delete: { parameters: ["pointer"], result: "void" },
  wasm_byte_vec_delete: { parameters: ["buffer"], result: "void" },
  wasi_config_new: { parameters: [], result: "pointer" },
  wasi_config_delete: { parameters: ["pointer"], result: "void" },
  wasi_config_set_argv: { parameters: ["pointer", "usize", "buffer"], result: "bool" },
  wasi_config_set_env: { parameters: ["pointer", "usize", "buffer", "buffer"], result: "bool" },
  // These open the file at once, and opening a FIFO waits for its other end: off the JS thread.
  wasi_config_set_stdin_file: {
    parameters: ["pointer", "buffer"],
    result: "bool",
    nonblocking: true,
  },
  wasi_config_set_stdout_file: {
    parameters: ["pointer", "buffer"],
    result: "bool",
    nonblocking: true,
  },
  wasi_config_set_stderr_file: {
    parameters: ["pointer", "buffer"],
    result: "bool",
    nonblocking: true,
  },
  // Wasmtime 50's wasi.h: (config, host_path, guest_path, bool fs_mutable). Some releases
  // took two permission bitmasks instead; this is the signature of the pinned one.
  wasi_config_preopen_dir: {
    parameters: ["pointer", "buffer", "buffer", "bool"],
    result: "bool",
  },
} as const satisfies Deno.ForeignLibraryInterface;

type Lib = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];
type Ptr = NonNullable<Deno.PointerValue>;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** NUL-terminated UTF-8. */
function cstr(s: string): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(encoder.encode(s).length + 1);
  encoder.encodeInto(s, b);
  return b;
}

/**
 * An array of `const char *` for argv/env calls. The strings must outlive the call that uses
 * the array, so they are returned along with it for the caller to keep in scope.
 */
function cstrArray(items: readonly string[]): { ptrs: BigUint64Array; keep: Uint8Array[] } {
  const keep = items.map(cstr);
  const ptrs = new BigUint64Array(Math.max(1, keep.length));
  keep.forEach((b, i) => ptrs[i] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(b))));
  return { ptrs, keep };
}

/** Splits "K=V" at the first "="; an entry without one is a name with an empty value. */
function splitEnv(entry: string): [string, string] {
  const eq = entry.indexOf("=");
  return eq < 0 ? [entry, ""] : [entry.slice(0, eq), entry.slice(eq + 1)];
}

function readPtr(buf: BigUint64Array): Deno.PointerValue {
  return Deno.UnsafePointer.create(buf[0]);
}

/**
 * Wasmtime's trap text is a multi-line report: "error while executing at wasm backtrace:", the
 * frames, then "Caused by:" and the reason. A log line gets the reason and the innermost frame.
 */
export function oneLine(text: string): string {
  const lines = text.split("\n").map((l) => l.trim());
  const cause = lines.indexOf("Caused by:");
  if (cause < 0) return lines.filter(Boolean).join("; ");
  const reason = lines.slice(cause + 1).filter(Boolean).join("; ");
  const frame = lines.slice(0, cause).find((l) => /^0:/.test(l));
  if (frame === undefined) return reason;
  return `${reason} (at ${frame.replace(/^0:\s*/, "").replace(/\s+/g, " ")})`;
}

/** The step name of the guest's own call, in messages. */
const RUNNING = "running";

/** Thrown inside `run` to end it early with a result; never escapes. */
class Stop {
  constructor(readonly exit: WasmtimeExit) {}
}

function notStarted(message: string): Stop {
  return new Stop({ status: NOT_STARTED_STATUS, message, interrupted: false });
}

/** The loaded library. `path` is libwasmtime.so. Throws a clear Error if it cannot be loaded. */
export class Wasmtime {
  #lib: Deno.DynamicLibrary<typeof SYMBOLS> | null;
  #c: Lib;
  /**
   * Engines of runs in flight, by pointer: `interrupt` reaches only these (an engine is deleted
   * when its run ends, on this same thread, so a late interrupt finds it gone, not freed).
   */
  #live = new Map<bigint, Ptr>();
  #closing = false;

  private constructor(lib: Deno.DynamicLibrary<typeof SYMBOLS>) {
    this.#lib = lib;
    this.#c = lib.symbols;
  }

  static open(path: string): Wasmtime {
    let lib: Deno.DynamicLibrary<typeof SYMBOLS>;
    try {
      lib = Deno.dlopen(path, SYMBOLS);
    } catch (e) {
      throw new Error(
        `cannot load the Wasmtime C API from ${path}: ${(e as Error).message} ` +
          "(scripts/install_wasmtime.sh installs libwasmtime 50.0.1)",
        { cause: e },
      );
    }
    return new Wasmtime(lib);
  }

  /**
   * Runs to completion, the guest on a thread of Deno's blocking pool. `onEngine` receives the
   * engine pointer (as bigint) before the guest runs, for `interrupt`.
   */
  async run(spec: WasmtimeRun, onEngine?: (engine: bigint) => void): Promise<WasmtimeExit> {
    const c = this.#open();
    if (this.#closing) throw new Error("the Wasmtime library is closing");
    const config = c.wasm_config_new();
    if (config === null) throw new Error("wasm_config_new failed");
    c.wasmtime_config_epoch_interruption_set(config, true);
    // Takes ownership of the config, even on failure.
    const engine = c.wasm_engine_new_with_config(config);
    if (engine === null) throw new Error("wasm_engine_new_with_config failed");
    const key = BigInt(Deno.UnsafePointer.value(engine));
    this.#live.set(key, engine);
    let store: Deno.PointerValue = null;
    let linker: Deno.PointerValue = null;
    let module: Deno.PointerValue = null;
    try {
      store = c.wasmtime_store_new(engine, null, null);
      if (store === null) throw new Error("wasmtime_store_new failed");
      const cx = c.wasmtime_store_context(store);
      if (cx === null) throw new Error("wasmtime_store_context returned NULL");
      if (spec.memoryLimit !== undefined) {
        // -1 keeps Wasmtime's default for tables, instances and memory counts.
        c.wasmtime_store_limiter(
          store,
          BigInt(Math.max(0, Math.floor(spec.memoryLimit))),
          -1n,
          -1n,
          -1n,
          -1n,
        );
      }
      // Set before the engine is handed out: an interrupt that comes any time after
      // `onEngine`, even while the module compiles, is then already past the deadline.
      c.wasmtime_context_set_epoch_deadline(cx, 1n);
      onEngine?.(key);

      await this.#configureWasi(cx, spec);
      linker = c.wasmtime_linker_new(engine);
      if (linker === null) throw new Error("wasmtime_linker_new failed");
      this.#check(c.wasmtime_linker_define_wasi(linker), "defining WASI");

      let bytes: Uint8Array<ArrayBuffer>;
      try {
        bytes = await Deno.readFile(spec.module);
      } catch (e) {
        throw notStarted(`cannot read ${spec.module}: ${(e as Error).message}`);
      }
      const moduleOut = new BigUint64Array(1);
      this.#check(
        await c.wasmtime_module_new(engine, bytes, BigInt(bytes.length), moduleOut),
        `compiling ${spec.module}`,
      );
      module = readPtr(moduleOut);

      const instance = new Uint8Array(INSTANCE_SIZE);
      const trapOut = new BigUint64Array(1);
      const err = c.wasmtime_linker_instantiate(linker, cx, module, instance, trapOut);
      // An error here (an unknown import, a memory over the limit) means none of the guest ran.
      const early = this.#ended(err, readPtr(trapOut), "instantiating", NOT_STARTED_STATUS);
      if (early) return early;

      const func = this.#exportedFunc(cx, instance, spec.func);
      const results = this.#resultCount(cx, func);
      const resultBuf = new Uint8Array(Math.max(1, results) * VAL_SIZE);
      trapOut[0] = 0n;
      // The buffers stay referenced here until the call on the other thread is over.
      const callErr = await c.wasmtime_func_call(
        cx,
        func,
        null,
        0n,
        resultBuf,
        BigInt(results),
        trapOut,
      );
      return this.#ended(callErr, readPtr(trapOut), RUNNING, ERROR_STATUS) ??
        { status: 0, interrupted: false };
    } catch (e) {
      if (e instanceof Stop) return e.exit;
      throw e;
    } finally {
      if (module !== null) c.wasmtime_module_delete(module);
      if (linker !== null) c.wasmtime_linker_delete(linker);
      if (store !== null) c.wasmtime_store_delete(store);
      this.#live.delete(key);
      c.wasm_engine_delete(engine);
      if (this.#closing && this.#live.size === 0) this.#unload();
    }
  }

  /**
   * Interrupts the running guest of that engine (wasmtime_engine_increment_epoch); an engine
   * whose run has ended is left alone.
   */
  interrupt(engine: bigint): void {
    const p = this.#live.get(engine);
    if (p !== undefined) this.#open().wasmtime_engine_increment_epoch(p);
  }

  /** Unloads the library; with runs in flight, once the last has ended. */
  close(): void {
    if (this.#lib === null) return;
    this.#closing = true;
    if (this.#live.size === 0) this.#unload();
  }

  #unload(): void {
    this.#lib?.close();
    this.#lib = null;
  }

  #open(): Lib {
    if (this.#lib === null) throw new Error("the Wasmtime library was closed");
    return this.#c;
  }

  /** Builds the WASI context and gives it to the store (which then owns it). */
  async #configureWasi(cx: Ptr, spec: WasmtimeRun): Promise<void> {
    const c = this.#c;
    const wasi = c.wasi_config_new();
    if (wasi === null) throw new Error("wasi_config_new failed");
    let owned = true;
    try {
      const argv = cstrArray(spec.args);
      if (!c.wasi_config_set_argv(wasi, BigInt(argv.keep.length), argv.ptrs)) {
        throw notStarted("an argument is not valid UTF-8");
      }
      const pairs = spec.env.map(splitEnv);
      const names = cstrArray(pairs.map((p) => p[0]));
      const values = cstrArray(pairs.map((p) => p[1]));
      if (!c.wasi_config_set_env(wasi, BigInt(pairs.length), names.ptrs, values.ptrs)) {
        throw notStarted("an environment variable is not valid UTF-8");
      }
      // Unset stdio stays Wasmtime's default: an empty stdin and discarded output.
      if (
        spec.stdin !== undefined && !(await c.wasi_config_set_stdin_file(wasi, cstr(spec.stdin)))
      ) {
        throw notStarted(`cannot open stdin ${spec.stdin}`);
      }
      if (
        spec.stdout !== undefined && !(await c.wasi_config_set_stdout_file(wasi, cstr(spec.stdout)))
      ) {
        throw notStarted(`cannot open stdout ${spec.stdout}`);
      }
      if (
        spec.stderr !== undefined && !(await c.wasi_config_set_stderr_file(wasi, cstr(spec.stderr)))
      ) {
        throw notStarted(`cannot open stderr ${spec.stderr}`);
      }
      for (const { guest, host } of spec.preopens) {
        // Writable: the rootfs and volumes are the container's own, as with runc.
        if (!c.wasi_config_preopen_dir(wasi, cstr(host), cstr(guest), true)) {
          throw notStarted(`cannot preopen ${host} as ${guest}`);
        }
      }
      owned = false;
      this.#check(c.wasmtime_context_set_wasi(cx, wasi), "configuring WASI");
    } finally {
      if (owned) c.wasi_config_delete(wasi);
    }
  }

  /** The export `name` as a wasmtime_func_t, or a not-started result. */
  #exportedFunc(cx: Ptr, instance: Uint8Array<ArrayBuffer>, name: string): Uint8Array<ArrayBuffer> {
    const c = this.#c;
    const nameBytes = encoder.encode(name) as Uint8Array<ArrayBuffer>;
    const item = new Uint8Array(EXTERN_SIZE);
    if (!c.wasmtime_instance_export_get(cx, instance, nameBytes, BigInt(nameBytes.length), item)) {
      throw notStarted(`the module exports no function "${name}"`);
    }
    const kind = item[0];
    const func = item.slice(EXTERN_OF_OFFSET, EXTERN_OF_OFFSET + FUNC_SIZE);
    c.wasmtime_extern_delete(item);
    if (kind !== EXTERN_FUNC) throw notStarted(`the module's export "${name}" is not a function`);
    return func;
  }

  /** How many results `func` returns; one that takes parameters cannot be started. */
  #resultCount(cx: Ptr, func: Uint8Array<ArrayBuffer>): number {
    const c = this.#c;
    const ty = c.wasmtime_func_type(cx, func);
    if (ty === null) throw new Error("wasmtime_func_type returned NULL");
    try {
      // Both return a `const wasm_valtype_vec_t *` whose first field is the size_t count.
      const count = (vec: Deno.PointerValue) =>
        vec === null ? 0 : Number(new Deno.UnsafePointerView(vec).getBigUint64(0));
      if (count(c.wasm_functype_params(ty)) > 0) {
        throw notStarted("the function to run takes parameters");
      }
      return count(c.wasm_functype_results(ty));
    } finally {
      c.wasm_functype_delete(ty);
    }
  }

  /**
   * Turns an error/trap pair from a call into the run's end, freeing both; null when the call
   * succeeded. `what` names the step, for messages; `errorStatus` is the status of an error
   * that is neither a trap nor proc_exit.
   */
  #ended(
    err: Deno.PointerValue,
    trap: Deno.PointerValue,
    what: string,
    errorStatus: number,
  ): WasmtimeExit | null {
    const c = this.#c;
    if (trap !== null) {
      try {
        const code = new Uint8Array(1);
        const interrupted = c.wasmtime_trap_code(trap, code) && code[0] === TRAP_CODE_INTERRUPT;
        const msg = new Uint8Array(BYTE_VEC_SIZE);
        c.wasm_trap_message(trap, msg);
        // The text already says "wasm trap: <reason> (at <frame>)".
        const text = this.#takeMessage(msg);
        const message = what === RUNNING ? text : `${text}, while ${what}`;
        return { status: interrupted ? INTERRUPTED_STATUS : TRAP_STATUS, message, interrupted };
      } finally {
        c.wasm_trap_delete(trap);
      }
    }
    if (err === null) return null;
    try {
      const status = new Int32Array(1);
      if (c.wasmtime_error_exit_status(err, status)) {
        return { status: status[0], interrupted: false };
      }
      return {
        status: errorStatus,
        message: `${what}: ${this.#errorText(err)}`,
        interrupted: false,
      };
    } finally {
      c.wasmtime_error_delete(err);
    }
  }

  /** Throws a not-started result for an error from a setup call. */
  #check(err: Deno.PointerValue, what: string): void {
    if (err === null) return;
    let text: string;
    try {
      text = this.#errorText(err);
    } finally {
      this.#c.wasmtime_error_delete(err);
    }
    throw notStarted(`${what}: ${text}`);
  }

  #errorText(err: Ptr): string {
    const msg = new Uint8Array(BYTE_VEC_SIZE);
    this.#c.wasmtime_error_message(err, msg);
    return this.#takeMessage(msg);
  }

  /** Decodes a message (a wasm_byte_vec_t that this side owns) to one line, then frees it. */
  #takeMessage(vec: Uint8Array<ArrayBuffer>): string {
    const view = new DataView(vec.buffer);
    const size = Number(view.getBigUint64(0, true));
    const data = Deno.UnsafePointer.create(view.getBigUint64(8, true));
    let text = "";
    if (size > 0 && data !== null) {
      const copy = new Uint8Array(size);
      Deno.UnsafePointerView.copyInto(data, copy);
      text = decoder.decode(copy);
    }
    this.#c.wasm_byte_vec_delete(vec);
    // wasm_trap_message's text is NUL-terminated and the NUL is counted in the size.
    return oneLine(text.replace(/\0+$/, ""));
  }
}
