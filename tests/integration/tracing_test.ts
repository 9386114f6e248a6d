/**
 * `[sandbox] enable_tracing` against a real collector: Jaeger (built by
 * scripts/install_go_tools.sh) receives the sandboxer's OTLP spans, and its
 * query API shows them: a span per Controller and Task call, `runc create`
 * under Task.Create, a caller's trace context (ttrpc `traceparent`) honoured,
 * SIGUSR1 switching spans off and on; for a VM pod, the launch, boot and the
 * guest agent's own spans in the same trace as the host's Task.Create.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { TOOLS_CACHE } from "../support/containerd.ts";
import { K8S_NS, startVmmDaemon, taskClient, TestDaemon } from "../support/daemon.ts";
import { runcUnavailable, skipUnless, vmUnavailable } from "../support/env.ts";
import { prepareContainer, randomId, startPod } from "../support/pod.ts";

const JAEGER = join(TOOLS_CACHE, "jaeger", "bin", "jaeger");
const QUERY = "http://127.0.0.1:16686";
const OTLP = "http://127.0.0.1:4318";

function jaegerUnavailable(): string | undefined {
  try {
    Deno.statSync(JAEGER);
    return undefined;
  } catch {
    return `${JAEGER} is missing (scripts/install_go_tools.sh builds it; it needs the Go proxy)`;
  }
}

interface JaegerSpan {
  traceID: string;
  spanID: string;
  operationName: string;
  references: { refType: string; spanID: string }[];
  processID: string;
}
interface JaegerTrace {
  traceID: string;
  spans: JaegerSpan[];
  processes: Record<string, { serviceName: string }>;
}

async function traces(service: string): Promise<JaegerTrace[]> {
  const r = await fetch(`${QUERY}/api/traces?service=${service}&limit=200&lookback=1h`);
  if (!r.ok) return [];
  return ((await r.json()) as { data: JaegerTrace[] }).data ?? [];
}

/** Waits until `service`'s traces satisfy `ok`; returns the last ones seen. */
async function waitTraces(
  service: string,
  ok: (t: JaegerTrace[]) => boolean,
  ms = 20_000,
): Promise<JaegerTrace[]> {
  const deadline = Date.now() + ms;
  let last: JaegerTrace[] = [];
  while (Date.now() < deadline) {
    last = await traces(service).catch(() => []);
    if (ok(last)) return last;
    await new Promise((r) => setTimeout(r, 300));
  }
  return last;
}

const spansOf = (ts: JaegerTrace[]) => ts.flatMap((t) => t.spans);
const named = (ts: JaegerTrace[], name: string) =>
  spansOf(ts).filter((s) => s.operationName === name);

/** A Jaeger with in-memory storage on its default ports, for the length of `fn`. */
async function withJaeger(fn: () => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "k-jaeger-" });
  const child = new Deno.Command(JAEGER, {
    stdin: "null",
    stdout: "null",
    stderr: "piped",
    cwd: dir,
  }).spawn();
  const log = Deno.openSync(join(dir, "jaeger.log"), { write: true, create: true });
  child.stderr.pipeTo(log.writable).catch(() => {});
  try {
    const deadline = Date.now() + 60_000;
    while (!(await fetch(`${QUERY}/api/services`).then((r) => r.ok, () => false))) {
      if (Date.now() > deadline) {
        throw new Error(
          `jaeger did not serve: ${await Deno.readTextFile(join(dir, "jaeger.log"))}`,
        );
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    Deno.env.set("OTEL_EXPORTER_OTLP_ENDPOINT", OTLP);
    await fn();
  } finally {
    Deno.env.delete("OTEL_EXPORTER_OTLP_ENDPOINT");
    child.kill("SIGTERM");
    await child.status;
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

const TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER = {
  metadata: { ...K8S_NS.metadata, traceparent: `00-${TRACE_ID}-00f067aa0ba902b7-01` },
};

Deno.test({
  name: "tracing: a runC sandboxer's calls reach Jaeger as spans; SIGUSR1 turns them off and on",
  ...skipUnless(runcUnavailable() ?? jaegerUnavailable(), "tracing with Jaeger"),
  fn: () =>
    withJaeger(async () => {
      const base = await Deno.makeTempDir({ prefix: "k-" });
      await Deno.writeTextFile(join(base, "t.toml"), "[sandbox]\nenable_tracing = true\n");
      const d = await TestDaemon.start({ base, extraArgs: ["--config", join(base, "t.toml")] });
      try {
        const pod = await startPod(d, { cgroupParent: d.cgroupParent });
        const req = await prepareContainer(d, pod, { args: ["true"] });
        const t = await taskClient(pod.address);
        try {
          await t.task.create(req, CALLER);
          await t.task.start({ id: req.id, execId: "" }, K8S_NS);
          await t.task.wait({ id: req.id, execId: "" }, K8S_NS);
          await t.task.delete({ id: req.id, execId: "" }, K8S_NS);
        } finally {
          t.close();
        }
        const service = "kuasar-runc";
        let ts = await waitTraces(service, (x) => named(x, "runc create").length > 0);
        for (const op of ["Create", "Start"]) {
          assert.equal(named(ts, `containerd.services.sandbox.v1.Controller/${op}`).length, 1, op);
        }
        // The caller's trace: Task.Create is its child, runc create is Task.Create's.
        const caller = ts.find((x) => x.traceID === TRACE_ID);
        assert.ok(caller, `a trace ${TRACE_ID}: ${ts.map((x) => x.traceID)}`);
        const create = caller.spans.find((s) =>
          s.operationName === "containerd.task.v3.Task/Create"
        );
        assert.ok(create);
        assert.equal(create.references[0]?.spanID, "00f067aa0ba902b7");
        const runc = caller.spans.find((s) => s.operationName === "runc create");
        assert.ok(runc);
        assert.equal(runc.references[0]?.spanID, create.spanID);
        for (const op of ["Start", "Wait", "Delete"]) {
          assert.equal(named(ts, `containerd.task.v3.Task/${op}`).length, 1, op);
        }

        // SIGUSR1: off (pending spans sent first), then a call makes no span; on again, it does.
        Deno.kill(d.pid, "SIGUSR1");
        await new Promise((r) => setTimeout(r, 1000));
        await d.controller.status(pod.id, false);
        await new Promise((r) => setTimeout(r, 2000));
        ts = await traces(service);
        assert.equal(named(ts, "containerd.services.sandbox.v1.Controller/Status").length, 0);
        Deno.kill(d.pid, "SIGUSR1");
        await new Promise((r) => setTimeout(r, 1000));
        await d.controller.status(pod.id, false);
        ts = await waitTraces(
          service,
          (x) => named(x, "containerd.services.sandbox.v1.Controller/Status").length === 1,
        );
        assert.equal(named(ts, "containerd.services.sandbox.v1.Controller/Status").length, 1);
        assert.match(await d.logs(), /tracing off[\s\S]*tracing on/);
        await d.controller.stop(pod.id, 0);
        await d.controller.shutdown(pod.id);
      } finally {
        await d.cleanup();
      }
    }),
});

Deno.test({
  name: "tracing: a VM pod's launch, boot and its guest agent's spans join the host's trace",
  ...skipUnless(vmUnavailable() ?? jaegerUnavailable(), "VM tracing with Jaeger"),
  fn: () =>
    withJaeger(async () => {
      const d = await startVmmDaemon([], ["enable_tracing = true"]);
      try {
        const pod = await startPod(d, { cgroupParent: d.cgroupParent });
        const req = await prepareContainer(d, pod, { args: ["true"] }, randomId());
        const t = await taskClient(pod.address);
        try {
          await t.task.create(req, CALLER);
        } finally {
          t.close();
        }
        // Spans reach Jaeger in batches: wait for both (a batch with the launch alone came first).
        const host = await waitTraces(
          "kuasar-vmm",
          (x) =>
            named(x, "vm launch").length > 0 && named(x, "vm boot and agent connect").length > 0,
        );
        assert.equal(named(host, "vm boot and agent connect").length, 1);
        // The agent's spans, exported by the host, sit under the host's call to the agent.
        const guest = await waitTraces(
          "kuasar-guest-agent",
          (x) => x.some((tr) => tr.traceID === TRACE_ID),
        );
        const mine = guest.find((tr) => tr.traceID === TRACE_ID)!;
        const agentCreate = mine.spans.find((s) =>
          s.operationName === "containerd.task.v3.Task/Create" &&
          mine.processes[s.processID].serviceName === "kuasar-guest-agent"
        );
        assert.ok(agentCreate, JSON.stringify(mine.spans.map((s) => s.operationName)));
        assert.ok(mine.spans.some((s) => s.operationName === "runc create"), "the guest's runc");
        await d.controller.stop(pod.id, 0);
        await d.controller.shutdown(pod.id);
      } finally {
        await d.cleanup();
      }
    }),
});
