// `deno task bench [section…]`: the benchmarks the issues name, each printed
// as a markdown table with medians and, where a baseline exists, ratios
// measured in the same run. Never part of the test suite (no timing asserts).
//
// Sections: runc-memory.
import { runcMemory } from "./bench/runc_memory.ts";

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
