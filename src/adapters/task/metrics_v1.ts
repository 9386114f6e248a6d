/**
 * Task.Stats for clients of the Task API v2 that read only cgroup v1
 * metrics. iSulad's lib-shim-v2 decodes every Stats payload as
 * `io.containerd.cgroups.v1.Metrics` whatever its type URL, so the v2 message
 * of a cgroup v2 host or a VM guest reads there as garbage. The v2 service
 * answers v1 metrics, converted from v2 where the source is v2. containerd 2.0
 * and 1.7, the other v2 clients, read both kinds. containerd ≥ 2.1 speaks
 * v3, which keeps the original.
 *
 * @module
 */
import * as v1 from "../../gen/cgroups/cgroup1/stats/metrics.ts";
import * as v2 from "../../gen/cgroups/cgroup2/stats/metrics.ts";
import type { StoredAnyBytes } from "../../ports/container_runtime.ts";

export const V1_METRICS = "io.containerd.cgroups.v1.Metrics";
export const V2_METRICS = "io.containerd.cgroups.v2.Metrics";

/** `any` as v1 metrics: unchanged when it is not v2. */
export function asV1Metrics(any: StoredAnyBytes): StoredAnyBytes {
  if (any.typeUrl !== V2_METRICS) return any;
  const m = v1FromV2(v2.Metrics.decode(any.value));
  return { typeUrl: V1_METRICS, value: v1.Metrics.encode(m).finish() };
}

const US = 1000n;

/** The cgroup v1 reading of cgroup v2 statistics (the same quantities under v1's names). */
export function v1FromV2(m: v2.Metrics): v1.Metrics {
  const out = v1.Metrics.fromPartial({});
  if (m.pids) out.pids = { current: m.pids.current, limit: m.pids.limit };
  if (m.cpu) {
    out.cpu = {
      usage: {
        total: m.cpu.usageUsec * US,
        user: m.cpu.userUsec * US,
        kernel: m.cpu.systemUsec * US,
        perCpu: [],
      },
      throttling: {
        periods: m.cpu.nrPeriods,
        throttledPeriods: m.cpu.nrThrottled,
        throttledTime: m.cpu.throttledUsec * US,
      },
    };
  }
  const mem = m.memory;
  if (mem) {
    // v2's counters are hierarchical already: v1's own and total_* are the same numbers.
    const same = {
      cache: mem.file,
      rss: mem.anon,
      rssHuge: mem.anonThp,
      mappedFile: mem.fileMapped,
      dirty: mem.fileDirty,
      writeback: mem.fileWriteback,
      pgFault: mem.pgfault,
      pgMajFault: mem.pgmajfault,
      inactiveAnon: mem.inactiveAnon,
      activeAnon: mem.activeAnon,
      inactiveFile: mem.inactiveFile,
      activeFile: mem.activeFile,
      unevictable: mem.unevictable,
    };
    out.memory = v1.MemoryStat.fromPartial({
      ...same,
      totalCache: same.cache,
      totalRss: same.rss,
      totalRssHuge: same.rssHuge,
      totalMappedFile: same.mappedFile,
      totalDirty: same.dirty,
      totalWriteback: same.writeback,
      totalPgFault: same.pgFault,
      totalPgMajFault: same.pgMajFault,
      totalInactiveAnon: same.inactiveAnon,
      totalActiveAnon: same.activeAnon,
      totalInactiveFile: same.inactiveFile,
      totalActiveFile: same.activeFile,
      totalUnevictable: same.unevictable,
      hierarchicalMemoryLimit: mem.usageLimit,
      hierarchicalSwapLimit: mem.swapLimit,
      usage: { usage: mem.usage, limit: mem.usageLimit, max: mem.maxUsage, failcnt: 0n },
      swap: { usage: mem.swapUsage, limit: mem.swapLimit, max: mem.swapMaxUsage, failcnt: 0n },
      kernel: { usage: mem.kernelStack + mem.slab, limit: 0n, max: 0n, failcnt: 0n },
    });
    if (m.memoryEvents) {
      out.memoryOomControl = { oomKillDisable: 0n, underOom: 0n, oomKill: m.memoryEvents.oomKill };
    }
  }
  if (m.io) {
    const entry = (op: string, e: v2.IOEntry, value: bigint) => ({
      op,
      device: "",
      major: e.major,
      minor: e.minor,
      value,
    });
    // cgroup v1's blkio files name the operations "Read" and "Write".
    out.blkio = v1.BlkIOStat.fromPartial({
      ioServiceBytesRecursive: m.io.usage.flatMap((e) => [
        entry("Read", e, e.rbytes),
        entry("Write", e, e.wbytes),
      ]),
      ioServicedRecursive: m.io.usage.flatMap((e) => [
        entry("Read", e, e.rios),
        entry("Write", e, e.wios),
      ]),
    });
  }
  out.hugetlb = m.hugetlb.map((h) => ({
    usage: h.current,
    max: h.max,
    failcnt: h.failcnt,
    pagesize: h.pagesize,
  }));
  return out;
}
