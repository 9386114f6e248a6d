import assert from "node:assert/strict";
import * as v1 from "../../gen/cgroups/cgroup1/stats/metrics.ts";
import { isUnified, summedCgroupMetrics } from "./cgroups.ts";

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
