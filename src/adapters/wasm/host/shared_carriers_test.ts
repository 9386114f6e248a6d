import assert from "node:assert/strict";
import { buildWasmModules, wasmToolsUnavailable } from "../../../../tests/support/wasm.ts";
import { addYieldPoints } from "../wasi/yield_points.ts";
import { SharedCarriers } from "./shared_carriers.ts";
import type { WorkerMessage } from "./worker_messages.ts";

Deno.test({
  name: "shared carriers: on one carrier, a spinning module leaves time to sleepers and kills",
  ignore: !!wasmToolsUnavailable(),
  async fn() {
    const m = await buildWasmModules();
    const compile = async (p: string) =>
      await WebAssembly.compile(addYieldPoints(await Deno.readFile(p))!);
    const carriers = new SharedCarriers({ warm: 1, max: 1, idleMs: 60_000 });
    try {
      const run = (module: WebAssembly.Module, args: string[]) => {
        let exit!: (m: WorkerMessage) => void;
        const ended = new Promise<WorkerMessage>((r) => (exit = r));
        const r = carriers.start({
          module,
          func: "_start",
          args,
          env: [],
          preopens: [],
          stdin: null,
          output: new SharedArrayBuffer(4),
        }, (msg) => msg.t === "exit" && exit(msg));
        return { ended, kill: r.kill };
      };
      const hello = await compile(m.hello);
      await run(hello, ["hello"]).ended; // the carrier is up
      const spin = run(await compile(m.loop), ["loop"]);
      const echo = await compile(m.echo);
      const t0 = performance.now();
      const sleepers = [1, 2, 3].map(() => run(echo, ["echo", "sleep", "1"]).ended);
      for (const s of await Promise.all(sleepers)) assert.equal(s.t === "exit" && s.status, 0);
      const late = performance.now() - t0 - 1000;
      assert.ok(late < 1000, `sleepers of 1 s ended ${late.toFixed(0)} ms late`);
      const k0 = performance.now();
      spin.kill();
      // The kill's own delivery is not observable here (its run's messages are dropped); the
      // carrier answers a new run at once if the killed one has left the thread.
      const after = await run(hello, ["hello"]).ended;
      assert.equal(after.t === "exit" && after.status, 0);
      assert.ok(performance.now() - k0 < 1000, "the carrier was free again within a second");
    } finally {
      carriers.close();
    }
  },
});
