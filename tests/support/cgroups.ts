/**
 * Reading what a sandboxer did to cgroups: the Metrics it reports, decoded as
 * containerd decodes them, and the limits it wrote, read back from the
 * hierarchy (v1 here, v2 elsewhere).
 *
 * @module
 */
import { join } from "node:path";
import { Metrics as MetricsV1 } from "../../src/gen/cgroups/cgroup1/stats/metrics.ts";
import { Metrics as MetricsV2 } from "../../src/gen/cgroups/cgroup2/stats/metrics.ts";
import type { Any } from "../../src/gen/containerd/google/protobuf/any.ts";

/** The figures tests look at, from either version's Metrics. */
export interface MetricsSummary {
  readonly version: 1 | 2;
  readonly memoryUsage: number;
  readonly pids: number;
}

/** Decodes an `io.containerd.cgroups.v1|v2.Metrics` Any (throws on any other type). */
export function decodeMetrics(any: Any | undefined): MetricsSummary {
  switch (any?.typeUrl) {
    case "io.containerd.cgroups.v1.Metrics": {
      const m = MetricsV1.decode(any.value);
      return {
        version: 1,
        memoryUsage: Number(m.memory?.usage?.usage ?? 0n),
        pids: Number(m.pids?.current ?? 0n),
      };
    }
    case "io.containerd.cgroups.v2.Metrics": {
      const m = MetricsV2.decode(any.value);
      return {
        version: 2,
        memoryUsage: Number(m.memory?.usage ?? 0n),
        pids: Number(m.pids?.current ?? 0n),
      };
    }
    default:
      throw new Error(`not cgroup metrics: ${any?.typeUrl}`);
  }
}

const ROOT = "/sys/fs/cgroup";

/** True where the host runs cgroup v2 alone (no v1 memory controller). */
async function unified(): Promise<boolean> {
  return await Deno.stat(join(ROOT, "cgroup.controllers")).then(() => true, () => false);
}

/** The memory limit of cgroup `path` in bytes (v1 memory.limit_in_bytes or v2 memory.max). */
export async function memoryLimit(path: string): Promise<number> {
  const file = (await unified())
    ? join(ROOT, path, "memory.max")
    : join(ROOT, "memory", path, "memory.limit_in_bytes");
  return Number((await Deno.readTextFile(file)).trim());
}

/** The v1 freezer state (or v2's `frozen` of cgroup.events as FROZEN/THAWED) of cgroup `path`. */
export async function freezerState(path: string): Promise<string> {
  if (await unified()) {
    const events = await Deno.readTextFile(join(ROOT, path, "cgroup.events"));
    return /^frozen 1$/m.test(events) ? "FROZEN" : "THAWED";
  }
  return (await Deno.readTextFile(join(ROOT, "freezer", path, "freezer.state"))).trim();
}
