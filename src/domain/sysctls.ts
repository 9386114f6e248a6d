/**
 * Pod sysctls: which are namespaced (and so may be set for one pod), and
 * the defaults a pod gets, as containerd gives them to its pause containers.
 *
 * @module
 */
import { InvalidArgumentError } from "./errors.ts";
import type { PodConfig } from "./pod_config.ts";

/**
 * Whether `key` belongs to a namespace the pod has of its own (runc's rules):
 * net.* with the pod's own network namespace, System V IPC and mqueue with
 * its own IPC namespace, the host and domain names with its own UTS one.
 */
export function isPodSysctl(key: string, pod: PodConfig): boolean {
  if (key.startsWith("net.")) return pod.network !== "node";
  if (/^kernel\.(shm|msg|sem$)|^fs\.mqueue\./.test(key)) return pod.ipc !== "node";
  if (key === "kernel.hostname" || key === "kernel.domainname") return pod.network !== "node";
  return false;
}

/** Throws INVALID_ARGUMENT for a sysctl the pod cannot have (node-wide, or of a host namespace). */
export function checkPodSysctls(pod: PodConfig): void {
  for (const key of Object.keys(pod.sysctls)) {
    if (!/^[a-z0-9_]+(\.[a-zA-Z0-9_-]+)+$/.test(key)) {
      throw new InvalidArgumentError(`Invalid sysctl "${key}"`);
    }
    if (!isPodSysctl(key, pod)) {
      throw new InvalidArgumentError(
        `Sysctl "${key}" is not namespaced for this pod: it would change the node, not the pod`,
      );
    }
  }
}

/**
 * The sysctls to set in a pod: containerd's defaults for pods with their
 * own network (unprivileged ports and ping allowed), then the pod's own.
 */
export function podSysctls(pod: PodConfig): [string, string][] {
  const out = new Map<string, string>();
  if (pod.network !== "node") {
    out.set("net.ipv4.ip_unprivileged_port_start", "0");
    out.set("net.ipv4.ping_group_range", "0 2147483647");
  }
  for (const [k, v] of Object.entries(pod.sysctls)) out.set(k, v);
  return [...out];
}
