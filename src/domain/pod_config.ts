/**
 * The part of CRI's PodSandboxConfig a sandboxer acts on, in plain domain
 * types. The gRPC adapter decodes the protobuf and fills this in; the raw
 * protobuf is kept in the record too, for backends that forward it.
 *
 * @module
 */
import { InvalidArgumentError } from "./errors.ts";

/** CRI NamespaceMode: which namespace a pod's containers share. */
export type NamespaceMode = "pod" | "container" | "node" | "target";

const NAMESPACE_MODES: readonly NamespaceMode[] = ["pod", "container", "node", "target"];

/** Maps CRI's enum number (POD=0, CONTAINER=1, NODE=2, TARGET=3). */
export function namespaceModeFromNumber(n: number): NamespaceMode {
  return NAMESPACE_MODES[n] ?? "pod";
}

/** DNS settings of a pod. */
export interface DnsConfig {
  readonly servers: readonly string[];
  readonly searches: readonly string[];
  readonly options: readonly string[];
}

/** Linux resources of a pod (CRI LinuxContainerResources subset). */
export interface PodResources {
  readonly cpuPeriod: number;
  readonly cpuQuota: number;
  readonly cpuShares: number;
  readonly memoryLimitInBytes: number;
  readonly cpusetCpus: string;
  readonly cpusetMems: string;
}

/** What a sandboxer needs from PodSandboxConfig. */
export interface PodConfig {
  readonly name: string;
  readonly namespace: string;
  readonly uid: string;
  readonly hostname: string;
  readonly logDirectory: string;
  readonly dns?: DnsConfig;
  readonly labels: Readonly<Record<string, string>>;
  readonly annotations: Readonly<Record<string, string>>;
  readonly cgroupParent: string;
  readonly sysctls: Readonly<Record<string, string>>;
  readonly network: NamespaceMode;
  readonly pid: NamespaceMode;
  readonly ipc: NamespaceMode;
  readonly privileged: boolean;
  readonly resources?: PodResources;
  readonly overhead?: PodResources;
}

/** The config of a pod created without options (e.g. by a bare Controller client). */
export function emptyPodConfig(): PodConfig {
  return {
    name: "",
    namespace: "",
    uid: "",
    hostname: "",
    logDirectory: "",
    labels: {},
    annotations: {},
    cgroupParent: "",
    sysctls: {},
    network: "pod",
    pid: "container",
    ipc: "pod",
    privileged: false,
  };
}

/**
 * resolv.conf text for a pod, in Kuasar's order (search, nameservers,
 * options), or `undefined` when the pod configures no DNS.
 */
export function resolvConf(dns: DnsConfig | undefined): string | undefined {
  if (!dns || (!dns.servers.length && !dns.searches.length && !dns.options.length)) {
    return undefined;
  }
  let out = "";
  if (dns.searches.length) out += `search ${dns.searches.join(" ")}\n`;
  for (const s of dns.servers) out += `nameserver ${s}\n`;
  if (dns.options.length) out += `options ${dns.options.join(" ")}\n`;
  return out;
}

/**
 * The DNS settings of a resolv.conf text (nameserver, search, options lines; `domain` is an
 * older search), or `undefined` when it sets none: what a pod without its own DNS config
 * gets from the node, as containerd gives its own sandboxes the node's file.
 */
export function dnsOfResolvConf(text: string): DnsConfig | undefined {
  const servers: string[] = [];
  let searches: string[] = [];
  const options: string[] = [];
  for (const line of text.split("\n")) {
    const [key, ...values] = line.replace(/[#;].*$/, "").trim().split(/\s+/);
    if (key === "nameserver" && values[0]) servers.push(values[0]);
    else if (key === "search" || key === "domain") searches = values.filter(Boolean);
    else if (key === "options") options.push(...values.filter(Boolean));
  }
  return servers.length || searches.length || options.length
    ? { servers, searches, options }
    : undefined;
}

/** Longest hostname the kernel accepts (HOST_NAME_MAX). */
export const MAX_HOSTNAME_LENGTH = 64;

/** Labels of letters, digits, "-" and "_" (not leading or trailing "-"), joined by single dots. */
const HOSTNAME_PATTERN =
  /^[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?)*$/;

/**
 * Why `hostname` cannot be a pod's hostname, or undefined when it can (empty
 * means the default). The kernel takes at most 64 bytes; the label rule is
 * RFC 1123's, with "_" allowed as node names sometimes have it. A bad one
 * would otherwise pass Create and fail at Start (sethostname, or the
 * /etc/hostname the containers see).
 */
export function hostnameProblem(hostname: string): string | undefined {
  if (hostname === "") return undefined;
  const bytes = new TextEncoder().encode(hostname).length;
  if (bytes > MAX_HOSTNAME_LENGTH) {
    return `longer than ${MAX_HOSTNAME_LENGTH} bytes (${bytes})`;
  }
  if (!HOSTNAME_PATTERN.test(hostname)) {
    return `only letters, digits, "-" and "_" in dot-separated labels are allowed`;
  }
  return undefined;
}

/** Throws `InvalidArgumentError` when the pod's config cannot be acted on. */
export function validatePodConfig(pod: PodConfig): void {
  const problem = hostnameProblem(pod.hostname);
  if (problem) {
    const shown = pod.hostname.length > 80 ? `${pod.hostname.slice(0, 40)}...` : pod.hostname;
    throw new InvalidArgumentError(`Invalid pod hostname ${JSON.stringify(shown)}: ${problem}`);
  }
}
