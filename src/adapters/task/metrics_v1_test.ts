import assert from "node:assert/strict";
import * as v1 from "../../gen/cgroups/cgroup1/stats/metrics.ts";
import * as v2 from "../../gen/cgroups/cgroup2/stats/metrics.ts";
import { asV1Metrics, V1_METRICS, V2_METRICS } from "./metrics_v1.ts";

const sample = v2.Metrics.fromPartial({
  pids: { current: 3n, limit: 100n },
  cpu: {
    usageUsec: 1500n,
    userUsec: 1000n,
    systemUsec: 500n,
    nrPeriods: 7n,
    nrThrottled: 2n,
    throttledUsec: 40n,
  },
  memory: {
    anon: 4096n,
    file: 8192n,
    anonThp: 0n,
    fileMapped: 1024n,
    kernelStack: 16384n,
    slab: 32768n,
    pgfault: 11n,
    pgmajfault: 1n,
    inactiveFile: 2048n,
    usage: 65536n,
    usageLimit: 1048576n,
    swapUsage: 0n,
    swapLimit: 2097152n,
    maxUsage: 70000n,
  },
  memoryEvents: { oomKill: 1n },
  io: { usage: [{ major: 8n, minor: 0n, rbytes: 512n, wbytes: 1024n, rios: 1n, wios: 2n }] },
  hugetlb: [{ current: 0n, max: 0n, pagesize: "2MB", failcnt: 0n }],
});

Deno.test("Task v2 stats: cgroup v2 metrics read as v1, the same quantities in v1's units", () => {
  const any = { typeUrl: V2_METRICS, value: v2.Metrics.encode(sample).finish() };
  const out = asV1Metrics(any);
  assert.equal(out.typeUrl, V1_METRICS);
  const m = v1.Metrics.decode(out.value);
  assert.deepEqual(m.pids, { current: 3n, limit: 100n });
  // v2 counts microseconds, v1 nanoseconds.
  assert.deepEqual(m.cpu?.usage, {
    total: 1_500_000n,
    user: 1_000_000n,
    kernel: 500_000n,
    perCpu: [],
  });
  assert.deepEqual(m.cpu?.throttling, {
    periods: 7n,
    throttledPeriods: 2n,
    throttledTime: 40_000n,
  });
  // What iSulad's lib-shim-v2 copies: usage, limit, rss, faults, kernel, inactive file, swap.
  assert.deepEqual(m.memory?.usage, { usage: 65536n, limit: 1048576n, max: 70000n, failcnt: 0n });
  assert.equal(m.memory?.rss, 4096n);
  assert.equal(m.memory?.cache, 8192n);
  assert.equal(m.memory?.totalInactiveFile, 2048n);
  assert.equal(m.memory?.pgFault, 11n);
  assert.equal(m.memory?.pgMajFault, 1n);
  assert.equal(m.memory?.kernel?.usage, 16384n + 32768n);
  assert.deepEqual(m.memory?.swap, { usage: 0n, limit: 2097152n, max: 0n, failcnt: 0n });
  assert.equal(m.memoryOomControl?.oomKill, 1n);
  assert.deepEqual(
    m.blkio?.ioServiceBytesRecursive.map((e) => [e.op, e.major, e.value]),
    [["Read", 8n, 512n], ["Write", 8n, 1024n]],
  );
  assert.deepEqual(m.hugetlb.map((h) => h.pagesize), ["2MB"]);
});

Deno.test("Task v2 stats: v1 metrics and other payloads pass unchanged", () => {
  const any = { typeUrl: V1_METRICS, value: new Uint8Array([0x12, 0x00]) };
  assert.equal(asV1Metrics(any), any);
  const other = { typeUrl: "fake.Stats", value: new Uint8Array([1]) };
  assert.equal(asV1Metrics(other), other);
});

Deno.test("Task v2 stats: why — v2 bytes decoded as v1 (what lib-shim-v2 does) give no usable numbers", () => {
  const wrong = v1.Metrics.decode(v2.Metrics.encode(sample).finish());
  assert.notEqual(wrong.memory?.usage?.usage, 65536n);
  assert.notEqual(wrong.cpu?.usage?.total, 1_500_000n);
});
