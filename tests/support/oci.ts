/**
 * OCI bundles shaped like the ones containerd's CRI plugin writes for a pod
 * container: the pod's network/ipc/uts namespaces by /proc/<sandbox pid>
 * path, a pid namespace of its own (or the pod's), cgroups under a parent.
 *
 * @module
 */
import { join } from "node:path";

/** Where containers go whose spec is made without a cgroup parent. */
export const DEFAULT_CGROUP_PARENT = "/kuasar-test";

/** Options of `writeBundle`. */
export interface BundleOptions {
  readonly args: string[];
  /** Pid the Controller's Start returned (0 makes containerd write /proc/0 paths). */
  readonly sandboxPid: number;
  readonly sandboxId: string;
  readonly terminal?: boolean;
  readonly env?: string[];
  /** Share the pod's pid namespace. */
  readonly sharePid?: boolean;
  /** cgroup parent of the container. */
  readonly cgroupParent?: string;
  readonly mounts?: { destination: string; type: string; source: string; options: string[] }[];
  readonly memoryLimit?: number;
  /** `linux.resources.cpu.cpus`, as a static CPU manager pins a container. */
  readonly cpuset?: string;
}

/** A process spec for Task.Exec. */
export function processSpec(args: string[], terminal = false): Record<string, unknown> {
  return {
    terminal,
    user: { uid: 0, gid: 0 },
    args,
    env: ["PATH=/bin:/usr/bin:/sbin", "TERM=xterm"],
    cwd: "/",
    capabilities: caps(),
    noNewPrivileges: true,
  };
}

function caps() {
  const c = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_NET_BIND_SERVICE",
  ];
  return { bounding: c, effective: c, permitted: c };
}

/** Writes `<dir>/config.json` and returns the bundle directory. */
export async function writeBundle(
  dir: string,
  containerId: string,
  o: BundleOptions,
): Promise<string> {
  await Deno.mkdir(join(dir, "rootfs"), { recursive: true });
  const ns = (t: string) => ({
    type: t,
    path: `/proc/${o.sandboxPid}/ns/${t === "network" ? "net" : t}`,
  });
  const spec = {
    ociVersion: "1.0.2-dev",
    process: {
      ...processSpec(o.args, o.terminal ?? false),
      env: o.env ?? ["PATH=/bin:/usr/bin:/sbin"],
    },
    root: { path: "rootfs", readonly: false },
    hostname: "",
    mounts: [
      {
        destination: "/proc",
        type: "proc",
        source: "proc",
        options: ["nosuid", "noexec", "nodev"],
      },
      {
        destination: "/dev",
        type: "tmpfs",
        source: "tmpfs",
        options: ["nosuid", "strictatime", "mode=755", "size=65536k"],
      },
      {
        destination: "/dev/pts",
        type: "devpts",
        source: "devpts",
        options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
      },
      {
        destination: "/sys",
        type: "sysfs",
        source: "sysfs",
        options: ["nosuid", "noexec", "nodev", "ro"],
      },
      ...(o.mounts ?? []),
    ],
    annotations: {
      "io.kubernetes.cri.container-type": "container",
      "io.kubernetes.cri.sandbox-id": o.sandboxId,
    },
    linux: {
      cgroupsPath: `${o.cgroupParent ?? DEFAULT_CGROUP_PARENT}/${containerId}`,
      resources: {
        devices: [{ allow: false, access: "rwm" }],
        // swap = limit: no swap beyond the limit, so exceeding it is an OOM kill on any host.
        ...(o.memoryLimit ? { memory: { limit: o.memoryLimit, swap: o.memoryLimit } } : {}),
        ...(o.cpuset ? { cpu: { cpus: o.cpuset } } : {}),
      },
      namespaces: [
        o.sharePid ? ns("pid") : { type: "pid" },
        ns("ipc"),
        ns("uts"),
        { type: "mount" },
        ns("network"),
      ],
      maskedPaths: ["/proc/kcore", "/proc/keys", "/proc/timer_list"],
      readonlyPaths: ["/proc/sys", "/proc/sysrq-trigger"],
    },
  };
  await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(spec, null, 2));
  return dir;
}

/** A Task.Exec request running `args` (processSpec) with stdout to `stdout`. */
export function execRequest(
  cid: string,
  execId: string,
  args: string[],
  stdout: string,
  terminal = false,
) {
  return {
    id: cid,
    execId,
    terminal,
    stdin: "",
    stdout,
    stderr: "",
    spec: {
      typeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process",
      value: new TextEncoder().encode(JSON.stringify(processSpec(args, terminal))),
    },
  };
}
