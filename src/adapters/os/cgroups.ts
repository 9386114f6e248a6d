/**
 * cgroup statistics as containerd decodes them: `io.containerd.cgroups.v1.Metrics`
 * on v1 (and hybrid) hosts, `io.containerd.cgroups.v2.Metrics` on unified v2
 * hosts. Paths come from /proc/<pid>/cgroup, so whatever cgroup driver runc
 * used, the numbers are the process's own.
 *
 * @module
 */
import { join } from "node:path";
import { InvalidArgumentError } from "../../domain/errors.ts";
import * as v1 from "../../gen/cgroups/cgroup1/stats/metrics.ts";
import * as v2 from "../../gen/cgroups/cgroup2/stats/metrics.ts";
import type { StoredAnyBytes } from "../../ports/container_runtime.ts";

const ROOT = "/sys/fs/cgroup";

/** Controller name → cgroup path (v1), or "" → path on a unified host. */
export type CgroupPaths = Record<string, string>;

let unified: boolean | undefined;

/** Whether the host runs the unified (v2-only) hierarchy. */
export function isUnified(): boolean {
  if (unified === undefined) {
    try {
      Deno.statSync(join(ROOT, "cgroup.controllers"));
      unified = true;
    } catch {
      unified = false;
    }
  }
  return unified;
}

/** The cgroup paths of a live process. */
export async function cgroupPathsOf(pid: number): Promise<CgroupPaths> {
  const text = await Deno.readTextFile(`/proc/${pid}/cgroup`);
  const out: CgroupPaths = {};
  for (const line of text.split("\n")) {
    const m = /^\d+:([^:]*):(.*)$/.exec(line);
    if (!m) continue;
    if (m[1] === "") {
      if (isUnified()) out[""] = m[2];
      continue;
    }
    for (const c of m[1].split(",")) out[c.replace(/^name=/, "")] = m[2];
  }
  return out;
}

/** Paths for a cgroup given by name (e.g. a pod's cgroup parent) in every hierarchy. */
export function cgroupPathsFor(path: string): CgroupPaths {
  const p = path.startsWith("/") ? path : "/" + path;
  if (isUnified()) return { "": p };
  return { cpu: p, cpuacct: p, memory: p, pids: p, blkio: p, hugetlb: p };
}

async function readText(file: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(file);
  } catch {
    return undefined;
  }
}

/**
 * "No limit" in a v2 limit file ("max"), as containerd's cgroups library reads it: the largest
 * u64. containerd's CRI takes any limit above 2^62 for none (its `availableBytes` is then 0); a
 * 0 here would be a limit of nothing, and limit - working set a wrapped-around huge number in
 * the kubelet's stats.
 */
export const CGROUP_V2_MAX = 0xffff_ffff_ffff_ffffn;

async function readU64(file: string): Promise<bigint> {
  const t = (await readText(file))?.trim();
  if (!t) return 0n;
  if (t === "max") return CGROUP_V2_MAX;
  try {
    return BigInt(t);
  } catch {
    return 0n;
  }
}

function parseKeyed(text: string | undefined): Map<string, bigint> {
  const m = new Map<string, bigint>();
  for (const line of (text ?? "").split("\n")) {
    const [k, v] = line.trim().split(/\s+/);
    if (k && v && /^\d+$/.test(v)) m.set(k, BigInt(v));
  }
  return m;
}

function camel(s: string): string {
  return s.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
}

/** Whether a cgroup directory exists for any controller. */
export async function cgroupExists(paths: CgroupPaths): Promise<boolean> {
  const [ctrl, p] = Object.entries(paths).find(([c]) => c === "" || c === "memory") ?? [];
  if (p === undefined) return false;
  try {
    return (await Deno.stat(join(ROOT, ctrl ?? "", p))).isDirectory;
  } catch {
    return false;
  }
}

/** Where cgroups are mounted, and whether as the unified (v2-only) hierarchy. */
export interface CgroupRoot {
  readonly root: string;
  readonly unified: boolean;
}

/** This host's cgroup mount. */
export function hostCgroupRoot(): CgroupRoot {
  return { root: ROOT, unified: isUnified() };
}

/** Number of OOM kills recorded in the cgroup's memory controller. */
export async function oomKills(
  paths: CgroupPaths,
  at: CgroupRoot = hostCgroupRoot(),
): Promise<bigint> {
  if (at.unified) {
    return parseKeyed(await readText(join(at.root, paths[""] ?? "/", "memory.events"))).get(
      "oom_kill",
    ) ?? 0n;
  }
  const p = paths.memory;
  if (p === undefined) return 0n;
  return parseKeyed(await readText(join(at.root, "memory", p, "memory.oom_control"))).get(
    "oom_kill",
  ) ?? 0n;
}

const V1_MEMORY_NAMES: Record<string, string> = {
  pgpgin: "pgPgIn",
  pgpgout: "pgPgOut",
  pgfault: "pgFault",
  pgmajfault: "pgMajFault",
  total_pgpgin: "totalPgPgIn",
  total_pgpgout: "totalPgPgOut",
  total_pgfault: "totalPgFault",
  total_pgmajfault: "totalPgMajFault",
  hierarchical_memsw_limit: "hierarchicalSwapLimit",
};

async function memoryEntryV1(dir: string, prefix: string): Promise<v1.MemoryEntry> {
  return {
    limit: await readU64(join(dir, `${prefix}limit_in_bytes`)),
    usage: await readU64(join(dir, `${prefix}usage_in_bytes`)),
    max: await readU64(join(dir, `${prefix}max_usage_in_bytes`)),
    failcnt: await readU64(join(dir, `${prefix}failcnt`)),
  };
}

async function blkioV1(dir: string, file: string): Promise<v1.BlkIOEntry[]> {
  const out: v1.BlkIOEntry[] = [];
  for (const line of ((await readText(join(dir, file))) ?? "").split("\n")) {
    const f = line.trim().split(/\s+/);
    const dev = /^(\d+):(\d+)$/.exec(f[0] ?? "");
    if (!dev) continue;
    const [op, value] = f.length === 3 ? [f[1], f[2]] : ["", f[1]];
    if (!value || !/^\d+$/.test(value)) continue;
    out.push({
      op,
      device: "",
      major: BigInt(dev[1]),
      minor: BigInt(dev[2]),
      value: BigInt(value),
    });
  }
  return out;
}

async function metricsV1(paths: CgroupPaths): Promise<v1.Metrics> {
  const m = v1.Metrics.fromPartial({});
  if (paths.pids !== undefined) {
    const d = join(ROOT, "pids", paths.pids);
    m.pids = {
      current: await readU64(join(d, "pids.current")),
      limit: await readU64(join(d, "pids.max")),
    };
  }
  const cpuacct = paths.cpuacct ?? paths.cpu;
  if (cpuacct !== undefined) {
    const d = join(ROOT, "cpuacct", cpuacct);
    const stat = parseKeyed(await readText(join(d, "cpuacct.stat")));
    const tick = 10_000_000n; // USER_HZ = 100 → 10 ms in ns
    const perCpu = ((await readText(join(d, "cpuacct.usage_percpu"))) ?? "").trim().split(/\s+/)
      .filter((x) => /^\d+$/.test(x)).map((x) => BigInt(x));
    const thr = parseKeyed(await readText(join(ROOT, "cpu", paths.cpu ?? cpuacct, "cpu.stat")));
    m.cpu = {
      usage: {
        total: await readU64(join(d, "cpuacct.usage")),
        user: (stat.get("user") ?? 0n) * tick,
        kernel: (stat.get("system") ?? 0n) * tick,
        perCpu,
      },
      throttling: {
        periods: thr.get("nr_periods") ?? 0n,
        throttledPeriods: thr.get("nr_throttled") ?? 0n,
        throttledTime: thr.get("throttled_time") ?? 0n,
      },
    };
  }
  if (paths.memory !== undefined) {
    const d = join(ROOT, "memory", paths.memory);
    const mem = v1.MemoryStat.fromPartial({}) as unknown as Record<string, unknown>;
    for (const [k, v] of parseKeyed(await readText(join(d, "memory.stat")))) {
      const name = V1_MEMORY_NAMES[k] ?? camel(k);
      if (typeof mem[name] === "bigint") mem[name] = v;
    }
    const ms = mem as unknown as v1.MemoryStat;
    ms.usage = await memoryEntryV1(d, "memory.");
    ms.swap = await memoryEntryV1(d, "memory.memsw.");
    ms.kernel = await memoryEntryV1(d, "memory.kmem.");
    ms.kernelTcp = await memoryEntryV1(d, "memory.kmem.tcp.");
    m.memory = ms;
    const oom = parseKeyed(await readText(join(d, "memory.oom_control")));
    m.memoryOomControl = {
      oomKillDisable: oom.get("oom_kill_disable") ?? 0n,
      underOom: oom.get("under_oom") ?? 0n,
      oomKill: oom.get("oom_kill") ?? 0n,
    };
  }
  if (paths.blkio !== undefined) {
    const d = join(ROOT, "blkio", paths.blkio);
    m.blkio = v1.BlkIOStat.fromPartial({
      ioServiceBytesRecursive: await blkioV1(d, "blkio.throttle.io_service_bytes"),
      ioServicedRecursive: await blkioV1(d, "blkio.throttle.io_serviced"),
    });
  }
  return m;
}

/** cgroup v2 statistics of `path` under `root` (exported for tests with fixture trees). */
export async function metricsV2(path: string, root = ROOT): Promise<v2.Metrics> {
  const d = join(root, path);
  const m = v2.Metrics.fromPartial({});
  m.pids = {
    current: await readU64(join(d, "pids.current")),
    limit: await readU64(join(d, "pids.max")),
  };
  const cpu = parseKeyed(await readText(join(d, "cpu.stat")));
  m.cpu = v2.CPUStat.fromPartial({
    usageUsec: cpu.get("usage_usec") ?? 0n,
    userUsec: cpu.get("user_usec") ?? 0n,
    systemUsec: cpu.get("system_usec") ?? 0n,
    nrPeriods: cpu.get("nr_periods") ?? 0n,
    nrThrottled: cpu.get("nr_throttled") ?? 0n,
    throttledUsec: cpu.get("throttled_usec") ?? 0n,
  });
  const mem = v2.MemoryStat.fromPartial({}) as unknown as Record<string, unknown>;
  for (const [k, v] of parseKeyed(await readText(join(d, "memory.stat")))) {
    const name = camel(k);
    if (typeof mem[name] === "bigint") mem[name] = v;
  }
  const ms = mem as unknown as v2.MemoryStat;
  ms.usage = await readU64(join(d, "memory.current"));
  ms.usageLimit = await readU64(join(d, "memory.max"));
  ms.swapUsage = await readU64(join(d, "memory.swap.current"));
  ms.swapLimit = await readU64(join(d, "memory.swap.max"));
  ms.maxUsage = await readU64(join(d, "memory.peak"));
  m.memory = ms;
  const ev = parseKeyed(await readText(join(d, "memory.events")));
  m.memoryEvents = {
    low: ev.get("low") ?? 0n,
    high: ev.get("high") ?? 0n,
    max: ev.get("max") ?? 0n,
    oom: ev.get("oom") ?? 0n,
    oomKill: ev.get("oom_kill") ?? 0n,
    oomGroupKill: ev.get("oom_group_kill") ?? 0n,
  };
  const io: v2.IOEntry[] = [];
  for (const line of ((await readText(join(d, "io.stat"))) ?? "").split("\n")) {
    const f = line.trim().split(/\s+/);
    const dev = /^(\d+):(\d+)$/.exec(f[0] ?? "");
    if (!dev) continue;
    const kv = new Map(f.slice(1).map((x) => x.split("=") as [string, string]));
    const n = (k: string) => /^\d+$/.test(kv.get(k) ?? "") ? BigInt(kv.get(k)!) : 0n;
    io.push({
      major: BigInt(dev[1]),
      minor: BigInt(dev[2]),
      rbytes: n("rbytes"),
      wbytes: n("wbytes"),
      rios: n("rios"),
      wios: n("wios"),
    });
  }
  m.io = { usage: io, psi: undefined };
  return m;
}

/** The cgroup's statistics as the Any containerd expects in Task.Stats and Controller.Metrics. */
export async function cgroupMetrics(paths: CgroupPaths): Promise<StoredAnyBytes> {
  if (isUnified()) {
    return {
      typeUrl: "io.containerd.cgroups.v2.Metrics",
      value: v2.Metrics.encode(await metricsV2(paths[""] ?? "/")).finish(),
    };
  }
  return {
    typeUrl: "io.containerd.cgroups.v1.Metrics",
    value: v1.Metrics.encode(await metricsV1(paths)).finish(),
  };
}

/**
 * Adds `b` into `a` field by field: counters (bigints) are summed (limits
 * and maxima take the larger value), nested
 * messages recursed into, per-CPU arrays summed element-wise; other arrays
 * (per-device entries) are concatenated.
 */
function addInto(a: Record<string, unknown>, b: Record<string, unknown>): void {
  for (const [k, bv] of Object.entries(b)) {
    const av = a[k];
    if (typeof bv === "bigint") {
      const prev = typeof av === "bigint" ? av : 0n;
      // Limits and high-water marks do not add up: the pod's is the largest.
      a[k] = /limit|max/i.test(k) ? (prev > bv ? prev : bv) : prev + bv;
    } else if (Array.isArray(bv)) {
      if (!Array.isArray(av)) a[k] = [...bv];
      else if (bv.every((x) => typeof x === "bigint")) {
        a[k] = Array.from(
          { length: Math.max(av.length, bv.length) },
          (_, i) => (av[i] ?? 0n) + (bv[i] ?? 0n),
        );
      } else av.push(...bv);
    } else if (bv && typeof bv === "object") {
      if (av && typeof av === "object") {
        addInto(av as Record<string, unknown>, bv as Record<string, unknown>);
      } else a[k] = structuredClone(bv);
    }
  }
}

/** The sum of several cgroups' metrics, as one Any (an empty set gives zeroed metrics). */
export async function summedCgroupMetrics(list: readonly CgroupPaths[]): Promise<StoredAnyBytes> {
  if (isUnified()) {
    const total = v2.Metrics.fromPartial({}) as unknown as Record<string, unknown>;
    for (const p of list) {
      addInto(total, await metricsV2(p[""] ?? "/") as unknown as Record<string, unknown>);
    }
    return {
      typeUrl: "io.containerd.cgroups.v2.Metrics",
      value: v2.Metrics.encode(total as unknown as v2.Metrics).finish(),
    };
  }
  const total = v1.Metrics.fromPartial({}) as unknown as Record<string, unknown>;
  for (const p of list) addInto(total, await metricsV1(p) as unknown as Record<string, unknown>);
  return {
    typeUrl: "io.containerd.cgroups.v1.Metrics",
    value: v1.Metrics.encode(total as unknown as v1.Metrics).finish(),
  };
}

/**
 * Removes cgroup `path` from every hierarchy it exists in (runsc leaves its
 * sandbox's cgroup behind on cgroup v1). Retries briefly while the last
 * processes are still leaving it.
 */
/** v1 controllers a pod's process is accounted and limited by. */
const ACCOUNTING = new Set(["memory", "cpu", "cpuacct", "pids", "blkio", "hugetlb"]);

/**
 * Creates cgroup `path` in the hierarchies of the accounting controllers
 * (v1), or in the unified tree with them enabled along the way (v2);
 * returns its cgroup.procs files.
 */
export async function makeCgroup(path: string): Promise<string[]> {
  const rel = path.replace(/^\/+/, "");
  if (!rel || rel.split("/").includes("..")) {
    throw new InvalidArgumentError(`Invalid cgroup path "${path}"`);
  }
  if (isUnified()) {
    let dir = ROOT;
    for (const part of rel.split("/")) {
      await Deno.writeTextFile(join(dir, "cgroup.subtree_control"), "+cpu +memory +pids")
        .catch(() => {}); // best effort: a controller may be unavailable
      dir = join(dir, part);
      await Deno.mkdir(dir).catch((e) => {
        if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
      });
    }
    return [join(dir, "cgroup.procs")];
  }
  const procs: string[] = [];
  for await (const e of Deno.readDir(ROOT)) {
    // Symlinks ("cpu" → "cpu,cpuacct") name hierarchies listed anyway.
    if (!e.isDirectory || !e.name.split(",").some((c) => ACCOUNTING.has(c))) continue;
    const dir = join(ROOT, e.name, rel);
    await Deno.mkdir(dir, { recursive: true });
    procs.push(join(dir, "cgroup.procs"));
  }
  return procs;
}

/**
 * Gives cgroup `path` (made by `makeCgroup`) the least CPU weight (v2 `cpu.weight` 1, v1
 * `cpu.shares` 2): its processes get CPU only what others leave. Best effort: a host without the
 * cpu controller keeps the default.
 */
export async function leastCpuWeight(path: string): Promise<void> {
  const rel = path.replace(/^\/+/, "");
  if (!rel || rel.split("/").includes("..")) return;
  if (isUnified()) {
    await Deno.writeTextFile(join(ROOT, rel, "cpu.weight"), "1").catch(() => {});
    return;
  }
  for await (const e of Deno.readDir(ROOT)) {
    if (!e.isDirectory || !e.name.split(",").includes("cpu")) continue;
    await Deno.writeTextFile(join(ROOT, e.name, rel, "cpu.shares"), "2").catch(() => {});
  }
}

export async function removeCgroup(path: string): Promise<void> {
  const rel = path.replace(/^\/+/, "");
  if (!rel || rel.split("/").includes("..")) return;
  const dirs = isUnified() ? [ROOT] : (await Array.fromAsync(Deno.readDir(ROOT)).catch(() => []))
    .filter((e) => e.isDirectory).map((e) => join(ROOT, e.name));
  for (const d of dirs) {
    const target = join(d, rel);
    for (let i = 0; i < 20; i++) {
      try {
        await Deno.remove(target);
        break;
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) break;
        await new Promise((r) => setTimeout(r, 50)); // busy: processes still leaving
      }
    }
  }
}

/** Pids in the cgroups of `paths` (every hierarchy listed); empty when the cgroups are gone. */
export async function cgroupProcesses(paths: CgroupPaths): Promise<number[]> {
  const pids = new Set<number>();
  for (const [controller, path] of Object.entries(paths)) {
    const rel = path.replace(/^\/+/, "");
    if (rel.split("/").includes("..")) continue;
    const text = await readText(join(ROOT, controller, rel, "cgroup.procs"));
    for (const l of (text ?? "").split("\n")) if (/^\d+$/.test(l)) pids.add(Number(l));
  }
  return [...pids];
}
