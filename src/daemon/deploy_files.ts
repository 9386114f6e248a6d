/**
 * The files a node needs per kind, generated from the kinds themselves so
 * that `kuasar install`, `deploy/` (written by `deno task gen:deploy`) and the
 * README cannot drift apart: the systemd unit, the containerd 2.x drop-in and
 * the kind's default config where Kuasar has one.
 *
 * @module
 */
import type { HostKind } from "../adapters/kind_host.ts";

/** Where the node's pieces are, as Kuasar lays them out. */
export const NODE_PATHS = {
  /** The executable (or its launcher). */
  bin: "/usr/local/bin/kuasar",
  /** The helper, the containerd stubs and the guest image's parent. */
  helperDir: "/var/lib/kuasar/bin",
  units: "/etc/systemd/system",
  /** What containerd's default config imports (≥ 2.2; a config.toml must name it). */
  containerdDropIns: "/etc/containerd/conf.d",
} as const;

/** `kuasar-<kind>.service`: a notify unit whose restarts leave the pods running. */
export function systemdUnit(kind: HostKind, bin: string = NODE_PATHS.bin): string {
  return `[Unit]
Description=Kuasar ${kind.name} sandboxer: ${kind.description}
Documentation=https://github.com/kuasar-io/kuasar
After=network.target
# containerd looks for the stub this sandboxer installs when it starts.
Before=containerd.service

[Service]
Type=notify
# The helper sends the notifications on the daemon's behalf (with MAINPID).
NotifyAccess=all
ExecStart=${bin} ${kind.name} --listen ${kind.defaultListen} --dir ${kind.defaultDir}
Restart=always
WatchdogSec=30s
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
Delegate=yes
# The pods' processes (holders, monitors, runtimes, VMs) must outlive a sandboxer restart.
KillMode=process

[Install]
WantedBy=multi-user.target
`;
}

/** `kuasar-<kind>.toml` for /etc/containerd/conf.d: the proxy plugin and two CRI handlers. */
export function containerdDropIn(
  kind: HostKind,
  helperDir: string = NODE_PATHS.helperDir,
): string {
  const k = kind.name;
  const stub = `${helperDir}/containerd-shim-kuasar-${k}-v1`;
  return `# containerd 2.x: the CRI runtime handlers of the Kuasar ${k} sandboxer (kuasar ${k}, ${kind.binaryName}).
# Copy to /etc/containerd/conf.d/ and restart containerd. containerd reads it when its config.toml
# has imports = ["/etc/containerd/conf.d/*.toml"] at the top, before the first [table] (the config
# \`containerd config default\` prints has it since 2.2). Tested as written (tests/support/e2e.ts).
version = 3

# The sandboxer: one daemon for all pods of this kind (containerd's Sandbox API, gRPC).
[proxy_plugins.kuasar-${k}]
  type = "sandbox"
  address = "${kind.defaultListen}"

# kuasar-${k}: containers' stdio through FIFOs (containerd's default).
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.kuasar-${k}]
  # The stub the sandboxer installs. containerd resolves it before it talks to the sandboxer
  # directly; an absolute path, because ${helperDir} is not on containerd's PATH.
  runtime_type = "${stub}"
  sandboxer = "kuasar-${k}"
  # No pause container: never pull its image (an air-gapped node cannot).
  disable_pause_image_pull = true

# kuasar-${k}-stream: the same pods, containers' stdio over containerd's streaming IO.
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.kuasar-${k}-stream]
  runtime_type = "${stub}"
  sandboxer = "kuasar-${k}"
  io_type = "streaming"
  disable_pause_image_pull = true
`;
}

/**
 * The kind's config at Kuasar's path, for kinds that read one by default
 * (vmm: /var/lib/kuasar/config.toml): every key optional, the defaults apply.
 */
export function defaultKindConfig(kind: HostKind): string | undefined {
  if (!kind.defaultConfig) return undefined;
  return `# kuasar ${kind.name} (${kind.binaryName}): read at start from ${kind.defaultConfig}.
# Every key is optional; unknown keys and wrong types are errors naming the key.
# [sandbox] is shared by all kinds; [${kind.configTable ?? kind.name}] is this kind's (README).
[sandbox]
log_level = "info"

[${kind.configTable ?? kind.name}]
`;
}

/** The label a node running a kind's sandboxer carries: its RuntimeClass schedules pods there. */
export function nodeLabel(kind: HostKind): string {
  return `kuasar.io/${kind.name}`;
}

/**
 * What a VM pod costs beyond its containers, for the scheduler and the kubelet's accounting
 * (RuntimeClass `overhead.podFixed`): the guest's own memory (kernel, agent, page cache; the VM
 * is sized to the pod's limit plus this, src/domain/vm_size.ts), the VMM's process, and the
 * vCPU thread's share of a CPU the containers do not see.
 */
export const VM_POD_OVERHEAD = { memory: "320Mi", cpu: "250m" } as const;

/**
 * `runtimeclass-<kind>.yaml` for `kubectl apply`: the RuntimeClass `kuasar-<kind>` naming the CRI
 * handler of the drop-in, scheduling pods onto nodes labelled `kuasar.io/<kind>=true`; VM pods
 * with their overhead.
 */
export function runtimeClass(kind: HostKind): string {
  const k = kind.name;
  const overhead = k === "vmm"
    ? `# Each pod is a VM: its guest and VMM cost this much beyond the containers' requests.
overhead:
  podFixed:
    memory: ${JSON.stringify(VM_POD_OVERHEAD.memory)}
    cpu: ${JSON.stringify(VM_POD_OVERHEAD.cpu)}
`
    : "";
  return `# Kubernetes: pods with runtimeClassName: kuasar-${k} run in the Kuasar ${k} sandboxer:
# ${kind.description}.
# kubectl apply -f this file, and label each node that runs the sandboxer and imports
# deploy/containerd/kuasar-${k}.toml: kubectl label node <node> ${nodeLabel(kind)}=true
# Tested as written (tests/k8s/, docs/kubernetes.md).
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata:
  name: kuasar-${k}
# The CRI runtime handler of containerd's drop-in (kuasar-${k}-stream: the same, streaming IO).
handler: kuasar-${k}
scheduling:
  nodeSelector:
    ${nodeLabel(kind)}: "true"
${overhead}`;
}
