/**
 * The real helper's start protocol: `hold` and `monitor` leave the daemon
 * (it keeps no child per pod), except under a daemon that is PID 1, which
 * would inherit them as orphans it does not wait for.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { installHelper } from "./helper_install.ts";
import { startHelper } from "./helper.ts";

const root = Deno.uid() === 0;

function parentOf(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
}

Deno.test("helper: a monitor leaves the daemon once started and names its own pid", async () => {
  const dir = await Deno.makeTempDir({ prefix: "helper-leave-" });
  try {
    const helper = await installHelper({ installDir: join(dir, "bin") });
    const h = await startHelper(helper, [
      "monitor",
      "--exit-file",
      join(dir, "exit"),
      "--log",
      join(dir, "log"),
      "--",
      "sleep",
      "30",
    ]);
    try {
      assert.notEqual(parentOf(h.helperPid), Deno.pid);
      assert.equal(parentOf(h.pid), h.helperPid);
      assert.match(Deno.readTextFileSync(`/proc/${h.helperPid}/cmdline`), /^[^\0]*\0monitor\0/);
    } finally {
      Deno.kill(h.pid, "SIGKILL");
    }
    // Not the daemon's child, yet its exit is known: the monitor writes the record.
    let record = "";
    for (let i = 0; i < 100 && !record; i++) {
      record = await Deno.readTextFile(join(dir, "exit")).catch(() => "");
      if (!record) await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(JSON.parse(record).status, 137);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "helper: under a daemon that is PID 1 helpers stay its children and leave no zombies",
  ignore: !root,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "helper-pid1-" });
    try {
      const helper = await installHelper({ installDir: join(dir, "bin") });
      const script = join(dir, "pid1.ts");
      const helperModule = new URL("./helper.ts", import.meta.url).href;
      await Deno.writeTextFile(
        script,
        `import { startHelper } from ${JSON.stringify(helperModule)};
for (let i = 0; i < 5; i++) {
  await startHelper(${JSON.stringify(helper)}, ["monitor", "--exit-file", ${
          JSON.stringify(dir)
        } + "/exit-" + i, "--", "true"]);
}
await new Promise((r) => setTimeout(r, 1500));
const zombies = [];
for (const e of Deno.readDirSync("/proc")) {
  if (!/^\\d+$/.test(e.name)) continue;
  const s = Deno.readTextFileSync("/proc/" + e.name + "/stat");
  if (s.slice(s.lastIndexOf(")") + 2).startsWith("Z")) zombies.push(s);
}
console.log(JSON.stringify({ pid: Deno.pid, zombies }));
`,
      );
      const out = await new Deno.Command("unshare", {
        args: [
          "--fork",
          "--pid",
          "--mount-proc",
          Deno.execPath(),
          "run",
          "-A",
          "--config",
          fileURLToPath(new URL("../../../deno.json", import.meta.url)),
          script,
        ],
      }).output();
      const text = new TextDecoder().decode(out.stdout);
      assert.ok(out.success, new TextDecoder().decode(out.stderr));
      // Five monitors whose command (`true`) ended at once: all reaped, by the daemon (PID 1).
      assert.deepEqual(JSON.parse(text), { pid: 1, zombies: [] });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("helper: a start that times out ends the monitor and the runtime it waits for", async () => {
  const dir = await Deno.makeTempDir({ prefix: "helper-timeout-" });
  try {
    const helper = await installHelper({ installDir: join(dir, "bin") });
    const mark = `29.${Math.floor(Math.random() * 1e9)}`;
    // A runtime that never writes the pid file: a hung `runc create`.
    await assert.rejects(
      startHelper(helper, [
        "monitor",
        "--exit-file",
        join(dir, "exit"),
        "--pid-file",
        join(dir, "never.pid"),
        "--",
        "sleep",
        mark,
      ], 1000),
      /did not start/,
    );
    const left: string[] = [];
    for (let i = 0; i < 20; i++) {
      left.length = 0;
      for (const e of Deno.readDirSync("/proc")) {
        if (!/^\d+$/.test(e.name)) continue;
        const cmd = await Deno.readTextFile(`/proc/${e.name}/cmdline`).catch(() => "");
        if (cmd.includes(mark)) left.push(e.name);
      }
      if (!left.length) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.deepEqual(left, []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
