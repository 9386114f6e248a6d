/**
 * Runs real modules on the real libwasmtime (scripts/install_wasmtime.sh). The modules are
 * built here from source: WAT with wabt's wat2wasm, C with clang --target=wasm32-wasi and
 * Debian's wasi-libc. Without the library (or a compiler) the affected tests are ignored and
 * say why.
 */
import assert from "node:assert/strict";
import {
  INTERRUPTED_STATUS,
  oneLine,
  TRAP_STATUS,
  Wasmtime,
  type WasmtimeExit,
  type WasmtimeRun,
} from "./wasmtime_ffi.ts";

const LIB = Deno.env.get("KUASAR_WASMTIME_LIB") ??
  `${Deno.env.get("HOME")}/.cache/kuasar-tools/wasmtime-50.0.1/libwasmtime.so`;

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

const haveLib = exists(LIB);
if (!haveLib) console.log(`SKIP wasmtime_ffi tests: no ${LIB} (run scripts/install_wasmtime.sh)`);

// --- Fixtures -----------------------------------------------------------------------------

const WAT: Record<string, string> = {
  exit3: `(module
    (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
    (memory (export "memory") 1)
    (func (export "_start") (call $exit (i32.const 3))))`,
  loop: `(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))`,
  unreachable: `(module (func $boom unreachable) (func (export "_start") (call $boom)))`,
  answer: `(module (func (export "answer") (result i32) (i32.const 42)))`,
  // Recursion with no end and no shadow stack in linear memory: it is the engine's own
  // stack limit that must stop it (on a Worker's thread, whose native stack is its own size).
  recurse: `(module
    (func $f (param i32) (result i32)
      (i32.add (call $f (i32.add (local.get 0) (i32.const 1))) (local.get 0)))
    (func (export "_start") (drop (call $f (i32.const 0)))))`,
  // 64 pages initially: 4 MiB, over a 1 MiB limit before any code runs.
  bigmem: `(module (memory (export "memory") 64) (func (export "_start")))`,
};

const C: Record<string, string> = {
  hello: `#include <stdio.h>
    int main(void) { puts("hello"); fputs("to stderr\\n", stderr); return 0; }`,
  echo: `#include <stdio.h>
    extern char **environ;
    int main(int argc, char **argv) {
      for (int i = 0; i < argc; i++) printf("arg[%d]=%s\\n", i, argv[i]);
      for (char **e = environ; *e; e++) printf("env %s\\n", *e);
      return 0;
    }`,
  // cat [file...]: stdin when no file is named.
  cat: `#include <stdio.h>
    static int copy(FILE *f) {
      char buf[4096]; size_t n;
      while ((n = fread(buf, 1, sizeof buf, f)) > 0) fwrite(buf, 1, n, stdout);
      return ferror(f) ? 1 : 0;
    }
    int main(int argc, char **argv) {
      if (argc < 2) return copy(stdin);
      for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "r");
        if (!f) { perror(argv[i]); return 2; }
        if (copy(f)) return 1;
        fclose(f);
      }
      return 0;
    }`,
  // Allocates 64 KiB blocks until malloc fails (exit 1) or 64 MiB are taken (exit 0), then
  // prints the total and the size its linear memory reached. The blocks are chained into a
  // list that is used at the end, or clang drops the unused allocations altogether. The line
  // is formatted on the stack and written with write(2): nothing may need the heap by then.
  grow: `#include <stdio.h>
    #include <stdlib.h>
    #include <string.h>
    #include <unistd.h>
    int main(void) {
      size_t total = 0;
      int status = 0;
      void **head = 0;
      while (total < ((size_t)64 << 20)) {
        void **p = malloc(65536);
        if (!p) { status = 1; break; }
        memset(p, 1, 65536);
        *p = head;
        head = p;
        total += 65536;
      }
      char line[64];
      int n = snprintf(line, sizeof line, "%zu %zu\\n", total,
                       (size_t)__builtin_wasm_memory_size(0) * 65536);
      write(1, line, n);
      return head ? status : 3;
    }`,
};

function hasCommand(name: string): boolean {
  return (Deno.env.get("PATH") ?? "").split(":").some((d) => d !== "" && exists(`${d}/${name}`));
}

async function run(cmd: string, args: string[]): Promise<string | null> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  return out.success ? null : `${cmd} failed: ${new TextDecoder().decode(out.stderr).trim()}`;
}

const dir = haveLib ? await Deno.makeTempDir({ prefix: "wasmtime_ffi_test_" }) : "";
/** Module name -> .wasm path, or why it could not be built. */
const built = new Map<string, { path?: string; why?: string }>();

if (haveLib) {
  const wat2wasm = hasCommand("wat2wasm");
  const clang = hasCommand("clang");
  const jobs: Promise<void>[] = [];
  for (const [name, src] of Object.entries(WAT)) {
    if (!wat2wasm) {
      built.set(name, { why: "wat2wasm is not installed (Debian: wabt)" });
      continue;
    }
    jobs.push((async () => {
      await Deno.writeTextFile(`${dir}/${name}.wat`, src);
      const why = await run("wat2wasm", [`${dir}/${name}.wat`, "-o", `${dir}/${name}.wasm`]);
      built.set(name, why ? { why } : { path: `${dir}/${name}.wasm` });
    })());
  }
  // Two at a time: clang for wasm32 takes a core each and the machines have two.
  const cJobs = Object.entries(C);
  const compileNext = async (): Promise<void> => {
    for (let job = cJobs.shift(); job; job = cJobs.shift()) {
      const [name, src] = job;
      if (!clang) {
        built.set(name, { why: "clang is not installed" });
        continue;
      }
      await Deno.writeTextFile(`${dir}/${name}.c`, src);
      const why = await run("clang", [
        "--target=wasm32-wasi",
        "-O2",
        "-o",
        `${dir}/${name}.wasm`,
        `${dir}/${name}.c`,
      ]);
      built.set(
        name,
        why ? { why: `${why} (Debian: wasi-libc, lld)` } : { path: `${dir}/${name}.wasm` },
      );
    }
  };
  jobs.push(compileNext(), compileNext());
  await Promise.all(jobs);
  globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
}

/** Registers a test that needs the library, the named modules and `commands` on PATH. */
function wasmTest(
  name: string,
  modules: string[],
  fn: (m: Record<string, string>) => Promise<void> | void,
  commands: string[] = [],
) {
  const missing = !haveLib
    ? "no libwasmtime"
    : modules.map((m) => built.get(m)?.why).find((w) => w !== undefined) ??
      commands.filter((c) => !hasCommand(c)).map((c) => `${c} is not installed`)[0];
  if (haveLib && missing) console.log(`SKIP ${name}: ${missing}`);
  const paths = Object.fromEntries(modules.map((m) => [m, built.get(m)?.path ?? ""]));
  Deno.test({ name: `wasmtime: ${name}`, ignore: missing !== undefined, fn: () => fn(paths) });
}

function spec(module: string, extra: Partial<WasmtimeRun> = {}): WasmtimeRun {
  return { module, func: "_start", args: ["prog"], env: [], preopens: [], ...extra };
}

/** Opens the library for one test and always closes it. */
async function withLib<T>(fn: (wt: Wasmtime) => T | Promise<T>): Promise<T> {
  const wt = Wasmtime.open(LIB);
  try {
    return await fn(wt);
  } finally {
    wt.close();
  }
}

/**
 * Runs `s` (the guest on a thread of Deno's blocking pool) with `wt`, or a library opened for
 * it. `onEngine` is called with the engine pointer, which only `wt` can interrupt; the result
 * carries when the run's end reached this thread.
 */
async function runTimed(
  s: WasmtimeRun,
  onEngine?: (engine: bigint) => void,
  wt?: Wasmtime,
): Promise<{ exit: WasmtimeExit; at: number }> {
  const go = async (w: Wasmtime) => ({ exit: await w.run(s, onEngine), at: performance.now() });
  return wt ? await go(wt) : await withLib(go);
}

// --- Tests ----------------------------------------------------------------------------------

wasmTest("hello on stdout and stderr, written to regular files", ["hello"], async (m) => {
  const out = `${dir}/hello.out`;
  const err = `${dir}/hello.err`;
  const exit = await withLib((wt) => wt.run(spec(m.hello, { stdout: out, stderr: err })));
  assert.deepEqual(exit, { status: 0, interrupted: false });
  assert.deepEqual(await Deno.readTextFile(out), "hello\n");
  assert.deepEqual(await Deno.readTextFile(err), "to stderr\n");
});

wasmTest("output without a path is discarded", ["hello"], async (m) => {
  assert.deepEqual((await withLib((wt) => wt.run(spec(m.hello)))).status, 0);
});

wasmTest("proc_exit(3) is status 3", ["exit3"], async (m) => {
  assert.deepEqual(await withLib((wt) => wt.run(spec(m.exit3))), { status: 3, interrupted: false });
});

wasmTest("args and env reach the guest", ["echo"], async (m) => {
  const out = `${dir}/echo.out`;
  const exit = await withLib((wt) =>
    wt.run(spec(m.echo, {
      args: ["echo", "two words", "ünïcode"],
      env: ["A=1", "B=x=y", "EMPTY="],
      stdout: out,
    }))
  );
  assert.deepEqual(exit.status, 0);
  assert.deepEqual(
    await Deno.readTextFile(out),
    [
      "arg[0]=echo",
      "arg[1]=two words",
      "arg[2]=ünïcode",
      "env A=1",
      "env B=x=y",
      "env EMPTY=",
      "",
    ].join("\n"),
  );
});

wasmTest(
  "files are read from the rootfs at / and from a second preopen at /data",
  ["cat"],
  async (m) => {
    const root = `${dir}/rootfs`;
    const data = `${dir}/volume`;
    await Deno.mkdir(`${root}/etc`, { recursive: true });
    await Deno.mkdir(data, { recursive: true });
    await Deno.writeTextFile(`${root}/etc/motd`, "from the rootfs\n");
    await Deno.writeTextFile(`${data}/note`, "from the volume\n");
    const out = `${dir}/cat.out`;
    const exit = await withLib((wt) =>
      wt.run(spec(m.cat, {
        args: ["cat", "/etc/motd", "/data/note"],
        preopens: [{ guest: "/", host: root }, { guest: "/data", host: data }],
        stdout: out,
      }))
    );
    assert.deepEqual(exit.status, 0);
    assert.deepEqual(await Deno.readTextFile(out), "from the rootfs\nfrom the volume\n");

    // Nothing outside the preopens: the host's /etc is not the guest's.
    const err = `${dir}/cat.err`;
    const denied = await withLib((wt) =>
      wt.run(spec(m.cat, {
        args: ["cat", "/etc/hostname"],
        preopens: [{ guest: "/", host: root }],
        stderr: err,
      }))
    );
    assert.deepEqual(denied.status, 2);
    assert.match(await Deno.readTextFile(err), /\/etc\/hostname: No such file/);
  },
);

wasmTest("stdin is read from a file; without one it is empty", ["cat"], async (m) => {
  const input = `${dir}/stdin.txt`;
  const out = `${dir}/stdin.out`;
  await Deno.writeTextFile(input, "line one\nline two\n");
  assert.deepEqual(
    (await withLib((wt) => wt.run(spec(m.cat, { stdin: input, stdout: out })))).status,
    0,
  );
  assert.deepEqual(await Deno.readTextFile(out), "line one\nline two\n");
  assert.deepEqual((await withLib((wt) => wt.run(spec(m.cat, { stdout: out })))).status, 0);
  assert.deepEqual(await Deno.readTextFile(out), "");
});

wasmTest("an infinite loop is interrupted within 1 s", ["loop"], async (m) => {
  const main = Wasmtime.open(LIB);
  let interruptedAt = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const { exit, at } = await runTimed(spec(m.loop), (engine) => {
      // Let the guest get going first: the loop must be stopped while it runs.
      timer = setTimeout(() => {
        interruptedAt = performance.now();
        main.interrupt(engine);
      }, 200);
    }, main);
    assert.ok(interruptedAt > 0, "the run ended before it was interrupted");
    assert.deepEqual(exit.status, INTERRUPTED_STATUS);
    assert.deepEqual(exit.interrupted, true);
    assert.match(exit.message ?? "", /interrupt/);
    assert.ok(at - interruptedAt < 1000, `stopped ${at - interruptedAt} ms after the interrupt`);
  } finally {
    clearTimeout(timer);
    main.close();
  }
});

wasmTest("an interrupt that comes before the guest starts still stops it", ["loop"], async (m) => {
  const main = Wasmtime.open(LIB);
  try {
    // The engine is handed out before the module is compiled; interrupting right away lands
    // while compiling, and the guest must trap on its first check, not loop forever.
    const { exit } = await runTimed(spec(m.loop), (engine) => main.interrupt(engine), main);
    assert.deepEqual(exit.status, INTERRUPTED_STATUS);
    assert.deepEqual(exit.interrupted, true);
  } finally {
    main.close();
  }
});

wasmTest("interrupting an engine whose run has ended is harmless", ["hello"], async (m) => {
  await withLib(async (wt) => {
    let engine = 0n;
    assert.deepEqual((await wt.run(spec(m.hello), (e) => engine = e)).status, 0);
    assert.ok(engine !== 0n);
    wt.interrupt(engine);
    // The next run has an engine of its own, which that tick never reached.
    assert.deepEqual((await wt.run(spec(m.hello))).status, 0);
  });
});

wasmTest("an interrupt reaches only the run whose engine it names", ["loop"], async (m) => {
  const main = Wasmtime.open(LIB);
  const engines: bigint[] = [];
  const started = Promise.withResolvers<void>();
  // Each run's pointer goes to its own slot: the workers may report in either order.
  const onEngine = (slot: number) => (e: bigint) => {
    engines[slot] = e;
    if (engines.filter((x) => x !== undefined).length === 2) started.resolve();
  };
  try {
    const first = runTimed(spec(m.loop), onEngine(0), main);
    const second = runTimed(spec(m.loop), onEngine(1), main);
    await started.promise;
    main.interrupt(engines[0]);
    const ended = await Promise.race([first, second]);
    // The other one is still looping: give it time to show it would not have stopped.
    const stillRunning = await Promise.race([
      second.then(() => false),
      new Promise<boolean>((r) => setTimeout(() => r(true), 300)),
    ]);
    main.interrupt(engines[1]);
    const [a, b] = await Promise.all([first, second]);
    assert.equal(ended, a);
    assert.ok(stillRunning, "the second guest stopped without its own interrupt");
    assert.equal(a.exit.status, INTERRUPTED_STATUS);
    assert.equal(b.exit.status, INTERRUPTED_STATUS);
  } finally {
    main.close();
  }
});

wasmTest("stdin and stdout can be FIFOs", ["cat"], async (m) => {
  const fin = `${dir}/in.fifo`;
  const fout = `${dir}/out.fifo`;
  for (const f of [fin, fout]) {
    const made = await new Deno.Command("mkfifo", { args: [f] }).output();
    assert.ok(made.success, `mkfifo ${f}`);
  }
  // Each open blocks until the guest opens the other end, so the guest runs in a Worker.
  const run = runTimed(spec(m.cat, { stdin: fin, stdout: fout }));
  const writer = (async () => {
    const w = await Deno.open(fin, { write: true });
    await w.write(new TextEncoder().encode("through a fifo\n"));
    w.close();
  })();
  const reader = (async () => {
    const r = await Deno.open(fout, { read: true });
    return new TextDecoder().decode(await new Response(r.readable).arrayBuffer());
  })();
  const [{ exit }, , text] = await Promise.all([run, writer, reader]);
  assert.equal(exit.status, 0);
  assert.equal(text, "through a fifo\n");
}, ["mkfifo"]);

wasmTest("unreachable traps with status 134 and a message", ["unreachable"], async (m) => {
  const exit = await withLib((wt) => wt.run(spec(m.unreachable)));
  assert.deepEqual(exit.status, TRAP_STATUS);
  assert.deepEqual(exit.interrupted, false);
  assert.match(exit.message ?? "", /wasm trap: wasm `unreachable` instruction executed/);
  assert.ok(!exit.message?.includes("\n"), "the message is one line");
});

wasmTest("unbounded recursion traps instead of crashing", ["recurse"], async (m) => {
  const { exit } = await runTimed(spec(m.recurse));
  assert.deepEqual(exit.status, TRAP_STATUS);
  assert.match(exit.message ?? "", /call stack exhausted/);
});

wasmTest("linear memory does not grow past memoryLimit", ["grow"], async (m) => {
  const limit = 4 << 20;
  const out = `${dir}/grow.out`;
  const exit = await withLib((wt) => wt.run(spec(m.grow, { memoryLimit: limit, stdout: out })));
  assert.deepEqual(exit.status, 1, "malloc must have failed");
  const [total, memory] = (await Deno.readTextFile(out)).trim().split(" ").map(Number);
  assert.ok(memory <= limit, `${memory} > ${limit}`);
  assert.ok(total > 0 && total < limit, `allocated ${total}`);

  // Without the limit the same program reaches its own 64 MiB cap: the limit is what stopped it.
  assert.deepEqual((await withLib((wt) => wt.run(spec(m.grow, { stdout: out })))).status, 0);
  const [unlimited] = (await Deno.readTextFile(out)).trim().split(" ").map(Number);
  assert.deepEqual(unlimited, 64 << 20);
});

wasmTest(
  "a module whose initial memory is over the limit does not start",
  ["bigmem"],
  async (m) => {
    const exit = await withLib((wt) => wt.run(spec(m.bigmem, { memoryLimit: 1 << 20 })));
    assert.deepEqual(exit.status, 127);
    assert.match(exit.message ?? "", /exceeds memory limits/);
  },
);

wasmTest("an export with results runs; a missing or non-function export does not", [
  "answer",
  "exit3",
], async (m) => {
  await withLib(async (wt) => {
    assert.deepEqual(await wt.run(spec(m.answer, { func: "answer" })), {
      status: 0,
      interrupted: false,
    });
    const missing = await wt.run(spec(m.answer, { func: "nope" }));
    assert.deepEqual(missing.status, 127);
    assert.match(missing.message ?? "", /exports no function "nope"/);
    const memory = await wt.run(spec(m.exit3, { func: "memory" }));
    assert.deepEqual(memory.status, 127);
    assert.match(memory.message ?? "", /not a function/);
  });
});

wasmTest("an unreadable or invalid module does not start", [], async () => {
  const bad = `${dir}/bad.wasm`;
  await Deno.writeFile(bad, new Uint8Array([0, 0x61, 0x73, 0x6d, 9, 9, 9, 9]));
  await withLib(async (wt) => {
    const none = await wt.run(spec(`${dir}/none.wasm`));
    assert.deepEqual(none.status, 127);
    assert.match(none.message ?? "", /cannot read/);
    const invalid = await wt.run(spec(bad));
    assert.deepEqual(invalid.status, 127);
    assert.match(invalid.message ?? "", /^compiling /);
  });
});

wasmTest("a preopen whose host directory is missing does not start", ["hello"], async (m) => {
  const exit = await withLib((wt) =>
    wt.run(spec(m.hello, { preopens: [{ guest: "/", host: `${dir}/missing` }] }))
  );
  assert.deepEqual(exit.status, 127);
  assert.match(exit.message ?? "", /cannot preopen/);
});

wasmTest("the library cannot be used after close", [], async () => {
  const wt = Wasmtime.open(LIB);
  wt.close();
  wt.close();
  await assert.rejects(wt.run(spec(`${dir}/none.wasm`)), /closed/);
});

Deno.test("wasmtime: a library that cannot be loaded is a clear error", () => {
  let message = "";
  try {
    Wasmtime.open("/nonexistent/libwasmtime.so");
  } catch (e) {
    message = (e as Error).message;
  }
  assert.match(message, /cannot load the Wasmtime C API from \/nonexistent\/libwasmtime\.so/);
});

Deno.test("wasmtime: a trap report becomes one line: the reason and the innermost frame", () => {
  const report = [
    "error while executing at wasm backtrace:",
    "    0:     0x31 - <unknown>!<wasm function 0>",
    "    1:     0x40 - <unknown>!_start",
    "",
    "Caused by:",
    "    wasm trap: interrupt",
    "",
  ].join("\n");
  assert.deepEqual(oneLine(report), "wasm trap: interrupt (at 0x31 - <unknown>!<wasm function 0>)");
  assert.deepEqual(
    oneLine("unknown import: `a::b` has not been defined\n"),
    "unknown import: `a::b` has not been defined",
  );
});
