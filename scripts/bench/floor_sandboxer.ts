/**
 * The floor of a pod start, for the benchmark only: the sandboxer's daemon
 * with every layer containerd talks to (gRPC Controller, task relay, ttrpc
 * Task API, records, events) and a sandbox kind that does nothing — pods and
 * containers "start" at once (the unit tests' in-memory fakes). A pod started
 * through it costs what containerd, CRI, CNI and the protocols cost; what a
 * real kind takes beyond it is the kind's own work.
 *
 *   deno run -A scripts/bench/floor_sandboxer.ts <listen> <dir> <helper-dir> <containerd-ttrpc>
 *
 * @module
 */
import { z } from "zod";
import { startDaemon } from "../../src/daemon/daemon.ts";
import type { HostKind } from "../../src/adapters/kind_host.ts";
import { FakeSandboxBackend } from "../../tests/fakes/fake_sandbox_backend.ts";
import { FakeContainerRuntime } from "../../tests/fakes/fake_container_runtime.ts";

/** The do-nothing kind: named `floor`, so containerd's handler is `kuasar-floor`. */
export const floorKind: HostKind = {
  name: "floor",
  binaryName: "floor-sandboxer",
  description: "the benchmark's floor: pods and containers that start at once",
  defaultListen: "/run/floor-sandboxer.sock",
  defaultDir: "/run/kuasar-floor",
  settingsSchema: z.strictObject({}),
  nodeChecks: () => Promise.resolve([]),
  create() {
    const runtime = new FakeContainerRuntime();
    // containerd stops a container with SIGTERM, then SIGKILL: either ends it at once.
    runtime.exitOnSignals.add(15);
    return Promise.resolve({ backend: new FakeSandboxBackend(), runtime });
  },
};

if (import.meta.main) {
  const [listen, dir, helperDir, containerd] = Deno.args;
  const d = await startDaemon(floorKind, {
    listen,
    dir,
    helperDir,
    containerdAddress: containerd,
    taskApiVersion: 3,
    stopTimeoutMs: 10_000,
    settings: {},
  });
  Deno.addSignalListener("SIGTERM", () => void d.stop());
  await d.finished;
}
