import assert from "node:assert/strict";
import { buildWasmModules, wasmToolsUnavailable } from "../../../../tests/support/wasm.ts";
import { concatBytes as concat } from "../../../lib/bytes.ts";
import { addYieldPoints } from "../wasi/yield_points.ts";
import { SharedRuns } from "./shared_runs.ts";
import { StdinWriter } from "./stdin_channel.ts";
import { OUTPUT_LIMIT, TRAP_STATUS, type WorkerMessage } from "./worker_messages.ts";

const ignore = wasmToolsUnavailable();

async function compile(path: string): Promise<WebAssembly.Module> {
  const bytes = addYieldPoints(await Deno.readFile(path));
  assert.ok(bytes, `${path} takes yield points`);
  return await WebAssembly.compile(bytes);
}

/** Starts run `id` of `module`; collects what it posts. */
function start(
  runs: SharedRuns,
  id: number,
  module: WebAssembly.Module,
  args: string[],
  stdin: SharedArrayBuffer | null = null,
  slowMs = 5,
) {
  const out: Uint8Array[] = [];
  /** Bytes received and not yet written, at most. */
  const peak = { value: 0 };
  let pending = 0;
  const output = new SharedArrayBuffer(4);
  const unwritten = new Int32Array(output);
  const ended = runs.run(
    {
      t: "shared-run",
      id,
      module,
      func: "_start",
      args,
      env: [],
      preopens: [],
      stdin,
      output,
      turns: new SharedArrayBuffer(4),
    },
    (m: WorkerMessage) => {
      if (m.t !== "out") return;
      // Handed over, as a worker posts it; written later, as a slow reader would.
      const data = structuredClone(m.data, { transfer: [m.data.buffer as ArrayBuffer] });
      out.push(data);
      pending += data.length;
      peak.value = Math.max(peak.value, pending);
      setTimeout(() => {
        pending -= data.length;
        Atomics.sub(unwritten, 0, data.length);
        Atomics.notify(unwritten, 0);
      }, slowMs);
    },
  );
  const text = () => new TextDecoder().decode(concat(out));
  return { ended, out, text, peak };
}

Deno.test({
  name: "shared runs: a spinning module leaves the thread to a sleeping one, and is killed",
  ignore: !!ignore,
  async fn() {
    const m = await buildWasmModules();
    const runs = new SharedRuns();
    let spinning = true;
    const loop = start(runs, 1, await compile(m.loop), ["loop"]);
    loop.ended.finally(() => (spinning = false));
    const t0 = performance.now();
    const echo = start(runs, 2, await compile(m.echo), ["echo", "sleep", "1"]);
    const end = await echo.ended;
    assert.deepEqual(end, { t: "exit", id: 2, status: 0, message: undefined });
    assert.equal(echo.text(), "sleeping 1\n");
    assert.ok(performance.now() - t0 < 5000, "the sleeper was not held up for long");
    assert.ok(spinning, "the loop was still running");
    runs.kill(1);
    const killed = await loop.ended;
    assert.equal(killed.t === "exit" && killed.status, TRAP_STATUS);
  },
});

Deno.test({
  name: "shared runs: stdin through a waiting read, output held back by a slow reader",
  ignore: !!ignore,
  async fn() {
    const m = await buildWasmModules();
    const runs = new SharedRuns();
    const input = new Uint8Array(3 * OUTPUT_LIMIT).map((_, i) => (i * 7) % 251);
    const stdin = new StdinWriter();
    // A carrier's port keeps its event loop going; Atomics.waitAsync alone does not.
    const alive = setInterval(() => {}, 1000);
    const cat = start(runs, 1, await compile(m.cat), ["cat"], stdin.buffer, 200);
    // Fed in pieces, after the module has started waiting.
    await new Promise((r) => setTimeout(r, 50));
    for (let at = 0; at < input.length; at += 100_000) {
      await stdin.push(input.subarray(at, at + 100_000));
    }
    await stdin.push(null);
    const end = await cat.ended;
    clearInterval(alive);
    assert.equal(end.t === "exit" && end.status, 0);
    assert.deepEqual(concat(cat.out), input);
    assert.ok(cat.peak.value <= OUTPUT_LIMIT + 65536, `${cat.peak.value} bytes were unwritten`);
  },
});

Deno.test({
  name: "shared runs: a module waiting for stdin is ended at once by a kill",
  ignore: !!ignore,
  async fn() {
    const m = await buildWasmModules();
    const runs = new SharedRuns();
    const stdin = new StdinWriter();
    const cat = start(runs, 7, await compile(m.cat), ["cat"], stdin.buffer);
    await new Promise((r) => setTimeout(r, 50));
    runs.kill(7);
    const end = await cat.ended;
    assert.deepEqual(end, { t: "exit", id: 7, status: TRAP_STATUS, message: "killed" });
  },
});

Deno.test({
  name: "shared runs: a sleep past setTimeout's range sleeps (30 days), until killed",
  ignore: !!ignore,
  async fn() {
    const m = await buildWasmModules();
    const runs = new SharedRuns();
    const alive = setInterval(() => {}, 1000);
    const echo = start(runs, 3, await compile(m.echo), ["echo", "sleep", String(30 * 86400)]);
    let ended = false;
    echo.ended.finally(() => (ended = true));
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(echo.text(), `sleeping ${30 * 86400}\n`);
    assert.ok(!ended, "still asleep");
    runs.kill(3);
    assert.equal((await echo.ended).t, "exit");
    clearInterval(alive);
  },
});
