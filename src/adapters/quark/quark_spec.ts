/**
 * What the Quark sandboxer hands to Quark, as pure functions: the pod's OCI
 * spec (when the engine sent none), the `quark sandbox` command line, and a
 * container bundle's rewrites (bind mounts and stdio moved under the bundle,
 * since Quark sees the pod's bundle directory as its root).
 *
 * @module
 */
import { join } from "node:path";
import { InvalidArgumentError } from "../../domain/errors.ts";
import type { OciSpec } from "../../domain/oci.ts";
import type { SandboxRecord } from "../../domain/sandbox.ts";

/** Paths of a pod under the sandboxer's --dir. */
export function quarkPaths(dir: string, id: string) {
  const pod = join(dir, id);
  return {
    pod,
    bundle: join(pod, "sandbox"),
    taskSocket: join(pod, "quark-task.sock"),
    pidFile: join(pod, "pid"),
  };
}

/** `quark -r <bundle> sandbox --task-socket <sock> --id <id> --pid-file <pid>` (run in the bundle). */
export function quarkSandboxArgv(binary: string, dir: string, id: string): string[] {
  const p = quarkPaths(dir, id);
  return [
    binary,
    "-r",
    p.bundle,
    "sandbox",
    "--task-socket",
    p.taskSocket,
    "--id",
    id,
    "--pid-file",
    p.pidFile,
  ];
}

/** The pod's OCI spec, built from its PodSandboxConfig as Kuasar's quark sandboxer does. */
export function podSpec(record: SandboxRecord): OciSpec {
  const r = record.pod.resources;
  const resources: Record<string, unknown> = {};
  if (r) {
    if (r.memoryLimitInBytes > 0) {
      resources.memory = { limit: r.memoryLimitInBytes, swap: r.memoryLimitInBytes };
    }
    const cpu: Record<string, unknown> = {};
    if (r.cpuPeriod > 0) cpu.period = r.cpuPeriod;
    if (r.cpuQuota > 0) cpu.quota = r.cpuQuota;
    if (r.cpuShares > 0) cpu.shares = r.cpuShares;
    if (r.cpusetCpus) cpu.cpus = r.cpusetCpus;
    if (r.cpusetMems) cpu.mems = r.cpusetMems;
    if (Object.keys(cpu).length) resources.cpu = cpu;
  }
  const namespaces: { type: string; path?: string }[] = [
    { type: "pid" },
    { type: "ipc" },
    { type: "uts" },
    { type: "mount" },
    record.netnsPath ? { type: "network", path: record.netnsPath } : { type: "network" },
  ];
  return {
    ociVersion: "1.0.2",
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args: ["/pause"],
      env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
      cwd: "/",
    },
    root: { path: "rootfs", readonly: false },
    hostname: record.pod.hostname,
    mounts: [],
    annotations: { ...record.pod.annotations },
    linux: {
      namespaces,
      cgroupsPath: record.pod.cgroupParent ? join(record.pod.cgroupParent, record.id) : "",
      resources,
    },
  };
}

/** A bind mount to make for a container bundle: host `source` onto `target`. */
export interface BindMount {
  readonly source: string;
  readonly target: string;
}

/** Stdio of a process as Quark sees it, and the binds that put the FIFOs there. */
export function stdioInBundle(
  bundle: string,
  cid: string,
  prefix: string,
  io: { stdin: string; stdout: string; stderr: string },
): { io: { stdin: string; stdout: string; stderr: string }; binds: BindMount[] } {
  const binds: BindMount[] = [];
  const out = { stdin: "", stdout: "", stderr: "" };
  for (const k of ["stdin", "stdout", "stderr"] as const) {
    if (!io[k]) continue;
    binds.push({ source: io[k], target: join(bundle, `${prefix}${k}`) });
    out[k] = `/${cid}/${prefix}${k}`;
  }
  return { io: out, binds };
}

/**
 * Moves a container spec's bind mounts into its rootfs (Quark cannot reach
 * host paths): each becomes a bind made by the sandboxer at
 * `<rootfs>/<destination>` and leaves the spec.
 */
export function bindsIntoRootfs(spec: OciSpec, rootfs: string): BindMount[] {
  const binds: BindMount[] = [];
  spec.mounts = (spec.mounts ?? []).filter((m) => {
    const bind = m.type === "bind" || (m.options ?? []).some((o) => o === "bind" || o === "rbind");
    if (bind && m.source) {
      if (m.destination.split("/").includes("..")) {
        throw new InvalidArgumentError(`Mount destination "${m.destination}" leaves the rootfs`);
      }
      binds.push({ source: m.source, target: join(rootfs, m.destination) });
    }
    return !bind;
  });
  return binds;
}
