/**
 * The subset of the OCI runtime spec the sandboxers read or rewrite. Specs are
 * kept as parsed JSON (unknown fields preserved); these types only describe
 * what we touch.
 *
 * @module
 */

/** An OCI namespace entry. */
export interface OciNamespace {
  type: string;
  path?: string;
}

/** The OCI spec fields we read. Everything else passes through untouched. */
export interface OciSpec {
  ociVersion?: string;
  process?: OciProcess;
  root?: { path: string; readonly?: boolean };
  hostname?: string;
  mounts?: { destination: string; type?: string; source?: string; options?: string[] }[];
  annotations?: Record<string, string>;
  linux?: {
    namespaces?: OciNamespace[];
    cgroupsPath?: string;
    resources?: Record<string, unknown>;
    [key: string]: unknown;
  };
  [key: string]: unknown;
}

/** An OCI process (also the payload of Task.Exec). */
export interface OciProcess {
  terminal?: boolean;
  args?: string[];
  env?: string[];
  cwd?: string;
  [key: string]: unknown;
}

/** The pod's namespace files a container may join. */
export interface PodNamespaces {
  readonly network?: string;
  readonly ipc?: string;
  readonly uts?: string;
  readonly pid?: string;
}

/** CRI annotations naming the sandbox of a container. */
export const SANDBOX_ID_ANNOTATIONS = [
  "io.kubernetes.cri.sandbox-id",
  "io.kubernetes.cri-o.SandboxID",
  "io.kubernetes.sandbox.id",
] as const;

/** The sandbox id a container spec names in its annotations, if any. */
export function sandboxIdOf(spec: OciSpec): string | undefined {
  for (const k of SANDBOX_ID_ANNOTATIONS) {
    const v = spec.annotations?.[k];
    if (v) return v;
  }
  return undefined;
}

/**
 * Points a container's namespaces at its pod's.
 *
 * containerd builds `/proc/<sandbox pid>/ns/<type>` paths from the pid Start
 * returned, and `/proc/0/ns/<type>` when that pid is 0; network, ipc and uts
 * entries without a path would give the container private namespaces a pod
 * must not have. Those are rewritten to the pod's files. A pid namespace is
 * only joined when containerd asked for it (pod-shared pid namespace).
 * Returns whether anything changed.
 */
export function joinPodNamespaces(spec: OciSpec, pod: PodNamespaces): boolean {
  const list = spec.linux?.namespaces;
  if (!list) return false;
  let changed = false;
  for (const ns of list) {
    const type = ns.type === "net" ? "network" : ns.type;
    const target = type === "network" || type === "ipc" || type === "uts" || type === "pid"
      ? pod[type]
      : undefined;
    if (!target) continue;
    const unset = !ns.path;
    const pidZero = ns.path?.startsWith("/proc/0/ns/") ?? false;
    if ((type === "pid" && pidZero) || (type !== "pid" && (unset || pidZero))) {
      ns.path = target;
      changed = true;
    }
  }
  return changed;
}

/**
 * Whether the container's mounts propagate back to the node (a Bidirectional volume: an rshared
 * mount, or an rshared root): a mount it makes must reach the node's peers of its volumes.
 */
export function propagatesToNode(spec: OciSpec): boolean {
  const shared = (o: unknown) => o === "shared" || o === "rshared";
  return shared(spec.linux?.rootfsPropagation) ||
    (spec.mounts ?? []).some((m) => (m.options ?? []).some(shared));
}

/** Whether the container gets a pid namespace of its own (so its init's exit kills the rest). */
export function hasOwnPidNamespace(spec: OciSpec): boolean {
  const pid = spec.linux?.namespaces?.find((n) => n.type === "pid");
  return pid !== undefined && !pid.path;
}
