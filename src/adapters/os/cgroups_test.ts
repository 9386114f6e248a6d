import assert from "node:assert/strict";
import * as v1 from "../../gen/cgroups/cgroup1/stats/metrics.ts";
import * as v2 from "../../gen/cgroups/cgroup2/stats/metrics.ts";
import { join } from "node:path";
import {
  CGROUP_V2_MAX,
  isUnified,
  leastCpuWeight,
  makeCgroup,
  metricsV2,
  oomKills,
  removeCgroup,
  summedCgroupMetrics,
} from "./cgroups.ts";
import { OomWatcher } from "./oom_watcher.ts";

Deno.test("summedCgroupMetrics of no cgroup is an empty, decodable Metrics", async () => {
  const m = await summedCgroupMetrics([]);
  assert.match(m.typeUrl, /^io\.containerd\.cgroups\.v[12]\.Metrics$/);
  if (!isUnified()) assert.deepEqual(v1.Metrics.decode(m.value).cpu, undefined);
});

Deno.test({
  name: "summedCgroupMetrics adds counters of two cgroups and keeps the largest limit",
  ignore: isUnified() || Deno.uid() !== 0,
  async fn() {
    // The daemon's own cgroup twice: every counter doubles, limits stay.
    const self = await Deno.readTextFile("/proc/self/cgroup");
    const mem = /:memory:(.*)$/m.exec(self)?.[1] ?? "/";
    const cpu = /:cpu,cpuacct:(.*)$|:cpuacct:(.*)$/m.exec(self);
    const paths = { memory: mem, cpuacct: cpu?.[1] ?? cpu?.[2] ?? "/" };
    const one = v1.Metrics.decode((await summedCgroupMetrics([paths])).value);
    const two = v1.Metrics.decode((await summedCgroupMetrics([paths, paths])).value);
    assert.ok(one.memory && two.memory);
    assert.ok(two.memory.usage!.usage >= one.memory.usage!.usage);
    assert.equal(two.memory.usage!.limit, one.memory.usage!.limit);
    assert.ok(two.cpu!.usage!.total >= 2n * one.cpu!.usage!.total - 10_000_000n);
  },
});

/** A cgroup v2 directory as the kernel shows it, in a temporary tree. */
async function v2Fixture(files: Record<string, string>): Promise<string> {
  const root = await Deno.makeTempDir({ prefix: "cg2-" });
  await Deno.mkdir(`${root}/pod/ctr`, { recursive: true });
  for (const [name, text] of Object.entries(files)) {
    await Deno.writeTextFile(`${root}/pod/ctr/${name}`, text);
  }
  return root;
}

Deno.test("cgroup v2 statistics are read as containerd's v2 Metrics (fixture tree)", async () => {
  const root = await v2Fixture({
    "pids.current": "3\n",
    "pids.max": "max\n",
    "cpu.stat": "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 0\n",
    "memory.current": "4194304\n",
    "memory.max": "67108864\n",
    "memory.swap.max": "max\n",
    "memory.stat": "anon 1048576\nfile 2097152\nkernel_stack 16384\npgfault 42\n",
    "memory.events": "low 0\nhigh 0\nmax 7\noom 2\noom_kill 1\n",
    "io.stat": "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
  });
  try {
    const m = await metricsV2("/pod/ctr", root);
    assert.deepEqual(m.pids, { current: 3n, limit: CGROUP_V2_MAX });
    assert.equal(m.cpu?.usageUsec, 1500n);
    assert.equal(m.cpu?.systemUsec, 500n);
    assert.equal(m.memory?.usage, 4194304n);
    assert.equal(m.memory?.usageLimit, 67108864n);
    // No limit: the largest u64, as containerd reads it (not 0, a limit of nothing).
    assert.equal(m.memory?.swapLimit, CGROUP_V2_MAX);
    assert.equal(m.memory?.anon, 1048576n);
    assert.equal(m.memory?.file, 2097152n);
    assert.equal(m.memory?.pgfault, 42n);
    assert.equal(m.memoryEvents?.oomKill, 1n);
    assert.equal(m.memoryEvents?.max, 7n);
    assert.deepEqual(m.io?.usage, [{
      major: 8n,
      minor: 0n,
      rbytes: 4096n,
      wbytes: 8192n,
      rios: 1n,
      wios: 2n,
    }]);
    // Round trip through the wire format containerd decodes.
    assert.deepEqual(v2.Metrics.decode(v2.Metrics.encode(m).finish()).memory?.usage, 4194304n);
    assert.equal(await oomKills({ "": "/pod/ctr" }, { root, unified: true }), 1n);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("OOM watcher (v2 path): each new oom_kill is reported once, per watch of the file", async () => {
  const root = await v2Fixture({ "memory.events": "oom 0\noom_kill 0\n" });
  const watcher = new OomWatcher({ root, unified: true });
  const seen: string[] = [];
  const events = `${root}/pod/ctr/memory.events`;
  const settle = () => new Promise((r) => setTimeout(r, 150));
  const until = async (n: number) => {
    for (let i = 0; i < 100 && seen.length < n; i++) await new Promise((r) => setTimeout(r, 20));
  };
  try {
    // Two containers in one cgroup (a shared cgroup path): the file is watched once for both.
    const paths = { "": "/pod/ctr" };
    watcher.watch("a", paths, () => seen.push("a"));
    watcher.watch("b", paths, () => seen.push("b"));
    await Deno.writeTextFile(events, "high 1\noom 1\noom_kill 1\n");
    await until(2);
    assert.deepEqual(seen.sort(), ["a", "b"]);
    // A modification without a new kill (memory.high) reports nothing.
    await Deno.writeTextFile(events, "high 2\noom 1\noom_kill 1\n");
    await settle();
    assert.equal(seen.length, 2);
    // One of them goes: the other is still watched.
    watcher.unwatch("a");
    await Deno.writeTextFile(events, "high 2\noom 2\noom_kill 2\n");
    await until(3);
    assert.deepEqual(seen.slice(2), ["b"]);
    // finish: nothing new to report, and the watch is over.
    assert.equal(await watcher.finish("b"), true);
    assert.equal(await watcher.finish("b"), false, "no longer watched");
    await Deno.writeTextFile(events, "high 2\noom 3\noom_kill 3\n");
    await settle();
    assert.equal(seen.length, 3);
    // finish reports a kill no notification announced yet (e.g. at the init's exit).
    watcher.watch("c", paths, () => seen.push("c"), 3n);
    await Deno.writeTextFile(events, "high 2\noom 4\noom_kill 4\n");
    assert.equal(await watcher.finish("c"), true);
    await settle();
    assert.deepEqual(seen.slice(3), ["c"], "reported once");
  } finally {
    await watcher.close();
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test({
  name: "leastCpuWeight gives a cgroup the least CPU weight (v2 cpu.weight, v1 cpu.shares)",
  ignore: Deno.uid() !== 0,
  async fn() {
    const path = `/kuasar-test-cpu-weight/${crypto.randomUUID().slice(0, 8)}`;
    await makeCgroup(path);
    try {
      await leastCpuWeight(path);
      const file = isUnified()
        ? join("/sys/fs/cgroup", path, "cpu.weight")
        : join("/sys/fs/cgroup/cpu", path, "cpu.shares");
      assert.equal((await Deno.readTextFile(file)).trim(), isUnified() ? "1" : "2");
    } finally {
      await removeCgroup(path);
      await removeCgroup("/kuasar-test-cpu-weight");
    }
  },
});
