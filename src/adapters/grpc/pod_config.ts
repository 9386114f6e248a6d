/**
 * Decodes Controller.Create's `options` (a CRI runtime.v1.PodSandboxConfig)
 * into the domain's PodConfig.
 *
 * @module
 */
import { InvalidArgumentError } from "../../domain/errors.ts";
import {
  emptyPodConfig,
  namespaceModeFromNumber,
  type PodConfig,
  type PodResources,
} from "../../domain/pod_config.ts";
import type { Any } from "../../gen/containerd/google/protobuf/any.ts";
import { type LinuxContainerResources, PodSandboxConfig } from "../../gen/cri/api.ts";

/** Type URL containerd gives the PodSandboxConfig it passes in `options`. */
export const POD_SANDBOX_CONFIG_TYPE = "runtime.v1.PodSandboxConfig";

function resources(r: LinuxContainerResources | undefined): PodResources | undefined {
  if (!r) return undefined;
  return {
    cpuPeriod: Number(r.cpuPeriod),
    cpuQuota: Number(r.cpuQuota),
    cpuShares: Number(r.cpuShares),
    memoryLimitInBytes: Number(r.memoryLimitInBytes),
    cpusetCpus: r.cpusetCpus,
    cpusetMems: r.cpusetMems,
  };
}

/**
 * The pod config carried by `options`, or an empty one when there are no
 * options. iSulad sends the PodSandboxConfig with an empty type URL, so
 * bytes without one are read as a PodSandboxConfig too (as Kuasar does).
 * Options of another type are ignored; undecodable ones are INVALID_ARGUMENT.
 */
export function podConfigFromOptions(options: Any | undefined): PodConfig {
  if (!options || !options.value.length) return emptyPodConfig();
  const untyped = options.typeUrl === "";
  if (!untyped && !options.typeUrl.endsWith(POD_SANDBOX_CONFIG_TYPE)) return emptyPodConfig();
  let c: PodSandboxConfig;
  try {
    c = PodSandboxConfig.decode(options.value);
  } catch (e) {
    throw new InvalidArgumentError(
      `Invalid options: not a PodSandboxConfig: ${(e as Error).message}`,
    );
  }
  const ns = c.linux?.securityContext?.namespaceOptions;
  return {
    name: c.metadata?.name ?? "",
    namespace: c.metadata?.namespace ?? "",
    uid: c.metadata?.uid ?? "",
    hostname: c.hostname,
    logDirectory: c.logDirectory,
    dns: c.dnsConfig
      ? {
        servers: c.dnsConfig.servers,
        searches: c.dnsConfig.searches,
        options: c.dnsConfig.options,
      }
      : undefined,
    labels: c.labels,
    annotations: c.annotations,
    cgroupParent: c.linux?.cgroupParent ?? "",
    sysctls: c.linux?.sysctls ?? {},
    // Absent namespace options decode as POD (the enum's zero), as in CRI.
    network: namespaceModeFromNumber(ns?.network ?? 0),
    pid: namespaceModeFromNumber(ns?.pid ?? 0),
    ipc: namespaceModeFromNumber(ns?.ipc ?? 0),
    privileged: c.linux?.securityContext?.privileged ?? false,
    resources: resources(c.linux?.resources),
    overhead: resources(c.linux?.overhead),
  };
}
