// `deno task bench [section…]`: the benchmarks the issues name, each printed
// as a markdown table with medians and, where a baseline exists, ratios
// measured in the same run. Never part of the test suite (no timing asserts).
//
// Sections: runc-memory, cri.
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { criBench, summary } from "./bench/cri.ts";
import { runcMemory } from "./bench/runc_memory.ts";
import { barChart, lineChart } from "./bench/svg.ts";

const DOCS = fileURLToPath(new URL("../docs/benchmarks/", import.meta.url));

const kib = (x: number) => `${Math.round(x)} KiB`;
const mib = (x: number) => `${(x / 1024).toFixed(1)} MiB`;

const sections: Record<string, () => Promise<void>> = {
  "runc-memory": async () => {
    const r = await runcMemory([10, 50]);
    console.log("\n## runC sandboxer memory (PSS), one `sleep` container per pod\n");
    console.log(`idle daemon: ${mib(r.idleDaemonKiB)}\n`);
    console.log("| pods | daemon | holders (sum) | monitors (sum) | total |");
    console.log("|---:|---:|---:|---:|---:|");
    for (const p of r.points) {
      console.log(
        `| ${p.pods} | ${mib(p.daemonKiB)} | ${kib(p.holdersKiB)} | ${kib(p.monitorsKiB)} | ${
          mib(p.daemonKiB + p.holdersKiB + p.monitorsKiB)
        } |`,
      );
    }
    console.log(
      `\nmarginal PSS per sandbox (daemon growth + holder): **${
        kib(r.marginalSandboxOnlyKiB)
      }** (target ≤ 512 KiB)`,
    );
    console.log(`marginal PSS per pod with its container monitor: **${kib(r.marginalKiB)}**`);
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
