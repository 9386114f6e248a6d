/**
 * Reliability suite: 1 GiB of output through real containerd and crictl with
 * streaming IO reaches the container's log whole, while the sandboxer's
 * resident memory stays bounded (the peaks are printed: the daemon's, and the
 * Wasm host's, each under 200 MiB). runC, Wasm, gVisor and VM pods.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { containerdUnavailable } from "../support/containerd.ts";
import {
  GVISOR_CRI_CONFIG,
  runcUnavailable,
  runscUnavailable,
  skipUnless,
  VMM_CRI_CONFIG,
  vmUnavailable,
} from "../support/env.ts";
import { type E2E, runContainer, waitState, withE2E } from "../support/e2e.ts";
import { countFloodLog, GIB_LINES, peakRss, pidsWith } from "../support/flood.ts";
import { WASM_IMAGE } from "../support/images.ts";
import { wasmToolsUnavailable } from "../support/wasm.ts";

/** A shell command that prints `n` lines of 1000 "x" (busybox: no other tools needed). */
function linesCommand(n: number): string[] {
  return ["sh", "-c", `yes $(head -c 1000 /dev/zero | tr '\\0' x) | head -n ${n}`];
}

/** The bound on the sandboxer's resident memory while 1 GiB flows. */
const MAX_RSS = 200 << 20;

async function flood(
  e: E2E,
  command: string[],
  image: string | undefined,
  pids: () => number[],
  lines = GIB_LINES,
): Promise<void> {
  const started = Date.now();
  const { pod, cid, podJson } = await runContainer(e, e.stream, command, { image });
  const exited = waitState(e, cid, "CONTAINER_EXITED", 600_000);
  // Each process of the sandboxer on its own: the daemon, and the Wasm host where one runs.
  const peaks = await Promise.all(pids().map((p) => peakRss(() => [p], exited)));
  assert.deepEqual(await exited, { state: "CONTAINER_EXITED", exitCode: 0 });
  const logDir = JSON.parse(await Deno.readTextFile(podJson)).log_directory as string;
  const log = join(logDir, "c.log");
  const counted = await countFloodLog(log);
  const mib = (b: number) => (b / 2 ** 20).toFixed(1);
  console.log(
    `flood of ${lines} lines: ${((Date.now() - started) / 1000).toFixed(1)} s, peak RSS ${
      peaks.map(mib).join(" MiB, ")
    } MiB, ${counted.good} lines in the log`,
  );
  assert.deepEqual(counted, { good: lines, bad: 0 }, "every line reaches the log");
  for (const p of peaks) assert.ok(p < MAX_RSS, `peak RSS ${mib(p)} MiB`);
  await e.ctd.crictlOk(["rmp", "--force", pod]);
  await Deno.remove(log).catch(() => {});
}

Deno.test({
  name: "crictl + runC (stream IO): 1 GiB of output reaches the log whole, bounded memory",
  ...skipUnless(runcUnavailable() ?? containerdUnavailable(), "containerd + runC flood"),
  fn: () =>
    withE2E("runc", (e) =>
      flood(
        e,
        linesCommand(GIB_LINES),
        undefined,
        () => [e.d.pid],
      )),
});

Deno.test({
  name: "crictl + wasm (stream IO): 1 GiB of output reaches the log whole, bounded memory",
  ...skipUnless(
    (Deno.uid() !== 0 ? "needs root" : undefined) ?? wasmToolsUnavailable() ??
      containerdUnavailable(),
    "containerd + Wasm flood",
  ),
  fn: () =>
    withE2E(
      "wasm",
      // The sandboxer and its Wasm host, where the modules run.
      (e) =>
        flood(
          e,
          ["/app.wasm", "lines", String(GIB_LINES)],
          WASM_IMAGE,
          () => [e.d.pid, ...pidsWith("wasm-host", e.d.dir)],
        ),
    ),
});

const GVISOR_LINES = Math.ceil(GIB_LINES / 4);

/** A quarter of the flood in a gVisor pod (ptrace here: 1 GiB takes two minutes). */
Deno.test({
  name: "crictl + gvisor (stream IO): 256 MiB of output reaches the log whole, bounded memory",
  ...skipUnless(runscUnavailable() ?? containerdUnavailable(), "containerd + gVisor flood"),
  fn: () =>
    withE2E("gvisor", (e) =>
      flood(
        e,
        linesCommand(GVISOR_LINES),
        undefined,
        () => [e.d.pid],
        GVISOR_LINES,
      ), {
      config: GVISOR_CRI_CONFIG,
    }),
});

/**
 * A VM pod's output crosses the guest's stream, the agent channel and the
 * host's stream. Under TCG (no KVM here) the guest moves a few MiB/s, so the
 * flood is smaller unless KUASAR_TEST_VM_FLOOD_LINES asks for more (1 GiB:
 * 1073742 lines); the memory bound is the same.
 */
const VM_FLOOD_LINES = Number(Deno.env.get("KUASAR_TEST_VM_FLOOD_LINES") ?? 32768);

Deno.test({
  name: "crictl + vmm (stream IO): a flood reaches the log whole, bounded memory",
  ...skipUnless(vmUnavailable() ?? containerdUnavailable(), "containerd + vmm flood"),
  fn: () =>
    withE2E("vmm", (e) =>
      flood(
        e,
        linesCommand(VM_FLOOD_LINES),
        undefined,
        () => [e.d.pid],
        VM_FLOOD_LINES,
      ), {
      config: VMM_CRI_CONFIG,
    }),
});
