// `deno task bench [section…]`: the benchmarks the issues name, each printed
// as a markdown table with medians and, where a baseline exists, ratios
// measured in the same run. Never part of the test suite (no timing asserts).
//
// Sections: runc-memory, cri, wasm, gvisor, vmm.
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { criBench, summary } from "./bench/cri.ts";
import { gvisorBench, runscVersion } from "./bench/gvisor.ts";
import { vmmBench, type VmStart } from "./bench/vmm.ts";
import { type MemoryPoint, runcMemory, type Slope } from "./bench/runc_memory.ts";
import {
  engineBench,
  type EngineResult,
  stats,
  wasmtimeCli,
  wasmtimeRunBaseline,
} from "./bench/wasm.ts";
import { wasmtimeUnavailable } from "../tests/support/wasm.ts";
import { barChart, lineChart } from "./bench/svg.ts";

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

const sections: Record<string, () => Promise<void>> = {
  vmm: async () => {
    const n = Number(Deno.env.get("KUASAR_BENCH_VMM_PODS") ?? 10);
    // The same image and VM size three ways, one after the other in this run.
    const cold = await vmmBench(n, "virtiofs", true);
    const disks = await vmmBench(n, "disks", false);
    const tpl = await vmmBench(n, "template", false);
    const ms = (x: number) => (Number.isFinite(x) ? `${Math.round(x)} ms` : "—");
    const p50 = (xs: number[]) => percentileOf(xs, 50);
    const cells = (f: (o: VmStart) => number) =>
      [cold, disks, tpl].map((r) => {
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
      "saved once its agent was ready, its RAM file mapped copy-on-write).",
      "",
      "Phases, as containerd drives them: Controller Create + Start (Start returns once the agent",
      "is set up), then Task.Create + Task.Start of a first container (busybox `sleep`, an",
      "overlay rootfs, crun in the guest). Inside the Start: the VMM up (QMP answers after the",
      "spawn; for a template, the restore of its saved state), agent ready (Start's own timing:",
      "for a template, reseeded, clock set, hostname and NICs given). Bare: the same kernel and",
      "initramfs with busybox as init powering off at once (`rdinit=/bin/busybox -- poweroff",
      "-f`), from spawn to QEMU's exit.",
      "",
      "| p50 / p90 | booted, virtiofs | booted, disks | template |",
      "|---|---:|---:|---:|",
      `| VMM up (spawn, or restore) | ${cells((o) => o.vmm)} |`,
      `| kernel boot (guest uptime at /init) | ${cells((o) => o.guestInit)} |`,
      `| agent ready (from spawn) | ${cells((o) => o.agentReady)} |`,
      `| Controller Create + Start | ${cells((o) => o.pod)} |`,
      `| first container: Task.Create + Task.Start | ${cells((o) => o.container)} |`,
      `| **Controller Create → first container running** | ${cells((o) => o.total)} |`,
      `| QEMU PSS per idle pod (${n} running) | ${
        [cold, disks, tpl].map((r) => mib(r.perPodQemuKiB)).join(" | ")
      } |`,
      `| host PSS per pod besides QEMU | ${
        [cold, disks, tpl].map((r) => mib(r.perPodHostKiB)).join(" | ")
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
      `The template: built once in ${ms(tpl.template?.bootMs ?? NaN)} (boot to agent ready) + ` +
      `${ms(tpl.template?.saveMs ?? NaN)} (save); its device state ${
        Math.round((tpl.template?.stateBytes ?? 0) / 1024)
      } KiB, its RAM a 512 MiB file the clones map.`,
      "",
    ];
    const md = lines.join("\n");
    console.log("\n" + md);
    await Deno.mkdir(DOCS, { recursive: true });
    await Deno.writeTextFile(join(DOCS, "vmm.md"), md);
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
    const md = lines.join("\n");
    console.log("\n" + md);
    await Deno.mkdir(DOCS, { recursive: true });
    await Deno.writeTextFile(join(DOCS, "gvisor.md"), md);
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
      return rs;
    });
    const base = results.find((r) => r.name.startsWith("wasmtime run"));
    const ms = (x: number) => `${x.toFixed(2)} ms`;
    const lines = [
      `# Wasm task throughput`,
      "",
      `Run ${
        new Date().toISOString()
      } (${Deno.build.arch}, ${navigator.hardwareConcurrency} CPUs).`,
      `${n} tasks of a hello module (WAT, writes one line), each Task.Create → Start → Wait → Delete`,
      `through the Task API (ttrpc) of one Wasm pod; serially, then ${c} clients at a time.`,
      `The baseline runs \`wasmtime run hello.wasm\` as a process per task. Idle PSS: ${idle}`,
      "modules blocked reading stdin, the host's PSS growth (or the processes' PSS) per module.",
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
      ...(base
        ? results.filter((r) => r !== base).map((r) =>
          `${r.name}: ${
            (stats(r.parallel).tasksPerSec / stats(base.parallel).tasksPerSec).toFixed(1)
          }× ` +
          `the baseline's tasks/s at 8 at a time, ${
            (r.idleModuleKiB / base.idleModuleKiB * 100).toFixed(0)
          }% of its idle PSS.`
        )
        : []),
      "",
      `Target (issue 4): ≥ 500 tasks/s at 8 at a time for the embedded engine (runwasi publishes ≈330`,
      `tasks/s for its Wasmtime shim).`,
      ...(notes.length ? ["", ...notes] : []),
      "",
    ];
    const md = lines.join("\n");
    console.log("\n" + md);
    await Deno.mkdir(DOCS, { recursive: true });
    await Deno.writeTextFile(join(DOCS, "wasm.md"), md);
  },
  "runc-memory": async () => {
    const r = await runcMemory();
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
      } (${Deno.build.arch}, ${navigator.hardwareConcurrency} CPUs). One daemon; pods added`,
      "in steps, each with one busybox `sleep` container started through the Task API. Each point",
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
    const md = lines.join("\n");
    console.log("\n" + md);
    await Deno.mkdir(DOCS, { recursive: true });
    await Deno.writeTextFile(join(DOCS, "runc-memory.md"), md);
  },
  cri: async () => {
    const counts = [10, 50, 100];
    const [shim, ours] = await criBench({ serialN: 50, parallelN: 50, memoryCounts: counts });
    const a = summary(shim), b = summary(ours);
    const ms = (x: number) => `${Math.round(x)} ms`;
    const lines = [
      `# 1:N benchmark: containerd's shim model vs the runC sandboxer`,
      "",
      `Run ${
        new Date().toISOString()
      } on one containerd 2.4.2 (${Deno.build.arch}, ${navigator.hardwareConcurrency} CPUs),`,
      `one \`sleep\` container per pod, pods started with \`crictl run\`. Handler \`runc\`: containerd-shim-runc-v2`,
      `and a pause container per pod. Handler \`${ours.handler}\`: one sandboxer daemon (single-file bundle) for`,
      "all pods, a namespace holder and a container monitor (kuasar-helper) per pod, one task relay.",
      "",
      "## Pod start",
      "",
      "| | runc (shim model) | kuasar-runc | ratio |",
      "|---|---:|---:|---:|",
      `| serial p50 (N = ${shim.serialMs.length}) | ${ms(a.p50)} | ${ms(b.p50)} | ${
        (b.p50 / a.p50).toFixed(2)
      }× |`,
      `| serial p90 | ${ms(a.p90)} | ${ms(b.p90)} | ${(b.p90 / a.p90).toFixed(2)}× |`,
      `| serial p99 | ${ms(a.p99)} | ${ms(b.p99)} | ${(b.p99 / a.p99).toFixed(2)}× |`,
      `| parallel, wall time for 50 | ${ms(a.parallel)} | ${ms(b.parallel)} | ${
        (b.parallel / a.parallel).toFixed(2)
      }× |`,
      "",
      "## Management memory (PSS)",
      "",
      "| pods | shims + pause | sandboxer + helpers | ratio |",
      "|---:|---:|---:|---:|",
      ...counts.map((n) =>
        `| ${n} | ${mib(shim.memoryKiB[n])} | ${mib(ours.memoryKiB[n])} | ${
          (100 * ours.memoryKiB[n] / shim.memoryKiB[n]).toFixed(1)
        }% |`
      ),
      "",
      `Per pod, from ${counts[0]} to ${counts[counts.length - 1]} pods: shim model ${
        kib(
          (shim.memoryKiB[counts[counts.length - 1]] - shim.memoryKiB[counts[0]]) /
            (counts[counts.length - 1] - counts[0]),
        )
      }, sandboxer ${
        kib(
          (ours.memoryKiB[counts[counts.length - 1]] - ours.memoryKiB[counts[0]]) /
            (counts[counts.length - 1] - counts[0]),
        )
      }.`,
      "",
      "![memory](cri-memory.svg) ![start](cri-startup.svg)",
      "",
    ];
    const md = lines.join("\n");
    console.log("\n" + md);
    await Deno.mkdir(DOCS, { recursive: true });
    await Deno.writeTextFile(join(DOCS, "cri.md"), md);
    await Deno.writeTextFile(
      join(DOCS, "cri-memory.svg"),
      lineChart({
        title: "Management memory (PSS) by pod count",
        xLabel: "pods",
        yLabel: "MiB",
        series: [
          { name: "runc: shims + pause", points: counts.map((n) => [n, shim.memoryKiB[n] / 1024]) },
          {
            name: "kuasar-runc: sandboxer + helpers",
            points: counts.map((n) => [n, ours.memoryKiB[n] / 1024]),
          },
        ],
      }),
    );
    await Deno.writeTextFile(
      join(DOCS, "cri-startup.svg"),
      barChart({
        title: "Pod start through crictl run",
        yLabel: "ms",
        categories: ["serial p50", "serial p90", "serial p99", "parallel 50 / 10"],
        series: [
          { name: "runc (shim model)", values: [a.p50, a.p90, a.p99, a.parallel / 10] },
          { name: "kuasar-runc", values: [b.p50, b.p90, b.p99, b.parallel / 10] },
        ],
      }),
    );
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
