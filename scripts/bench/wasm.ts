/**
 * Wasm task throughput: N hello-module tasks create→start→exit→delete
 * through the Task API, serially and C at a time, per engine (embedded V8,
 * Wasmtime's C API when installed), with a `wasmtime run` process per task
 * as the baseline when the Wasmtime CLI is installed; and the memory an idle
 * running module costs (modules blocked reading stdin).
 *
 * @module
 */
import { join } from "node:path";
import { K8S_NS, mkfifo, taskClient, TestDaemon } from "../../tests/support/daemon.ts";
import { TestContainerd } from "../../tests/support/containerd.ts";
import { unmountAll } from "../../src/adapters/os/mounts.ts";
import { startPod, type TestPod } from "../../tests/support/pod.ts";
import {
  buildWasmModules,
  prepareWasmContainer,
  type WasmContainerOptions,
  type WasmModules,
} from "../../tests/support/wasm.ts";
import { fileURLToPath } from "node:url";
import { findExecutable } from "../../src/adapters/os/executables.ts";
import { TOOLS_CACHE } from "../../tests/support/env.ts";
import type { CreateTaskRequest } from "../../src/gen/containerd/runtime/task/v3/shim.ts";
import { median, percentile, pidsMatching, settledPss, sumPss } from "./pss.ts";

/** Latencies and throughput of one mode. */
export interface Throughput {
  readonly tasks: number;
  readonly concurrency: number;
  readonly wallMs: number;
  readonly latenciesMs: number[];
}

/** One engine's (or the baseline's) numbers. */
export interface EngineResult {
  readonly name: string;
  readonly serial: Throughput;
  readonly parallel: Throughput;
  /** PSS per idle running module, KiB. */
  readonly idleModuleKiB: number;
}

export function stats(t: Throughput) {
  return {
    tasksPerSec: (t.tasks / t.wallMs) * 1000,
    p50: median(t.latenciesMs),
    p99: percentile(t.latenciesMs, 99),
  };
}

/**
 * runwasi's Wasmtime shim, built (once, then cached) by `scripts/install_runwasi.sh` when
 * `build`; undefined when it is not built (and not to be) or cannot be (no cargo), which the
 * script says on stderr.
 */
export async function runwasiShim(o: { build: boolean }): Promise<string | undefined> {
  const script = fileURLToPath(new URL("../install_runwasi.sh", import.meta.url));
  const out = await new Deno.Command("bash", {
    args: [script, TOOLS_CACHE, ...(o.build ? [] : ["--cached-only"])],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  if (!out.success) throw new Error(`${script} failed (exit ${out.code})`);
  return new TextDecoder().decode(out.stdout).trim() || undefined;
}

/** A containerd 2.x drop-in with handler `wasmtime`: runwasi's shim, one per pod. */
export function runwasiDropIn(shim: string): string {
  const table = `plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.wasmtime`;
  return [
    "version = 3",
    `[${table}]`,
    '  runtime_type = "io.containerd.wasmtime.v1"',
    `  runtime_path = ${JSON.stringify(shim)}`,
    "",
  ].join("\n");
}

/** Where the Wasmtime CLI baseline comes from, if installed. */
export function wasmtimeCli(): string | undefined {
  const home = Deno.env.get("HOME") ?? "/root";
  return findExecutable("wasmtime") ??
    findExecutable(join(home, ".cache/kuasar-tools/wasmtime-cli/bin/wasmtime"));
}

async function oneTask(
  t: Awaited<ReturnType<typeof taskClient>>,
  req: CreateTaskRequest,
  deleted?: (req: CreateTaskRequest) => Promise<void>,
): Promise<number> {
  const t0 = performance.now();
  await t.task.create(req, K8S_NS);
  const w = t.task.wait({ id: req.id, execId: "" }, K8S_NS);
  await t.task.start({ id: req.id, execId: "" }, K8S_NS);
  const exit = await w;
  if (exit.exitStatus !== 0) throw new Error(`task ${req.id} exited ${exit.exitStatus}`);
  await t.task.delete({ id: req.id, execId: "" }, K8S_NS);
  await deleted?.(req);
  return performance.now() - t0;
}

/** Runs `reqs` with `concurrency` clients; returns latencies and wall time. */
async function drive(
  pod: Pick<TestPod, "address">,
  reqs: CreateTaskRequest[],
  concurrency: number,
  version: 2 | 3 = 3,
  deleted?: (req: CreateTaskRequest) => Promise<void>,
): Promise<Throughput> {
  const clients = await Promise.all(
    Array.from({ length: concurrency }, () => taskClient(pod.address, version)),
  );
  const latenciesMs: number[] = [];
  let next = 0;
  const t0 = performance.now();
  await Promise.all(clients.map(async (c) => {
    while (next < reqs.length) latenciesMs.push(await oneTask(c, reqs[next++], deleted));
  }));
  const wallMs = performance.now() - t0;
  for (const c of clients) c.close();
  return { tasks: reqs.length, concurrency, wallMs, latenciesMs };
}

/** PSS of the Wasm host per idle running module (cat blocked on an unwritten stdin). */
async function idleModules(
  d: TestDaemon,
  pod: TestPod,
  m: WasmModules,
  engine: string,
  n: number,
): Promise<number> {
  const host = await pidsMatching(`\0${join(d.dir, ".wasm-host.sock")}\0`);
  const before = await settledPss(host[0]);
  const t = await taskClient(pod.address);
  const ids: string[] = [];
  // A writer is kept on each stdin, as containerd keeps one: the modules wait in a read (an
  // engine that opens the FIFO itself would otherwise wait in its open, before the module runs).
  const writers: Deno.FsFile[] = [];
  for (let i = 0; i < n; i++) {
    const stdin = join(d.base, `idle-${engine}-${i}`);
    await mkfifo(stdin);
    writers.push(await Deno.open(stdin, { read: true, write: true }));
    const req = await prepareWasmContainer(d, pod, m, {
      module: "cat",
      stdin,
      annotations: { "io.kuasar.wasm.engine": engine },
    });
    await t.task.create(req, K8S_NS);
    await t.task.start({ id: req.id, execId: "" }, K8S_NS);
    ids.push(req.id);
  }
  await new Promise((r) => setTimeout(r, 1000));
  const after = await settledPss(host[0]);
  for (const id of ids) {
    await t.task.kill({ id, execId: "", signal: 9, all: false }, K8S_NS).catch(() => {});
    await t.task.wait({ id, execId: "" }, K8S_NS).catch(() => {});
    await t.task.delete({ id, execId: "" }, K8S_NS).catch(() => {});
  }
  for (const w of writers) w.close();
  t.close();
  return (after - before) / n;
}

/** The Task API numbers of one engine. */
export async function engineBench(
  engine: string,
  n: number,
  concurrency: number,
  idle: number,
): Promise<EngineResult> {
  const m = await buildWasmModules();
  const d = await TestDaemon.start({ kind: "wasm", extraArgs: ["--log-level", "warn"] });
  try {
    const pod = await startPod(d);
    const on = { annotations: { "io.kuasar.wasm.engine": engine } };
    const make = async (count: number) => {
      const reqs: CreateTaskRequest[] = [];
      for (let i = 0; i < count; i++) {
        reqs.push(await prepareWasmContainer(d, pod, m, { ...on, module: "hello" }));
      }
      return reqs;
    };
    await drive(pod, await make(20), concurrency); // warm-up: workers, compiled module
    const serial = await drive(pod, await make(n), 1);
    const parallel = await drive(pod, await make(n), concurrency);
    const idleModuleKiB = await idleModules(d, pod, m, engine, idle);
    await d.controller.shutdown(pod.id);
    return { name: engine, serial, parallel, idleModuleKiB };
  } finally {
    await d.cleanup();
  }
}

/** The pids of `root` and of every process under it. */
async function processTree(root: number): Promise<number[]> {
  const children = new Map<number, number[]>();
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    const stat = await Deno.readTextFile(`/proc/${e.name}/stat`).catch(() => "");
    const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    if (ppid) children.set(ppid, [...(children.get(ppid) ?? []), Number(e.name)]);
  }
  const out: number[] = [];
  for (const todo = [root]; todo.length;) {
    const pid = todo.pop()!;
    out.push(pid);
    todo.push(...(children.get(pid) ?? []));
  }
  return out;
}

/**
 * runwasi's Wasmtime shim alone, driven like our pods: one shim (started as containerd starts
 * a shim: `start` in the first bundle, with containerd's addresses),
 * a long-running task as its pod's first container, then the hello tasks through its Task API
 * (task v2), serially and `concurrency` at a time. Idle PSS: `idle` cat modules blocked reading
 * stdin, the growth of the shim and everything under it, per module.
 */
export async function runwasiTaskBench(
  shim: string,
  n: number,
  concurrency: number,
  idle: number,
): Promise<EngineResult> {
  const m = await buildWasmModules();
  const base = await Deno.makeTempDir({ prefix: "kuasar-runwasi-" });
  // The shim asks containerd for each container's image (Wasm OCI layers), and publishes its
  // events there: a containerd of its own, whose metadata knows none of these tasks (the shim
  // then reads the module from the rootfs, as ours does).
  const ctd = await TestContainerd.start({ images: false });
  // Its tasks run in containers (youki's libcontainer): their specs are containerd's default
  // (`ctr oci spec`: /dev, /sys, ... mounted) with our process, in new pid, ipc, uts and mount
  // namespaces, as a CRI container in a pod that shares the node's network.
  const defaults = JSON.parse(
    new TextDecoder().decode(
      (await new Deno.Command(ctd.ctrBin, { args: ["oci", "spec"], stdout: "piped" }).output())
        .stdout,
    ),
  );
  const at = { base };
  const pod = { id: `runwasi-${crypto.randomUUID().slice(0, 8)}`, address: "", pid: 0 };
  const prepare = async (o: WasmContainerOptions) => {
    const req = await prepareWasmContainer(at, pod, m, o);
    const path = join(req.bundle, "config.json");
    const ours = JSON.parse(await Deno.readTextFile(path));
    await Deno.writeTextFile(
      path,
      JSON.stringify({
        ...defaults,
        process: { ...defaults.process, ...ours.process },
        root: ours.root,
        annotations: ours.annotations,
        linux: {
          ...defaults.linux,
          cgroupsPath: undefined,
          namespaces: ["pid", "ipc", "uts", "mount"].map((type) => ({ type })),
        },
      }),
    );
    return req;
  };
  const first = await prepare({ module: "echo", args: ["sleep", "100000"] });
  // containerd gives a shim its log as a FIFO in the bundle, which it reads for the shim's life:
  // opened read-write here, so that neither side waits for the other and no EOF comes between.
  const log = join(first.bundle, "log");
  await mkfifo(log);
  const logFile = await Deno.open(log, { read: true, write: true });
  const draining = (async () => {
    const buf = new Uint8Array(65536);
    while ((await logFile.read(buf).catch(() => null)) !== null) { /* discarded */ }
  })();
  const started = await new Deno.Command(shim, {
    args: [
      "-namespace",
      "k8s.io",
      "-id",
      pod.id,
      "-address",
      ctd.address,
      "start",
    ],
    cwd: first.bundle,
    env: { TTRPC_ADDRESS: ctd.ttrpcAddress },
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!started.success) {
    throw new Error(`${shim} start failed: ${new TextDecoder().decode(started.stderr)}`);
  }
  const address = new TextDecoder().decode(started.stdout).trim();
  const t = await taskClient(address, 2);
  const make = async (count: number) => {
    const reqs: CreateTaskRequest[] = [];
    for (let i = 0; i < count; i++) {
      reqs.push(await prepare({ module: "hello" }));
    }
    return reqs;
  };
  try {
    await t.task.create(first, K8S_NS);
    await t.task.start({ id: first.id, execId: "" }, K8S_NS);
    const shimPid = (await t.task.connect({ id: first.id }, K8S_NS)).shimPid;
    // After a Delete, containerd unmounts the task's rootfs (runwasi's shim leaves it).
    const target = { ...pod, address };
    const unmount = (r: CreateTaskRequest) => unmountAll(join(r.bundle, "rootfs"));
    await drive(target, await make(20), concurrency, 2, unmount);
    const serial = await drive(target, await make(n), 1, 2, unmount);
    const parallel = await drive(target, await make(n), concurrency, 2, unmount);
    const before = await sumPss(await processTree(shimPid));
    const ids: string[] = [];
    const writers: Deno.FsFile[] = [];
    for (let i = 0; i < idle; i++) {
      const stdin = join(base, `idle-${i}`);
      await mkfifo(stdin);
      writers.push(await Deno.open(stdin, { read: true, write: true })); // as in idleModules
      const req = await prepare({ module: "cat", stdin });
      await t.task.create(req, K8S_NS);
      await t.task.start({ id: req.id, execId: "" }, K8S_NS);
      ids.push(req.id);
    }
    await new Promise((r) => setTimeout(r, 1500));
    const idleModuleKiB = ((await sumPss(await processTree(shimPid))) - before) / idle;
    for (const id of [...ids, first.id]) {
      await t.task.kill({ id, execId: "", signal: 9, all: false }, K8S_NS).catch(() => {});
      await t.task.wait({ id, execId: "" }, K8S_NS).catch(() => {});
      await t.task.delete({ id, execId: "" }, K8S_NS).catch(() => {});
    }
    for (const w of writers) w.close();
    return { name: "runwasi (containerd-shim-wasmtime-v1)", serial, parallel, idleModuleKiB };
  } finally {
    await t.task.shutdown({ id: first.id, now: true }, K8S_NS).catch(() => {});
    t.close();
    logFile.close();
    await draining;
    await unmountAll(base);
    await ctd.cleanup();
    await Deno.remove(base, { recursive: true }).catch(() => {});
  }
}

/** The baseline: a `wasmtime run` process per task. */
export async function wasmtimeRunBaseline(
  cli: string,
  n: number,
  concurrency: number,
  idle: number,
): Promise<EngineResult> {
  const m = await buildWasmModules();
  const runOne = async () => {
    const t0 = performance.now();
    const r = await new Deno.Command(cli, {
      args: ["run", m.hello],
      stdout: "null",
      stderr: "null",
    }).output();
    if (!r.success) throw new Error(`wasmtime run exited ${r.code}`);
    return performance.now() - t0;
  };
  const mode = async (c: number): Promise<Throughput> => {
    const latenciesMs: number[] = [];
    let left = n;
    const t0 = performance.now();
    await Promise.all(Array.from({ length: c }, async () => {
      while (left-- > 0) latenciesMs.push(await runOne());
    }));
    return { tasks: n, concurrency: c, wallMs: performance.now() - t0, latenciesMs };
  };
  for (let i = 0; i < 5; i++) await runOne();
  const serial = await mode(1);
  const parallel = await mode(concurrency);
  // Idle: processes blocked reading a stdin pipe that stays open.
  const procs = Array.from(
    { length: idle },
    () =>
      new Deno.Command(cli, {
        args: ["run", m.cat],
        stdin: "piped",
        stdout: "null",
        stderr: "null",
      })
        .spawn(),
  );
  await new Promise((r) => setTimeout(r, 1500));
  const idleModuleKiB = (await sumPss(procs.map((p) => p.pid))) / idle;
  for (const p of procs) {
    p.kill("SIGKILL");
    await p.status;
  }
  return { name: "wasmtime run (process per task)", serial, parallel, idleModuleKiB };
}
