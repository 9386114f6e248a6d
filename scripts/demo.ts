// The README's first command: starts a sandboxer, runs a demo pod in it,
// shows what the sandboxer reports, then cleans up (Ctrl-C stops earlier).
// Everything goes through the sandboxer's real APIs.
//
// `demo.ts` (default) is a Wasm pod on the embedded V8/WASI engine, which
// needs nothing installed; `demo.ts runc` is a runC pod with a busybox container.
import { join } from "node:path";
import { K8S_NS, mkfifo, readFifo, taskClient, TestDaemon } from "../tests/support/daemon.ts";
import { createContainer, startPod } from "../tests/support/pod.ts";
import { buildWasmModules, createWasmContainer } from "../tests/support/wasm.ts";

const say = (s: string) => console.log(`\x1b[1m==> ${s}\x1b[0m`);
const kind = Deno.args[0] ?? "wasm";
const d = await TestDaemon.start({ kind });
say(`sandboxer "${d.kind}" (pid ${d.pid}) serves ${d.listen}; state in ${d.dir}; log ${d.logFile}`);
let podId = "";
try {
  const pod = await startPod(d, { hostname: "demo" });
  podId = pod.id;
  say(`pod ${pod.id.slice(0, 12)} is up: pid ${pod.pid}, Task API at ${pod.address}`);
  const fifo = join(d.base, "demo.stdout");
  await mkfifo(fifo);
  const out = readFifo(fifo);
  const c = kind === "wasm"
    ? await createWasmContainer(d, pod, await buildWasmModules(), {
      module: "echo",
      args: ["hello", "from a Wasm module"],
      env: ["KUASAR_DEMO=embedded V8 + WASI"],
      stdout: fifo,
      stderr: fifo,
    })
    : await createContainer(d, pod, {
      args: [
        "sh",
        "-c",
        'echo "hello from $(hostname): pid $$ in $(cat /proc/1/comm)"; uname -a; exit 7',
      ],
      stdout: fifo,
      stderr: fifo,
    });
  const t = await taskClient(pod.address);
  const waiting = t.task.wait({ id: c.id, execId: "" }, K8S_NS);
  await t.task.start({ id: c.id, execId: "" }, K8S_NS);
  const w = await waiting;
  console.log((await out.text).trimEnd().replace(/^/gm, "    | "));
  say(`container ${c.id.slice(0, 12)} exited with status ${w.exitStatus}`);
  await t.task.delete({ id: c.id, execId: "" }, K8S_NS);
  t.close();
  const st = await d.controller.status(pod.id, true);
  say(`Controller.Status: ${st.state}, pid ${st.pid}, info ${JSON.stringify(st.info)}`);
  await d.controller.stop(pod.id, 5);
  const pw = await d.controller.wait(pod.id);
  say(`pod stopped with status ${pw.exitStatus}`);
} finally {
  if (podId) await d.controller.shutdown(podId).catch(() => {});
  await d.cleanup();
  say("sandboxer stopped, everything removed");
}
