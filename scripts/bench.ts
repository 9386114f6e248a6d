// `deno task bench [section…]`: the benchmarks the issues name, each printed
// as a markdown table with medians and, where a baseline exists, ratios
// measured in the same run. Never part of the test suite (no timing asserts).
//
// Sections: runc-memory, cri, floor, gvisor-cri, wasm-cri, scale, wasm, gvisor, vmm.
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { criBench, type HandlerResult, summary } from "./bench/cri.ts";
import { gvisorBench, RUNSC, runscShimDropIn, runscVersion } from "./bench/gvisor.ts";
import { vmmBench, type VmStart } from "./bench/vmm.ts";
import { type MemoryPoint, runcMemory, type Slope, slope } from "./bench/runc_memory.ts";
import {
  engineBench,
  type EngineResult,
  runwasiDropIn,
  runwasiShim,
  runwasiTaskBench,
  stats,
  wasmtimeCli,
  wasmtimeRunBaseline,
} from "./bench/wasm.ts";
import {
  buildWasmModules,
  wasmtimeUnavailable,
  wasmToolsUnavailable,
} from "../tests/support/wasm.ts";
import { WASM_IMAGE } from "../tests/support/images.ts";
import { barChart, lineChart } from "./bench/svg.ts";
import { scaleBench, WARMUP_PODS } from "./bench/scale.ts";
import { unmountAll } from "../src/adapters/os/mounts.ts";
import { floorBench, type Phases } from "./bench/floor.ts";

const DOCS = fileURLToPath(new URL("../docs/benchmarks/", import.meta.url));

const kib = (x: number) => `${Math.round(x)} KiB`;
const mib = (x: number) => `${(x / 1024).toFixed(1)} MiB`;

function percentileOf(xs: readonly number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

/**
 * Runs `fn` with TMPDIR on a fresh tmpfs: the sandboxer's state then lives in
 * memory, as under its default `/run/...` --dir on a node (this machine's
 * /run is on disk, where every state write pays an fsync).
 */
async function onTmpfs<T>(fn: () => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "kuasar-bench-" });
  const mount = (args: string[]) => new Deno.Command(args[0], { args: args.slice(1) }).output();
  if (!(await mount(["mount", "-t", "tmpfs", "-o", "size=4g", "tmpfs", dir])).success) {
    throw new Error(`cannot mount a tmpfs at ${dir}`);
  }
  const before = Deno.env.get("TMPDIR");
  Deno.env.set("TMPDIR", dir);
  try {
    return await fn();
  } finally {
    if (before === undefined) Deno.env.delete("TMPDIR");
    else Deno.env.set("TMPDIR", before);
    await mount(["umount", "-l", dir]);
    await Deno.remove(dir).catch(() => {});
  }
}

/** Prints a section's report and writes it to docs/benchmarks/<file>. */
async function writeReport(file: string, lines: string[]): Promise<void> {
  const md = lines.join("\n");
  console.log("\n" + md);
  await Deno.mkdir(DOCS, { recursive: true });
  await Deno.writeTextFile(join(DOCS, file), md);
}

/** Bundles the sandboxer as it is deployed (dist/kuasar.js); resolves with the bundle's path. */
async function bundleSandboxer(): Promise<string> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", fileURLToPath(new URL("./bundle.ts", import.meta.url))],
    stdout: "null",
  }).output();
  if (!r.success) throw new Error("bundling the sandboxer failed");
  return fileURLToPath(new URL("../dist/kuasar.js", import.meta.url));
}

/** A CRI comparison's tables and plots, written to docs/benchmarks/<file>.{md,-memory.svg,-startup.svg}. */
async function criReport(r: {
  file: string;
  title: string;
  setup: string[];
  names: [string, string];
  memoryNames: [string, string];
  counts: number[];
  results: HandlerResult[];
}): Promise<void> {
  const [shim, ours] = r.results;
  const a = summary(shim), b = summary(ours);
  const ms = (x: number) => `${Math.round(x)} ms`;
  const counts = r.counts, first = counts[0], last = counts[counts.length - 1];
  const pps = (x: HandlerResult) => (x.parallelN / (x.parallelMs / 1000)).toFixed(1);
  // Per added pod: the least-squares slope over every count (a V8 or malloc heap grows in
  // steps, so the two end points alone move by tens of KiB per pod from run to run).
  const perPod = (x: HandlerResult) => slope(counts, counts.map((n) => x.memoryKiB[n]));
  const ends = (x: HandlerResult) => (x.memoryKiB[last] - x.memoryKiB[first]) / (last - first);
  const pm = (s: Slope) => `${kib(s.slope)}${Number.isNaN(s.se) ? "" : ` ± ${kib(s.se)}`}`;
  const lines = [
    `# 1:N benchmark: ${r.title}`,
    "",
    `Run ${
      new Date().toISOString()
    } on one containerd 2.4.2 (${Deno.build.arch}, ${navigator.hardwareConcurrency} CPUs),`,
    ...r.setup,
    "Pods started with `crictl run` (RunPodSandbox, CreateContainer, StartContainer); serial starts",
    "alternate between the two handlers after a warm-up of each.",
    "",
    "## Pod start",
    "",
    `| | ${r.names[0]} | ${r.names[1]} | ratio |`,
    "|---|---:|---:|---:|",
    `| serial p50 (N = ${shim.serialMs.length}) | ${ms(a.p50)} | ${ms(b.p50)} | ${
      (b.p50 / a.p50).toFixed(2)
    }× |`,
    `| serial p90 | ${ms(a.p90)} | ${ms(b.p90)} | ${(b.p90 / a.p90).toFixed(2)}× |`,
    `| serial p99 | ${ms(a.p99)} | ${ms(b.p99)} | ${(b.p99 / a.p99).toFixed(2)}× |`,
    `| parallel, wall time for ${shim.parallelN}${
      shim.concurrency < shim.parallelN ? `, ${shim.concurrency} at a time` : ""
    } | ${ms(a.parallel)} | ${ms(b.parallel)} | ${(b.parallel / a.parallel).toFixed(2)}× |`,
    `| pods started per second (parallel; ratio: ours / theirs) | ${pps(shim)} | ${pps(ours)} | ${
      (a.parallel / b.parallel).toFixed(2)
    }× |`,
    "",
    "## Management memory (PSS)",
    "",
    `| pods | ${r.memoryNames[0]} | ${r.memoryNames[1]} | ratio |`,
    "|---:|---:|---:|---:|",
    ...counts.map((n) =>
      `| ${n} | ${mib(shim.memoryKiB[n])} | ${mib(ours.memoryKiB[n])} | ${
        (100 * ours.memoryKiB[n] / shim.memoryKiB[n]).toFixed(1)
      }% |`
    ),
    "",
    `Per added pod (least-squares slope over the ${counts.length} counts, ± one standard error of the fit; the points are one growing daemon's, not independent): ${
      r.names[0]
    } ${pm(perPod(shim))}, ${r.names[1]} ${pm(perPod(ours))}${
      perPod(shim).slope > 0
        ? ` (${(100 * perPod(ours).slope / perPod(shim).slope).toFixed(1)}%)`
        : ""
    }; from ${first} to ${last} pods alone: ${kib(ends(shim))} and ${kib(ends(ours))}.`,
    "",
    `![memory](${r.file}-memory.svg) ![start](${r.file}-startup.svg)`,
    "",
  ];
  await writeReport(`${r.file}.md`, lines);
  await Deno.writeTextFile(
    join(DOCS, `${r.file}-memory.svg`),
    lineChart({
      title: "Management memory (PSS) by pod count",
      xLabel: "pods",
      yLabel: "MiB",
      series: [0, 1].map((k) => ({
        name: `${r.names[k]}: ${r.memoryNames[k]}`,
        points: counts.map((n) => [n, r.results[k].memoryKiB[n] / 1024] as [number, number]),
      })),
    }),
  );
  await Deno.writeTextFile(
    join(DOCS, `${r.file}-startup.svg`),
    barChart({
      title: "Pod start through crictl run",
      yLabel: "ms",
      categories: ["serial p50", "serial p90", "serial p99", `parallel ${shim.parallelN} / 10`],
      series: [[r.names[0], a], [r.names[1], b]].map(([name, x]) => ({
        name: name as string,
        values: [
          (x as typeof a).p50,
          (x as typeof a).p90,
          (x as typeof a).p99,
          (x as typeof a).parallel / 10,
        ],
      })),
    }),
  );
}

const sections: Record<string, () => Promise<void>> = {
  vmm: async () => {
    const n = Number(Deno.env.get("KUASAR_BENCH_VMM_PODS") ?? 10);
    // The same image and VM size three ways, one after the other in this run.
    const cold = await vmmBench(n, "virtiofs", true);
    const disks = await vmmBench(n, "disks", false);
    const tpl = await vmmBench(n, "template", false);
    const pool = await vmmBench(n, "pool", false);
    const ms = (x: number) => (Number.isFinite(x) ? `${Math.round(x)} ms` : "—");
    const p50 = (xs: number[]) => percentileOf(xs, 50);
    const cells = (f: (o: VmStart) => number) =>
      [cold, disks, tpl, pool].map((r) => {
        const xs = r.ours.map(f);
        return `${ms(p50(xs))} / ${ms(percentileOf(xs, 90))}`;
      }).join(" | ");
    const total = (r: typeof cold) => p50(r.ours.map((o) => o.total));
    const mib = (kib: number) => `${(kib / 1024).toFixed(1)} MiB`;
    const lines = [
      "# microVM pod start: booted, restored from a template, and a bare QEMU boot",
      "",
      `Run ${
        new Date().toISOString()
      } (${Deno.build.arch}, ${navigator.hardwareConcurrency} CPUs), QEMU with **TCG**`,
      "(KVM is not usable here), 512 MiB, 1 vCPU, the image of `deno task guest-image`; for each",
      `way ${n} pods, started one after the other and left running; ${n} bare boots alternating`,
      "with the first way's pods.",
      "",
      "Ways: **booted, virtiofs** (the default: containers' files shared over virtiofs, guest",
      'memory a shared memfd); **booted, disks** (`share_fs = "None"`: each bundle a disk image);',
      "**template** (`template = true`, bundles on disks: each VM restored from a template VM",
      "saved once its agent was ready, its RAM file mapped copy-on-write); **pool**",
      "(`template_pool = 1` besides: VMs restored from the template and run through a throwaway",
      "container ahead of pods; each pod here started once the pool had its VM ready, and the",
      "pool made the next while the pod's first container started).",
      "",
      "Phases, as containerd drives them: Controller Create + Start (Start returns once the agent",
      "is set up), then Task.Create + Task.Start of a first container (busybox `sleep`, an",
      "overlay rootfs, crun in the guest). Inside the Start: the VMM up (QMP answers after the",
      "spawn; for a template, the restore of its saved state), agent ready (Start's own timing:",
      "for a template, reseeded, clock set, hostname and NICs given; from the pool, the VM",
      "handed over, clock set, hostname and NICs given). Bare: the same kernel and",
      "initramfs with busybox as init powering off at once (`rdinit=/bin/busybox -- poweroff",
      "-f`), from spawn to QEMU's exit.",
      "",
      "| p50 / p90 | booted, virtiofs | booted, disks | template | pool |",
      "|---|---:|---:|---:|---:|",
      `| VMM up (spawn, or restore) | ${cells((o) => o.vmm)} |`,
      `| kernel boot (guest uptime at /init) | ${cells((o) => o.guestInit)} |`,
      `| agent ready (from spawn) | ${cells((o) => o.agentReady)} |`,
      `| Controller Create + Start | ${cells((o) => o.pod)} |`,
      `| first container: Task.Create + Task.Start | ${cells((o) => o.container)} |`,
      `| **Controller Create → first container running** | ${cells((o) => o.total)} |`,
      `| QEMU PSS per idle pod (${n} running) | ${
        [cold, disks, tpl, pool].map((r) => mib(r.perPodQemuKiB)).join(" | ")
      } |`,
      `| host PSS per pod besides QEMU | ${
        [cold, disks, tpl, pool].map((r) => mib(r.perPodHostKiB)).join(" | ")
      } |`,
      "",
      `Bare QEMU boot to init: p50 ${ms(p50(cold.bare))}, p90 ${ms(percentileOf(cold.bare, 90))}.`,
      "",
      `Ratios (p50, pod + first container): booted virtiofs / bare ${
        (total(cold) / p50(cold.bare)).toFixed(2)
      }×; template / booted disks ${(total(tpl) / total(disks)).toFixed(2)}× and template / ` +
      `booted virtiofs ${(total(tpl) / total(cold)).toFixed(2)}× (target ≤ 0.2×); template / ` +
      `bare ${(total(tpl) / p50(cold.bare)).toFixed(2)}×. QEMU PSS per idle pod, template / ` +
      `booted disks: ${(tpl.perPodQemuKiB / disks.perPodQemuKiB).toFixed(2)}× (target ≤ 0.3×).`,
      "",
      `From the pool: pod + first container / booted virtiofs ${
        (total(pool) / total(cold)).toFixed(2)
      }× (target ≤ 0.2×), / booted disks ${(total(pool) / total(disks)).toFixed(2)}×, / ` +
      `template ${(total(pool) / total(tpl)).toFixed(2)}×. QEMU PSS per idle pod, pool / booted ` +
      `disks: ${(pool.perPodQemuKiB / disks.perPodQemuKiB).toFixed(2)}×. What the pool costs: ` +
      `each VM it makes took ${ms(p50(pool.poolMakeMs))} p50 (restore, reseed, a throwaway ` +
      `container to its exit, its disk unplugged), and its spare VM waiting for the next pod ` +
      `was ${mib(pool.spareQemuKiB ?? NaN)} of PSS.`,
      "",
      `The template: built once in ${ms(tpl.template?.bootMs ?? NaN)} (boot to agent ready) + ` +
      `${ms(tpl.template?.saveMs ?? NaN)} (save); its device state ${
        Math.round((tpl.template?.stateBytes ?? 0) / 1024)
      } KiB, its RAM a 512 MiB file the clones map, filled whole when it is built: 512 MiB of ` +
      `tmpfs whatever the number of pods, besides the PSS above (which counts the pages of it ` +
      `the clones map); spread over ${n} pods, at most ${Math.round(512 / n)} MiB each.`,
      "",
    ];
    await writeReport("vmm.md", lines);
  },
  gvisor: async () => {
    const n = Number(Deno.env.get("KUASAR_BENCH_GVISOR_PODS") ?? 20);
    const { ours, bare, barePod } = await gvisorBench(n);
    const ms = (x: number) => `${Math.round(x)} ms`;
    const row = (name: string, xs: number[]) =>
      `| ${name} | ${ms(percentileOf(xs, 50))} | ${ms(percentileOf(xs, 90))} |`;
    const ratio = (p: number) =>
      (percentileOf(ours.map((o) => o.total), p) / percentileOf(bare, p)).toFixed(2);
    const lines = [
      "# gVisor pod start: the gVisor sandboxer vs a bare `runsc run`",
      "",
      `Run ${
        new Date().toISOString()
      } (${Deno.build.arch}, ${navigator.hardwareConcurrency} CPUs), ${await runscVersion()} with`,
      "`--platform=ptrace --network=none` (KVM is not usable here), a busybox `sleep` container on an",
      `overlay rootfs; ${n} starts of each, alternating, after one warm-up of each.`,
      "",
      "Sandboxer: Controller Create + Start (a runsc sandbox whose root container is the helper's",
      "`pause`), then Task.Create + Task.Start of the container as a subcontainer; timed until",
      "Task.Start returns. Bare: `runsc run --detach` of the same container, until it returns.",
      "",
      "| | p50 | p90 |",
      "|---|---:|---:|",
      row("sandboxer: pod (Create + Start)", ours.map((o) => o.pod)),
      row("sandboxer: container (Task.Create + Start)", ours.map((o) => o.container)),
      row("**sandboxer: total**", ours.map((o) => o.total)),
      row("**bare `runsc run --detach`**", bare),
      row("bare runsc, pod-shaped (create + start of a root and a subcontainer)", barePod),
      "",
      `Ratio sandboxer / bare \`runsc run\`: p50 ${ratio(50)}×, p90 ${ratio(90)}× (target ≤ 1.2×).`,
      `Ratio sandboxer / pod-shaped runsc: p50 ${
        (percentileOf(ours.map((o) => o.total), 50) / percentileOf(barePod, 50)).toFixed(2)
      }×, p90 ${
        (percentileOf(ours.map((o) => o.total), 90) / percentileOf(barePod, 90)).toFixed(2)
      }×.`,
      "",
      "The sandboxer starts two containers in the sandbox (the pod's root `pause` and the",
      "workload) where the bare run starts one: a pod can hold many containers, the bare",
      "sandbox only the one it was made for. The pod-shaped row is runsc doing just that, with",
      "nothing around it; the distance to it is the sandboxer's own cost (gRPC/ttrpc, monitor",
      "helper, rootfs mount, state files).",
      "",
    ];
    await writeReport("gvisor.md", lines);
  },
  wasm: async () => {
    const n = Number(Deno.env.get("KUASAR_BENCH_WASM_TASKS") ?? 1000), c = 8, idle = 20;
    const notes: string[] = [];
    const results = await onTmpfs(async () => {
      const rs: EngineResult[] = [await engineBench("embedded", n, c, idle)];
      const lib = wasmtimeUnavailable();
      if (lib) notes.push(`Wasmtime engine not measured: ${lib}.`);
      else rs.push(await engineBench("wasmtime", n, c, idle));
      const cli = wasmtimeCli();
      if (cli) rs.push(await wasmtimeRunBaseline(cli, n, c, idle));
      else notes.push("Baseline not measured: no `wasmtime` CLI (cargo install wasmtime-cli).");
      const shim = await runwasiShim({ build: false });
      if (shim) rs.push(await runwasiTaskBench(shim, n, c, idle));
      else notes.push("runwasi not measured: its shim is not built (`deno task bench wasm-cri`).");
      return rs;
    });
    const base = results.find((r) => r.name.startsWith("wasmtime run"));
    const runwasi = results.find((r) => r.name.startsWith("runwasi"));
    const against = (peer: EngineResult | undefined, what: string) =>
      peer
        ? results.filter((r) => r === results[0] || r.name === "wasmtime").map((r) =>
          `${r.name}: ${
            (stats(r.parallel).tasksPerSec / stats(peer.parallel).tasksPerSec).toFixed(1)
          }× ${what}'s tasks/s at ${c} at a time, ${
            (r.idleModuleKiB / peer.idleModuleKiB * 100).toFixed(0)
          }% of its idle PSS per module.`
        )
        : [];
    const ms = (x: number) => `${x.toFixed(2)} ms`;
    const lines = [
      `# Wasm task throughput`,
      "",
      `Run ${
        new Date().toISOString()
      } (${Deno.build.arch}, ${navigator.hardwareConcurrency} CPUs).`,
      `${n} tasks of a hello module (WAT, writes one line), each Task.Create → Start → Wait → Delete`,
      `through the Task API (ttrpc) of one Wasm pod; serially, then ${c} clients at a time.`,
      `The baseline runs \`wasmtime run hello.wasm\` as a process per task. runwasi: its`,
      "Wasmtime shim started as containerd starts a shim, the same tasks through its Task API",
      `(task v2) after a long-running first container. Idle PSS: ${idle} modules blocked reading`,
      "stdin, the PSS growth of the Wasm host (or of the shim and what runs under it, or the",
      "processes' PSS) per module.",
      "The sandboxer's --dir and the rootfs snapshots are on a tmpfs, as `/run` is on nodes.",
      "",
      "| engine | serial tasks/s | serial p50 | serial p99 | 8× tasks/s | 8× p50 | 8× p99 | PSS per idle module |",
      "|---|---:|---:|---:|---:|---:|---:|---:|",
      ...results.map((r) => {
        const s = stats(r.serial), p = stats(r.parallel);
        return `| ${r.name} | ${s.tasksPerSec.toFixed(0)} | ${ms(s.p50)} | ${ms(s.p99)} | ${
          p.tasksPerSec.toFixed(0)
        } | ${ms(p.p50)} | ${ms(p.p99)} | ${kib(r.idleModuleKiB)} |`;
      }),
      "",
      ...against(base, "the baseline"),
      ...against(runwasi, "runwasi"),
      "",
      `Target (issue 4): ≥ 500 tasks/s at 8 at a time for the embedded engine (runwasi publishes ≈330`,
      `tasks/s for its Wasmtime shim).`,
      ...(notes.length ? ["", ...notes] : []),
      "",
    ];
    await writeReport("wasm.md", lines);
  },
  "runc-memory": async () => {
    const r = await runcMemory(undefined, await bundleSandboxer());
    const pm = (s: Slope) => `${Math.round(s.slope)} ± ${Math.round(s.se)} KiB`;
    const row = (p: MemoryPoint) =>
      `| ${p.pods} | ${mib(p.daemonKiB)} | ${mib(p.daemonPrivateKiB)} | ${kib(p.holdersKiB)} | ${
        kib(p.monitorsKiB)
      } | ${mib(p.daemonKiB + p.holdersKiB + p.monitorsKiB)} |`;
    const lines = [
      "# runC sandboxer memory (PSS)",
      "",
      `Run ${
        new Date().toISOString()
      } (${Deno.build.arch}, ${navigator.hardwareConcurrency} CPUs). One daemon (single-file bundle,`,
      "as deployed); pods added in steps, each with one busybox `sleep` container started through",
      "the Task API. Each point",
      "is taken once the daemon's idle reclaim (GC + malloc_trim, twice) has run: the median of",
      "5 samples of its PSS, plus the sum of the PSS of the namespace holders and container",
      "monitors. The marginal figures are least-squares slopes over all points; the daemon's",
      "growth in them is its private memory (its PSS also moves with how many other processes",
      "share the deno executable's pages, e.g. a test run beside it).",
      "",
      `Idle daemon: ${mib(r.idleDaemonKiB)}.`,
      "",
      "| pods | daemon PSS | daemon private | holders PSS (sum) | monitors PSS (sum) | total PSS |",
      "|---:|---:|---:|---:|---:|---:|",
      ...r.points.map(row),
      "",
      `Marginal PSS per sandbox (daemon growth + holder): **${
        pm(r.marginalSandboxOnlyKiB)
      }**, at most ${
        kib(r.marginalSandboxOnlyKiB.slope + 2 * r.marginalSandboxOnlyKiB.se)
      } (slope + 2 standard errors; target ≤ 512 KiB); the daemon's share ${
        pm(r.marginalDaemonKiB)
      }.`,
      `Marginal PSS per pod with its container's monitor: **${pm(r.marginalKiB)}**.`,
      "(± one standard error of the slope. What a pod adds to the daemon is less than its heap",
      "moves between samples, so the daemon's share cannot be told apart from zero.)",
      "",
      "The shim model's cost per pod (containerd-shim-runc-v2 + pause) needs containerd: it is",
      "measured beside this sandboxer in `cri.md` (`deno task bench cri`).",
      "",
    ];
    await writeReport("runc-memory.md", lines);
  },
  cri: async () => {
    const counts = [10, 25, 50, 75, 100];
    const results = await criBench({ serialN: 50, parallelN: 50, memoryCounts: counts });
    await criReport({
      file: "cri",
      title: "containerd's shim model vs the runC sandboxer",
      setup: [
        `one \`sleep\` container per pod. Handler \`runc\`: containerd-shim-runc-v2`,
        `and a pause container per pod. Handler \`${
          results[1].handler
        }\`: one sandboxer daemon (single-file bundle) for`,
        "all pods, a namespace holder and a container monitor (kuasar-helper) per pod, one task relay.",
      ],
      names: ["runc (shim model)", "kuasar-runc"],
      memoryNames: ["shims + pause", "sandboxer + helpers"],
      counts,
      results,
    });
  },
  scale: async () => {
    const top = Number(Deno.env.get("KUASAR_BENCH_SCALE_PODS") ?? 1000);
    const counts = [10, 100, 500, 1000].filter((n) => n < top).concat(top);
    const entry = await bundleSandboxer();
    const r = await onTmpfs(() => scaleBench(counts, entry));
    const ms = (x: number) => `${x < 10 ? x.toFixed(1) : Math.round(x)} ms`;
    const p50 = (xs: number[]) => percentileOf(xs, 50);
    const first = r.points[0], last = r.points[r.points.length - 1];
    const rec = r.recovery;
    const lines = [
      `# One runC sandboxer with ${top} pods`,
      "",
      `Run ${
        new Date().toISOString()
      } (${Deno.build.arch}, ${navigator.hardwareConcurrency} CPUs). One daemon (single-file`,
      "bundle, state on tmpfs as under /run); pods started one after the other, each with one busybox",
      "`sleep` container through the Task API (Controller Create + Start, Task Create + Start), after",
      `a warm-up of ${WARMUP_PODS} pods started and removed. At each count: the start latency of`,
      "the last 10 pods that reached it, by phase; 5 bare `runc run",
      "--detach` of the same container (own overlay rootfs, no sandboxer) beside them; PSS once the daemon's idle",
      "reclaim has run (helpers: namespace holders, container monitors, the task relay), and",
      "Controller.Status and Task.State (on an open connection) over 20 of the pods. Kernel mounts:",
      "the kernel's mount objects of every namespace (slab `mnt_cache`), which a process holding a",
      "mount namespace pins.",
      "",
      "| pods | pod start p50 | p90 | of which: pod | container | bare `runc run -d` | daemon PSS | helpers PSS | kernel mounts | Status p50 | State p50 |",
      "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
      ...r.points.map((p) =>
        `| ${p.pods} | ${ms(p50(p.startMs))} | ${ms(percentileOf(p.startMs, 90))} | ${
          ms(p50(p.podMs))
        } | ${ms(p50(p.containerMs))} | ${ms(p50(p.bareRuncMs))} | ${mib(p.daemonKiB)} | ${
          mib(p.helpersKiB)
        } | ${mib(p.kernelMountsKiB)} | ${ms(p50(p.statusMs))} | ${ms(p50(p.stateMs))} |`
      ),
      "",
      `Pod start p50 at ${last.pods} pods / at ${first.pods}: **${
        (p50(last.startMs) / p50(first.startMs)).toFixed(2)
      }×** (the pod alone ${(p50(last.podMs) / p50(first.podMs)).toFixed(2)}×, the container ${
        (p50(last.containerMs) / p50(first.containerMs)).toFixed(2)
      }×; a bare \`runc run -d\` beside them ${
        (p50(last.bareRuncMs) / p50(first.bareRuncMs)).toFixed(2)
      }×). Memory per added pod (${first.pods} → ${last.pods}): daemon ${
        kib((last.daemonKiB - first.daemonKiB) / (last.pods - first.pods))
      }, helpers ${kib((last.helpersKiB - first.helpersKiB) / (last.pods - first.pods))}.`,
      "",
      `SIGKILL of the daemon with ${rec.pods} pods, then a new one: listening after ${
        ms(rec.listenMs)
      }, recovery logged as finished after **${ms(rec.recoveredMs)}** (its own figure: ${
        ms(rec.loggedMs)
      }); afterwards ${rec.ready} of ${rec.pods} pods READY and ${rec.running} containers RUNNING.`,
      "",
      `Teardown (Stop + Shutdown of every pod, 8 at a time): ${
        (r.teardownMs / 1000).toFixed(1)
      } s.`,
      "",
    ];
    await writeReport("scale.md", lines);
  },
  floor: async () => {
    const n = Number(Deno.env.get("KUASAR_BENCH_FLOOR_PODS") ?? 20);
    await bundleSandboxer();
    const r = await floorBench(n);
    const [shim, ours, floor] = ["runc", "kuasar-runc", "kuasar-floor"].map((h) => r[h]);
    const p50 = (xs: Phases[], k: keyof Phases) => percentileOf(xs.map((x) => x[k]), 50);
    const ms = (x: number) => `${Math.round(x)} ms`;
    const phases: [keyof Phases, string][] = [
      ["runp", "RunPodSandbox (`crictl runp`)"],
      ["create", "CreateContainer"],
      ["start", "StartContainer"],
      ["total", "**pod start**"],
    ];
    const lines = [
      "# runC pod start above its floor",
      "",
      `Run ${
        new Date().toISOString()
      } on one containerd 2.4.2 (${Deno.build.arch}, ${navigator.hardwareConcurrency} CPUs);`,
      `${n} pods per handler, alternating, after a warm-up of each; pods are left running. Each`,
      "call timed on its own (crictl runp, create, start of a busybox `sleep`). Handlers: `runc`",
      "(containerd-shim-runc-v2 and a pause container), `kuasar-runc` (the runC sandboxer, single-file",
      "bundle), and `kuasar-floor`: the same sandboxer daemon (gRPC Controller, task relay, ttrpc Task",
      "API, records, events) with a kind whose pods and containers start at once",
      "(`scripts/bench/floor_sandboxer.ts`, the unit tests' in-memory fakes). What the floor takes is",
      "containerd, CRI, CNI and the protocols; what kuasar-runc takes above it is the runC kind's own",
      "work (namespace holder, runc create and start, rootfs mounts, monitor).",
      "",
      "| p50 | runc (shim model) | kuasar-runc | floor | kuasar-runc − floor |",
      "|---|---:|---:|---:|---:|",
      ...phases.map(([k, name]) =>
        `| ${name} | ${ms(p50(shim, k))} | ${ms(p50(ours, k))} | ${ms(p50(floor, k))} | ${
          ms(p50(ours, k) - p50(floor, k))
        } |`
      ),
      "",
      `Pod start, kuasar-runc / runc: ${(p50(ours, "total") / p50(shim, "total")).toFixed(2)}×; ` +
      `floor / runc: ${(p50(floor, "total") / p50(shim, "total")).toFixed(2)}×.`,
      "",
    ];
    await writeReport("floor.md", lines);
  },
  "wasm-cri": async () => {
    // Named, the section builds runwasi's shim if need be (once, 30-50 min); in a run of every
    // section only a shim already built is used.
    const why = wasmToolsUnavailable() ??
      (await runwasiShim({ build: Deno.args.includes("wasm-cri") }) ? undefined : (
        "runwasi's shim is not built here: `deno task bench wasm-cri` builds it with " +
        "`scripts/install_runwasi.sh` (cargo and crates.io)"
      ));
    if (why) {
      console.error(`[bench] wasm-cri not run: ${why}`);
      return;
    }
    const shim = (await runwasiShim({ build: false }))!;
    const modules = await buildWasmModules();
    const counts = [5, 20, 50];
    // Both of our engines, each in a run of its own beside runwasi: Wasmtime's (a thread per
    // running module, when libwasmtime is installed) and the embedded V8 one (modules many to a
    // carrier thread); KUASAR_BENCH_WASM_ENGINES=a,b picks some.
    const engines = Deno.env.get("KUASAR_BENCH_WASM_ENGINES")?.split(",") ??
      [...(wasmtimeUnavailable() ? [] : ["wasmtime"]), "embedded"];
    for (const engine of engines) {
      const results = await criBench({
        serialN: Number(Deno.env.get("KUASAR_BENCH_WASM_PODS") ?? 20),
        parallelN: 40,
        concurrency: 8,
        memoryCounts: counts,
        kind: "wasm",
        config: `[wasm]\nengine = "${engine}"\n`,
        peer: { handler: "wasmtime", dropIn: runwasiDropIn(shim) },
        // The image's module, sleeping: a running container that does nothing.
        container: { image: WASM_IMAGE, command: ["/app.wasm", "sleep", "100000"] },
      });
      await criReport({
        file: `wasm-cri-${engine}`,
        title: `runwasi's Wasmtime shim vs the Wasm sandboxer (${engine} engine)`,
        setup: [
          `one Wasm container per pod (\`${WASM_IMAGE}\`: the test echo module, ${
            (await Deno.stat(modules.echo)).size
          } bytes, as /app.wasm, run as \`/app.wasm sleep 100000\`).`,
          "Handler `wasmtime`: runwasi's containerd-shim-wasmtime-v1 (Wasmtime 36, built by",
          "`scripts/install_runwasi.sh` from `third_party/runwasi-wasmtime-shim`), one per pod,",
          "which also runs the pod's pause container. Handler `" + results[1].handler + "`: one",
          `sandboxer daemon (single-file bundle) for all pods, \`[wasm] engine = "${engine}"\``,
          engine === "wasmtime"
            ? "(Wasmtime 50's C API: each module on a thread of the Wasm host)."
            : "(V8 in the Wasm host: modules many to a carrier thread, suspended while they wait).",
          "Counted on both sides: everything that runs the pods (shims and what they start,",
          "modules included; or the daemon, its relay, helpers and Wasm host).",
        ],
        names: ["runwasi (wasmtime)", `kuasar-wasm (${engine})`],
        memoryNames: ["shims", "sandboxer + helpers"],
        counts,
        results,
      });
    }
  },
  "gvisor-cri": async () => {
    const counts = [5, 20, 50];
    const dir = await Deno.makeTempDir({ prefix: "kuasar-runsc-shim-" });
    try {
      const results = await criBench({
        serialN: Number(Deno.env.get("KUASAR_BENCH_GVISOR_PODS") ?? 20),
        parallelN: 20,
        memoryCounts: counts,
        kind: "gvisor",
        config: `[gvisor]\nbinary = ${JSON.stringify(RUNSC)}\nplatform = "ptrace"\n`,
        peer: { handler: "runsc", dropIn: await runscShimDropIn(dir) },
      });
      await criReport({
        file: "gvisor-cri",
        title: "gVisor's containerd shim vs the gVisor sandboxer",
        setup: [
          `${await runscVersion()} on ptrace (no KVM here), one busybox \`sleep\` container per pod.`,
          "Handler `runsc`: containerd-shim-runsc-v1 (gVisor's shim, same gVisor build), one per pod,",
          `its pause container inside the sandbox. Handler \`${
            results[1].handler
          }\`: one sandboxer daemon`,
          "(single-file bundle) for all pods, a container monitor (kuasar-helper) per container, one task",
          "relay. Not counted on either side: the sandbox's kernel (runsc-sandbox, runsc-gofer) and the",
          "workload; counted: a shim and everything it starts (its `runsc wait`s), or the daemon,",
          "relay, helpers and everything they start.",
        ],
        names: ["containerd-shim-runsc-v1", "kuasar-gvisor"],
        memoryNames: ["shims", "sandboxer + helpers"],
        counts,
        results,
      });
    } finally {
      // The shim's runsc root keeps its null-netns mounts (one per namespace dir, stacked).
      await unmountAll(dir);
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
};

if (Deno.uid() !== 0) {
  console.error("the benchmarks run real sandboxes: run them as root");
  Deno.exit(2);
}
const wanted = Deno.args.length ? Deno.args : Object.keys(sections);
for (const name of wanted) {
  const run = sections[name];
  if (!run) {
    console.error(`unknown section "${name}"; sections: ${Object.keys(sections).join(", ")}`);
    Deno.exit(2);
  }
  await run();
}
