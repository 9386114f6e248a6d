/**
 * The Wasm sandboxer end to end with the embedded engine: the real daemon and
 * Wasm host, modules built from tests/wasm/, overlay rootfs mounts, FIFOs
 * and streamed stdio, our own gRPC and ttrpc clients.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { K8S_NS, mkfifo, readFifo, taskClient, TestDaemon } from "../support/daemon.ts";
import { has, skipUnless } from "../support/env.ts";
import { assertShutdownLeavesNothing } from "../support/leaks.ts";
import { startPod, type TestPod } from "../support/pod.ts";
import { openStream, readOutput, streamUrl } from "../support/streams.ts";
import {
  buildWasmModules,
  createWasmContainer,
  type WasmContainerOptions,
  type WasmModules,
  wasmtimeUnavailable,
  wasmToolsUnavailable,
} from "../support/wasm.ts";

const why = Deno.uid() !== 0 ? "needs root (overlay mounts)" : wasmToolsUnavailable();
const skip = skipUnless(why, "Wasm sandboxer");

/** Runs a module to its end; returns exit status, stdout and stderr. */
async function runModule(
  d: TestDaemon,
  pod: TestPod,
  modules: WasmModules,
  o: Omit<WasmContainerOptions, "stdout" | "stderr">,
): Promise<{ status: number; out: string; err: string }> {
  const tag = crypto.randomUUID().slice(0, 8);
  const outPath = join(d.base, `out-${tag}`), errPath = join(d.base, `err-${tag}`);
  await mkfifo(outPath);
  await mkfifo(errPath);
  const out = readFifo(outPath), err = readFifo(errPath);
  const c = await createWasmContainer(d, pod, modules, { ...o, stdout: outPath, stderr: errPath });
  const t = await taskClient(pod.address);
  try {
    const w = t.task.wait({ id: c.id, execId: "" }, K8S_NS);
    await t.task.start({ id: c.id, execId: "" }, K8S_NS);
    const status = (await w).exitStatus;
    await t.task.delete({ id: c.id, execId: "" }, K8S_NS);
    return { status, out: await out.text, err: await err.text };
  } finally {
    t.close();
  }
}

async function withDaemon(fn: (d: TestDaemon, m: WasmModules) => Promise<void>): Promise<void> {
  const modules = await buildWasmModules();
  const d = await TestDaemon.start({ kind: "wasm" });
  try {
    await fn(d, modules);
  } catch (e) {
    console.error(await d.logs());
    console.error(await Deno.readTextFile(join(d.dir, ".wasm-host.log")).catch(() => ""));
    throw e;
  } finally {
    await d.cleanup();
  }
}

/** The WASI semantics every engine must give, run against `engine`. */
function engineSemantics(engine: string, unavailable: string | undefined): void {
  const skipEngine = skipUnless(why ?? unavailable, `Wasm engine ${engine}`);
  const on = { annotations: { "io.kuasar.wasm.engine": engine } };
  Deno.test({
    name: `wasm/${engine}: hello, exit codes, args/env, files from rootfs and a mount, a trap`,
    ...skipEngine,
    async fn() {
      await withDaemon(async (d, m) => {
        const pod = await startPod(d);
        assert.ok(pod.pid > 0, "the pod's pid is the Wasm host's");
        assert.equal((await d.controller.status(pod.id)).state, "SANDBOX_READY");

        assert.deepEqual(await runModule(d, pod, m, { ...on, module: "hello" }), {
          status: 0,
          out: "hello from wasm\n",
          err: "",
        });
        assert.equal((await runModule(d, pod, m, { ...on, module: "exit3" })).status, 3);

        const echo = await runModule(d, pod, m, {
          ...on,
          module: "echo",
          args: ["fail", "two words"],
          env: ["KUASAR_A=1", "OTHER=x", "KUASAR_B=b c"],
        });
        assert.equal(echo.status, 7);
        assert.equal(
          echo.out,
          "arg[0]=/app.wasm\narg[1]=fail\narg[2]=two words\nenv KUASAR_A=1\nenv KUASAR_B=b c\n",
        );
        assert.equal(echo.err, "to stderr\n");

        const data = await Deno.makeTempDir({ dir: d.base });
        await Deno.writeTextFile(join(data, "note.txt"), "from the mount\n");
        const cat = await runModule(d, pod, m, {
          ...on,
          module: "cat",
          args: ["/etc/motd", "/data/note.txt", "etc/../etc/motd"],
          dataDir: data,
        });
        assert.equal(cat.status, 0, cat.err);
        assert.equal(cat.out, "motd from the image\nfrom the mount\nmotd from the image\n");
        // Nothing outside the preopens: `..` stops at the rootfs.
        const escape = await runModule(d, pod, m, {
          ...on,
          module: "cat",
          args: ["/../../etc/hostname"],
        });
        assert.equal(escape.status, 2);
        assert.match(escape.err, /Capabilities insufficient|No such file|not permitted/);

        const trap = await runModule(d, pod, m, { ...on, module: "trap" });
        assert.equal(trap.status, 134);
        assert.match(trap.err, /^about to trap\nkuasar-wasm: wasm trap: .*unreachable.*\n$/);
        assert.equal((await runModule(d, pod, m, { ...on, module: "trap", func: "ok" })).status, 0);

        await d.controller.stop(pod.id, 5);
        await assertShutdownLeavesNothing(d, [pod.id]);
      });
    },
  });

  Deno.test({
    name: `wasm/${engine}: Kill stops an infinite loop within 1 s; the memory limit holds`,
    ...skipEngine,
    async fn() {
      await withDaemon(async (d, m) => {
        const pod = await startPod(d);
        const c = await createWasmContainer(d, pod, m, { ...on, module: "loop" });
        const t = await taskClient(pod.address);
        try {
          const w = t.task.wait({ id: c.id, execId: "" }, K8S_NS);
          await t.task.start({ id: c.id, execId: "" }, K8S_NS);
          await new Promise((r) => setTimeout(r, 300));
          assert.equal((await t.task.state({ id: c.id, execId: "" }, K8S_NS)).status, 2); // RUNNING
          const killed = performance.now();
          await t.task.kill({ id: c.id, execId: "", signal: 15, all: false }, K8S_NS);
          const exit = await w;
          const ms = performance.now() - killed;
          assert.equal(exit.exitStatus, 143);
          assert.ok(ms < 1000, `stopped after ${ms.toFixed(0)} ms`);
          // A signal the module would ignore by default is not fatal (SIGWINCH)...
          await assert.rejects(
            t.task.kill({ id: c.id, execId: "", signal: 9, all: false }, K8S_NS),
            /already exited|not found/i,
          );
          await t.task.delete({ id: c.id, execId: "" }, K8S_NS);
        } finally {
          t.close();
        }
        const hog = await runModule(d, pod, m, { ...on, module: "memhog", memoryLimit: 32 << 20 });
        assert.equal(hog.status, 1);
        const mib = Number(hog.out.match(/allocated (\d+) MiB/)?.[1]);
        assert.ok(mib > 0 && mib < 32, `allocated ${mib} MiB under a 32 MiB limit`);
        const free = await runModule(d, pod, m, { ...on, module: "memhog", memoryLimit: 64 << 20 });
        assert.ok(Number(free.out.match(/allocated (\d+) MiB/)?.[1]) > 32);
        await assertShutdownLeavesNothing(d, [pod.id]);
      });
    },
  });
}

engineSemantics("embedded", undefined);
engineSemantics("wasmtime", wasmtimeUnavailable());
engineSemantics(
  "wasmedge",
  has("wasmedge")
    ? undefined
    : "wasmedge is not installed (nothing reachable here ships it; see the contract test)",
);

Deno.test({
  name: "wasm: a native container is refused clearly; Exec and Pause are UNIMPLEMENTED",
  ...skip,
  async fn() {
    await withDaemon(async (d, m) => {
      const pod = await startPod(d);
      await assert.rejects(
        createWasmContainer(d, pod, m, { module: "hello", entrypoint: "/etc/motd" }),
        /not WebAssembly.*runc handler/,
      );
      await assert.rejects(
        createWasmContainer(d, pod, m, {
          module: "hello",
          entrypoint: "/etc/motd",
          annotations: { "module.wasm.image/variant": "compat" },
        }),
        /annotated as Wasm/,
      );
      await assert.rejects(
        createWasmContainer(d, pod, m, { module: "hello", entrypoint: "/missing.wasm" }),
        /entrypoint/,
      );
      await assert.rejects(
        createWasmContainer(d, pod, m, {
          module: "hello",
          annotations: { "io.kuasar.wasm.engine": "nope" },
        }),
        /Unknown Wasm engine "nope"/,
      );
      const c = await createWasmContainer(d, pod, m, { module: "loop" });
      const t = await taskClient(pod.address);
      try {
        await t.task.start({ id: c.id, execId: "" }, K8S_NS);
        await t.task.exec({
          id: c.id,
          execId: "x",
          terminal: false,
          stdin: "",
          stdout: "",
          stderr: "",
          spec: {
            typeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process",
            value: new TextEncoder().encode('{"args":["sh"]}'),
          },
        }, K8S_NS).catch(() => {});
        await assert.rejects(
          t.task.start({ id: c.id, execId: "x" }, K8S_NS),
          /Exec is not supported in Wasm containers/,
        );
        await assert.rejects(t.task.pause({ id: c.id }, K8S_NS), /not supported/);
        const pids = await t.task.pids({ id: c.id }, K8S_NS);
        assert.deepEqual(pids.processes.map((p) => p.pid), [c.pid]);
      } finally {
        t.close();
      }
      // Shutdown stops the running module and releases everything.
      await d.controller.stop(pod.id, 1);
      await assertShutdownLeavesNothing(d, [pod.id]);
    });
  },
});

for (
  const [engine, unavailable] of [["embedded", undefined], ["wasmtime", wasmtimeUnavailable()]]
) {
  Deno.test({
    name: `wasm/${engine}: streamed stdio (containerd's io_type=streaming)`,
    ...skipUnless(why ?? unavailable, `Wasm engine ${engine}`),
    async fn() {
      await withDaemon(async (d, m) => {
        const pod = await startPod(d);
        const cid = crypto.randomUUID().replaceAll("-", "");
        const out = await openStream(pod.address, `${cid}-stdout`);
        const err = await openStream(pod.address, `${cid}-stderr`);
        const c = await createWasmContainer(d, pod, m, {
          module: "echo",
          args: ["x"],
          annotations: { "io.kuasar.wasm.engine": engine! },
          stdout: streamUrl(pod.address, `${cid}-stdout`),
          stderr: streamUrl(pod.address, `${cid}-stderr`),
        }, cid);
        const t = await taskClient(pod.address);
        try {
          const texts = Promise.all([readOutput(out), readOutput(err)]);
          const w = t.task.wait({ id: c.id, execId: "" }, K8S_NS);
          await t.task.start({ id: c.id, execId: "" }, K8S_NS);
          assert.equal((await w).exitStatus, 0);
          assert.deepEqual(await texts, ["arg[0]=/app.wasm\narg[1]=x\n", "to stderr\n"]);
          await t.task.delete({ id: c.id, execId: "" }, K8S_NS);
        } finally {
          t.close();
          out.close();
          err.close();
        }
        await assertShutdownLeavesNothing(d, [pod.id]);
      });
    },
  });
}

Deno.test({
  name: "wasm/wasmtime: 40 modules run at once (more than a carrier's threads); all are killed",
  ...skipUnless(why ?? wasmtimeUnavailable(), "Wasm engine wasmtime"),
  async fn() {
    await withDaemon(async (d, m) => {
      const pod = await startPod(d);
      const on = { "io.kuasar.wasm.engine": "wasmtime" };
      const ids: string[] = [];
      const outs: string[] = [];
      // The first one's stdout is a FIFO, as containerd's: its reader must see the end once the
      // module is killed, though the module sleeps on in a WASI call.
      const fifo = join(d.base, "sleeper-fifo");
      await mkfifo(fifo);
      const fifoText = readFifo(fifo);
      for (let i = 0; i < 40; i++) {
        outs.push(i === 0 ? fifo : join(d.base, `sleeper-${i}.out`));
        const c = await createWasmContainer(d, pod, m, {
          module: "echo",
          args: ["sleep", "1000"],
          annotations: on,
          stdout: outs[i],
        });
        ids.push(c.id);
      }
      const t = await taskClient(pod.address);
      try {
        for (const id of ids) await t.task.start({ id, execId: "" }, K8S_NS);
        // Every one runs (has said so): none waits for a thread another holds, as the 33rd
        // would on one worker's pool.
        const said = async (f: string) =>
          (await Deno.readTextFile(f).catch(() => "")) === "sleeping 1000\n";
        const files = outs.slice(1);
        for (let i = 0; i < 100 && !(await Promise.all(files.map(said))).every(Boolean); i++) {
          await new Promise((r) => setTimeout(r, 100));
        }
        assert.equal((await Promise.all(files.map(said))).filter(Boolean).length, 39, "started");
        for (const id of ids) {
          assert.equal((await t.task.state({ id, execId: "" }, K8S_NS)).status, 2, id);
        }
        const waits = ids.map((id) => t.task.wait({ id, execId: "" }, K8S_NS));
        for (const id of ids) await t.task.kill({ id, execId: "", signal: 9, all: false }, K8S_NS);
        // Asleep in a WASI call, a module cannot be interrupted: each is reported killed.
        for (const w of waits) assert.equal((await w).exitStatus, 137);
        assert.equal(await fifoText.text, "sleeping 1000\n");
        for (const id of ids) await t.task.delete({ id, execId: "" }, K8S_NS);
      } finally {
        t.close();
      }
      await d.controller.stop(pod.id, 1);
      await assertShutdownLeavesNothing(d, [pod.id]);
    });
  },
});

Deno.test({
  name: "wasm: a running module survives a SIGKILL of the sandboxer and reports its true exit",
  ...skip,
  async fn() {
    await withDaemon(async (d, m) => {
      const pod = await startPod(d);
      const stdin = join(d.base, "stdin"), stdout = join(d.base, "stdout");
      await mkfifo(stdin);
      await mkfifo(stdout);
      const out = readFifo(stdout);
      // cat copies stdin to stdout: it runs until its stdin ends.
      const c = await createWasmContainer(d, pod, m, { module: "cat", stdin, stdout });
      let t = await taskClient(pod.address);
      await t.task.start({ id: c.id, execId: "" }, K8S_NS);
      const writer = await Deno.open(stdin, { write: true });
      await writer.write(new TextEncoder().encode("before the restart\n"));
      t.close();

      await d.kill9();
      await d.spawn();
      assert.equal((await d.controller.status(pod.id)).state, "SANDBOX_READY");
      t = await taskClient(pod.address);
      try {
        const st = await t.task.state({ id: c.id, execId: "" }, K8S_NS);
        assert.equal(st.status, 2, "still RUNNING after the restart");
        const w = t.task.wait({ id: c.id, execId: "" }, K8S_NS);
        await writer.write(new TextEncoder().encode("after it\n"));
        writer.close();
        assert.equal((await w).exitStatus, 0);
        assert.equal(await out.text, "before the restart\nafter it\n");
        await t.task.delete({ id: c.id, execId: "" }, K8S_NS);
      } finally {
        t.close();
      }
      await assertShutdownLeavesNothing(d, [pod.id]);
    });
  },
});

Deno.test({
  name: "wasm/wasmedge contract: the sandboxer runs the configured wasmedge with the task's WASI",
  ...skip,
  async fn() {
    const modules = await buildWasmModules();
    const base = await Deno.makeTempDir({ prefix: "k-" });
    const log = join(base, "wasmedge-argv");
    const fake = new URL("../wasm/fake-wasmedge.sh", import.meta.url).pathname;
    await Deno.writeTextFile(join(base, "config.toml"), `[wasm]\nwasmedge = "${fake}"\n`);
    Deno.env.set("KUASAR_FAKE_WASMEDGE_LOG", log);
    const d = await TestDaemon.start({
      kind: "wasm",
      base,
      extraArgs: ["--config", join(base, "config.toml")],
    });
    try {
      const pod = await startPod(d);
      const data = await Deno.makeTempDir({ dir: base });
      const r = await runModule(d, pod, modules, {
        module: "hello",
        args: ["a", "b c"],
        env: ["K=v"],
        dataDir: data,
        memoryLimit: 8 << 20,
        annotations: { "io.kuasar.wasm.engine": "wasmedge" },
      });
      assert.deepEqual(r, { status: 5, out: "fake wasmedge ran\n", err: "" });
      const argv = (await Deno.readTextFile(log)).trimEnd().split("\n");
      const rootfs = argv[1].slice(2); // "/:<rootfs>"
      assert.match(rootfs, /\/bundles\/[0-9a-f]{64}\/rootfs$/);
      assert.deepEqual(argv, [
        "--dir",
        `/:${rootfs}`,
        "--dir",
        `/data:${data}`,
        "--env",
        "K=v",
        "--memory-page-limit",
        "128",
        `${rootfs}/app.wasm`,
        "a",
        "b c",
      ]);
      await assertShutdownLeavesNothing(d, [pod.id]);
    } catch (e) {
      console.error(await d.logs());
      throw e;
    } finally {
      Deno.env.delete("KUASAR_FAKE_WASMEDGE_LOG");
      await d.cleanup();
    }
  },
});
