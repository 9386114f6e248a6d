/**
 * gVisor pod start: Controller Create + Start, then Task.Create + Start of a
 * `sleep` container, through the gVisor sandboxer; beside it, in the same run
 * and alternating with it, a bare `runsc run --detach` of the same container
 * (same rootfs kind, same platform and network mode).
 *
 * @module
 */
import { join } from "node:path";
import { K8S_NS, taskClient, TestDaemon } from "../../tests/support/daemon.ts";
import { writeBundle } from "../../tests/support/oci.ts";
import { createContainer, randomId, startPod } from "../../tests/support/pod.ts";
import { overlayRootfs } from "../../tests/support/rootfs.ts";
import { mountAll, unmountAll } from "../../src/adapters/os/mounts.ts";
import { TEST_RUNSC, TOOLS_CACHE } from "../../tests/support/env.ts";

/**
 * The runsc every side uses: KUASAR_BENCH_RUNSC, else the suites' (the current build
 * `scripts/install_go_tools.sh` caches, else the one on PATH).
 */
export const RUNSC = Deno.env.get("KUASAR_BENCH_RUNSC") ?? TEST_RUNSC;

/** gVisor's own containerd shim, built beside that runsc by `scripts/install_go_tools.sh`. */
export const RUNSC_SHIM = join(TOOLS_CACHE, "gvisor", "bin", "containerd-shim-runsc-v1");

/**
 * A containerd 2.x drop-in with handler `runsc`: gVisor's shim, one per pod, as gVisor documents
 * it, with the bench's runsc on ptrace and its state under `dir`.
 */
export async function runscShimDropIn(dir: string): Promise<string> {
  const conf = join(dir, "runsc.toml");
  await Deno.writeTextFile(
    conf,
    [
      `binary_name = ${JSON.stringify(RUNSC)}`,
      `root = ${JSON.stringify(join(dir, "runsc-root"))}`,
      "[runsc_config]",
      '  platform = "ptrace"',
      "",
    ].join("\n"),
  );
  const table = `plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runsc`;
  return [
    "version = 3",
    `[${table}]`,
    '  runtime_type = "io.containerd.runsc.v1"',
    `  runtime_path = ${JSON.stringify(RUNSC_SHIM)}`,
    `[${table}.options]`,
    '  TypeUrl = "io.containerd.runsc.v1.options"',
    `  ConfigPath = ${JSON.stringify(conf)}`,
    "",
  ].join("\n");
}

/** `runsc --version`'s first line, and where it came from. */
export async function runscVersion(): Promise<string> {
  const out = await new Deno.Command(RUNSC, { args: ["--version"], stdout: "piped" }).output();
  return `${new TextDecoder().decode(out.stdout).split("\n")[0]} (${RUNSC})`;
}

/** Milliseconds of each phase of one pod start. */
export interface PodStart {
  readonly pod: number;
  readonly container: number;
  readonly total: number;
}

async function run(argv: string[]): Promise<void> {
  const out = await new Deno.Command(argv[0], { args: argv.slice(1), stdin: "null" }).output();
  if (!out.success) {
    throw new Error(`${argv.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}

/** One bare `runsc run --detach`, timed; the container is removed afterwards. */
async function bareRun(base: string, root: string, i: number): Promise<number> {
  const id = `bare-${i}-${randomId().slice(0, 8)}`;
  const bundle = join(base, "bare", id);
  await writeBundle(bundle, id, { args: ["sleep", "100000"], sandboxPid: 0, sandboxId: id });
  const specPath = join(bundle, "config.json");
  const spec = JSON.parse(await Deno.readTextFile(specPath));
  delete spec.annotations;
  delete spec.linux.cgroupsPath;
  spec.linux.namespaces = spec.linux.namespaces.map((n: { type: string }) => ({ type: n.type }));
  await Deno.writeTextFile(specPath, JSON.stringify(spec));
  const rootfs = join(bundle, "rootfs");
  await mountAll(await overlayRootfs(join(base, "bare-snap", id)), rootfs);
  const runsc = [RUNSC, "--root", root, "--platform=ptrace", "--network=none"];
  try {
    const t0 = performance.now();
    // `--detach` returns once the container runs; its stdio must not be our pipes.
    const child = new Deno.Command(runsc[0], {
      args: [...runsc.slice(1), "run", "--detach", "--bundle", bundle, id],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    const st = await child.status;
    const ms = performance.now() - t0;
    if (!st.success) throw new Error(`runsc run ${id} failed (${st.code})`);
    return ms;
  } finally {
    await run([...runsc, "delete", "--force", id]).catch(() => {});
    await unmountAll(rootfs);
  }
}

/**
 * The same pod shape with runsc alone: `create` + `start` of a root container
 * (busybox `sleep`, as a pause) and of a subcontainer, back to back: the floor
 * of what the sandboxer does with runsc.
 */
async function barePod(base: string, root: string, i: number): Promise<number> {
  const pod = `barepod-${i}-${randomId().slice(0, 8)}`, ctr = `${pod}-c`;
  const dirs: string[] = [];
  for (const [id, type] of [[pod, "sandbox"], [ctr, "container"]]) {
    const bundle = join(base, "bare", id);
    dirs.push(bundle);
    await writeBundle(bundle, id, { args: ["sleep", "100000"], sandboxPid: 0, sandboxId: pod });
    const specPath = join(bundle, "config.json");
    const spec = JSON.parse(await Deno.readTextFile(specPath));
    spec.annotations["io.kubernetes.cri.container-type"] = type;
    delete spec.linux.cgroupsPath;
    spec.linux.namespaces = spec.linux.namespaces.map((n: { type: string }) => ({ type: n.type }));
    await Deno.writeTextFile(specPath, JSON.stringify(spec));
    await mountAll(await overlayRootfs(join(base, "bare-snap", id)), join(bundle, "rootfs"));
  }
  const runsc = [RUNSC, "--root", root, "--platform=ptrace", "--network=none"];
  const quiet = (args: string[]) =>
    new Deno.Command(runsc[0], {
      args: [...runsc.slice(1), ...args],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn().status;
  try {
    const t0 = performance.now();
    for (const [id, bundle] of [[pod, dirs[0]], [ctr, dirs[1]]]) {
      if (!(await quiet(["create", "--bundle", bundle, id])).success) throw new Error("create");
      if (!(await quiet(["start", id])).success) throw new Error("start");
    }
    return performance.now() - t0;
  } finally {
    await run([...runsc, "delete", "--force", ctr]).catch(() => {});
    await run([...runsc, "delete", "--force", pod]).catch(() => {});
    for (const d of dirs) await unmountAll(join(d, "rootfs"));
  }
}

/** One pod through the sandboxer, timed by phase; the pod is removed afterwards. */
async function sandboxerRun(d: TestDaemon): Promise<PodStart> {
  const t0 = performance.now();
  const pod = await startPod(d);
  const t1 = performance.now();
  const c = await createContainer(d, pod, { args: ["sleep", "100000"] });
  const t = await taskClient(pod.address);
  await t.task.start({ id: c.id, execId: "" }, K8S_NS);
  const t2 = performance.now();
  t.close();
  await d.controller.shutdown(pod.id);
  return { pod: t1 - t0, container: t2 - t1, total: t2 - t0 };
}

/** `n` starts of each, alternating, after one warm-up of each. */
export async function gvisorBench(
  n: number,
): Promise<{ ours: PodStart[]; bare: number[]; barePod: number[] }> {
  const base = await Deno.makeTempDir({ prefix: "k-" });
  const config = join(base, "gvisor.toml");
  await Deno.writeTextFile(config, `[gvisor]\nbinary = "${RUNSC}"\nplatform = "ptrace"\n`);
  const d = await TestDaemon.start({ base, kind: "gvisor", extraArgs: ["--config", config] });
  const root = join(base, "bare-root");
  try {
    await sandboxerRun(d);
    await bareRun(base, root, 0);
    await barePod(base, root, 0);
    const ours: PodStart[] = [], bare: number[] = [], pods: number[] = [];
    for (let i = 1; i <= n; i++) {
      ours.push(await sandboxerRun(d));
      bare.push(await bareRun(base, root, i));
      pods.push(await barePod(base, root, i));
    }
    return { ours, bare, barePod: pods };
  } finally {
    await d.cleanup();
    await Deno.remove(base, { recursive: true }).catch(() => {});
  }
}
