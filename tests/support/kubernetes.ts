/**
 * A single-node Kubernetes on loopback for the end-to-end suite: etcd, kube-apiserver and a
 * kubelet driving a private containerd 2.4, which drives one sandboxer per kind through the
 * drop-ins of `deploy/containerd/` and the RuntimeClasses of `deploy/kubernetes/`, as on a node.
 * No scheduler and no controller manager: pods name their node (`spec.nodeName`), and the
 * ServiceAccount admission plugin is off (nothing would create the `default` account).
 * The binaries come from `scripts/install_k8s_tools.sh` (cached with the containerd tools).
 *
 * Everything lives under one temp dir; `stop()` deletes every pod through the API (so the
 * kubelet tears them down as it does on a node), stops each process, unmounts what the kubelet
 * mounted, puts back the kernel settings the kubelet changes, removes the host paths it made
 * outside its --root-dir (`/var/lib/kubelet/device-plugins`, `/var/log/containers`) when they were
 * not there before, and removes the dir.
 *
 * @module
 */
import { generateKeyPairSync } from "node:crypto";
import { join } from "node:path";
import { type CmdOptions, type CmdResult, runCmd, TestContainerd } from "./containerd.ts";
import { mountsUnder, TOOLS_CACHE } from "./containerd.ts";
import { TestDaemon } from "./daemon.ts";
import { containerdDropIn } from "./e2e.ts";

/** The pinned release (scripts/install_k8s_tools.sh). */
export const K8S_VERSION = "v1.37.2";
/** kubelet, kube-apiserver, kubectl, etcd. */
export const K8S_BIN = join(TOOLS_CACHE, `kubernetes-${K8S_VERSION}`, "bin");

/** Why the Kubernetes suite cannot run here, or undefined. */
export function kubernetesUnavailable(): string | undefined {
  for (const b of ["kubelet", "kube-apiserver", "kubectl", "etcd"]) {
    try {
      Deno.statSync(join(K8S_BIN, b));
    } catch {
      // The installer leaves why it could not build (no Go, no module proxy).
      const why = (() => {
        try {
          return Deno.readTextFileSync(join(K8S_BIN, "..", "unavailable")).trim();
        } catch {
          return "not built yet";
        }
      })();
      return `${b} is not in ${K8S_BIN}: ${why} (scripts/install_k8s_tools.sh)`;
    }
  }
  return undefined;
}

/** Kernel settings the kubelet sets at start (`protectKernelDefaults: false`); put back after. */
const KUBELET_SYSCTLS = [
  "vm/overcommit_memory",
  "vm/panic_on_oom",
  "kernel/panic",
  "kernel/panic_on_oops",
  "kernel/keys/root_maxkeys",
  "kernel/keys/root_maxbytes",
];

/**
 * Host paths the kubelet makes whatever its --root-dir: the device plugins' socket dir and the
 * container log links. Removed after the cluster when it made them.
 */
const KUBELET_HOST_PATHS = ["/var/lib/kubelet", "/var/log/containers"];

/** A sandboxer of one kind in the cluster. */
export interface ClusterKind {
  /** `runc`, `wasm`, `gvisor`, `vmm`. */
  readonly kind: string;
  /** The sandboxer's TOML config, if any. */
  readonly config?: string;
}

/** A free TCP port on loopback (bound, then released). */
function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/**
 * The node's address: the kubelet refuses a loopback node IP, and the apiserver reaches the
 * kubelet (logs, exec) at the node's InternalIP. A /32 of TEST-NET-1 (192.0.2.0/24, reserved
 * for documentation, so never a real network) on a link of the cluster's own (a bridge: no dummy module here).
 */
async function addNodeAddress(): Promise<{ link: string; ip: string }> {
  const used = (await runCmd("ip", ["-4", "addr"], { timeoutMs: 10_000 })).stdout;
  for (let i = 0; i < 50; i++) {
    const ip = `192.0.2.${2 + (crypto.getRandomValues(new Uint8Array(1))[0] % 252)}`;
    if (used.includes(`inet ${ip}/`)) continue;
    const link = `kn${crypto.randomUUID().slice(0, 8)}`;
    for (
      const args of [
        ["link", "add", link, "type", "bridge"],
        ["addr", "add", `${ip}/32`, "dev", link],
        ["link", "set", link, "up"],
      ]
    ) {
      const r = await runCmd("ip", args, { timeoutMs: 10_000 });
      if (r.code !== 0) {
        await runCmd("ip", ["link", "del", link], { timeoutMs: 10_000 });
        throw new Error(`ip ${args.join(" ")}: ${r.stderr.trim()}`);
      }
    }
    return { link, ip };
  }
  throw new Error("no free address in 192.0.2.0/24");
}

/** A process of the control plane, its output in a log file. */
class Proc {
  readonly name: string;
  readonly log: string;
  #child: Deno.ChildProcess | undefined;
  #argv: readonly string[];

  constructor(name: string, log: string, argv: readonly string[]) {
    this.name = name;
    this.log = log;
    this.#argv = argv;
  }

  async start(): Promise<void> {
    const f = await Deno.open(this.log, { append: true, create: true, write: true });
    const [bin, ...args] = this.#argv;
    this.#child = new Deno.Command(bin, { args, stdin: "null", stdout: "piped", stderr: "piped" })
      .spawn();
    const child = this.#child;
    // Both streams into the log as they come; the file closes when both end.
    let open = 2;
    for (const s of [child.stdout, child.stderr]) {
      (async () => {
        for await (const chunk of s) {
          for (let o = 0; o < chunk.length;) o += await f.write(chunk.subarray(o));
        }
      })().catch(() => {}).finally(() => {
        if (--open === 0) f.close();
      });
    }
  }

  get pid(): number {
    return this.#child?.pid ?? 0;
  }

  /** The process ended by itself: its exit status; undefined while it runs. */
  async exited(): Promise<Deno.CommandStatus | undefined> {
    const c = this.#child;
    if (!c) return undefined;
    return await Promise.race([
      c.status,
      new Promise<undefined>((r) => setTimeout(() => r(undefined), 0)),
    ]);
  }

  /** SIGTERM, SIGKILL after `graceMs`; waits. */
  async stop(graceMs = 15_000): Promise<void> {
    const c = this.#child;
    if (!c) return;
    this.#child = undefined;
    try {
      c.kill("SIGTERM");
    } catch { /* exited */ }
    const t = setTimeout(() => {
      try {
        c.kill("SIGKILL");
      } catch { /* exited */ }
    }, graceMs);
    await c.status;
    clearTimeout(t);
  }

  /** The log's last lines, after its last error lines (klog's `E`/`F`) from before them. */
  async tail(lines = 40): Promise<string> {
    const all = (await Deno.readTextFile(this.log).catch(() => "")).split("\n");
    const errors = all.slice(0, -lines).filter((l) => /^[EF]\d{4} /.test(l)).slice(-10);
    return [...errors, ...(errors.length ? ["..."] : []), ...all.slice(-lines)].join("\n");
  }
}

/** What `kubectl get -o json` gives of a pod (the fields the suite reads). */
export interface PodObject {
  metadata: { name: string; uid: string; deletionTimestamp?: string };
  spec: { overhead?: Record<string, string>; runtimeClassName?: string };
  status: {
    phase?: string;
    podIP?: string;
    conditions?: { type: string; status: string }[];
    containerStatuses?: {
      name: string;
      ready: boolean;
      restartCount: number;
      containerID?: string;
      state: {
        running?: { startedAt: string };
        terminated?: { exitCode: number; reason?: string };
        waiting?: { reason?: string };
      };
      lastState?: { terminated?: { exitCode: number } };
    }[];
  };
}

/** The cluster. */
export class TestCluster {
  readonly base: string;
  readonly node: string;
  readonly ctd: TestContainerd;
  readonly daemons: ReadonlyMap<string, TestDaemon>;
  readonly kubeconfig: string;
  readonly #procs: Proc[];
  readonly #kubelet: Proc;
  readonly #sysctls: Map<string, string>;
  readonly #nodeLink: string;
  readonly #hostPaths: string[];

  private constructor(o: {
    base: string;
    node: string;
    ctd: TestContainerd;
    daemons: Map<string, TestDaemon>;
    kubeconfig: string;
    procs: Proc[];
    kubelet: Proc;
    sysctls: Map<string, string>;
    hostPaths: string[];
    nodeLink: string;
  }) {
    this.#nodeLink = o.nodeLink;
    this.#hostPaths = o.hostPaths;
    this.base = o.base;
    this.node = o.node;
    this.ctd = o.ctd;
    this.daemons = o.daemons;
    this.kubeconfig = o.kubeconfig;
    this.#procs = o.procs;
    this.#kubelet = o.kubelet;
    this.#sysctls = o.sysctls;
  }

  /**
   * Starts the sandboxers of `kinds`, containerd with their drop-ins, etcd, the apiserver and
   * the kubelet; waits for the node to be Ready and applies each kind's RuntimeClass.
   */
  static async start(kinds: readonly ClusterKind[]): Promise<TestCluster> {
    const base = await Deno.makeTempDir({ prefix: "k8s-" });
    await Deno.chmod(base, 0o700);
    const ctdBase = await Deno.makeTempDir({ prefix: "ctd-" });
    const hostPaths: string[] = [];
    for (const p of KUBELET_HOST_PATHS) {
      if (!(await Deno.stat(p).then(() => true, () => false))) hostPaths.push(p);
    }
    const sysctls = new Map<string, string>();
    for (const s of KUBELET_SYSCTLS) {
      const v = await Deno.readTextFile(`/proc/sys/${s}`).catch(() => undefined);
      if (v !== undefined) sysctls.set(s, v.trim());
    }
    const daemons = new Map<string, TestDaemon>();
    const procs: Proc[] = [];
    let ctd: TestContainerd | undefined;
    let nodeAddr: { link: string; ip: string } | undefined;
    const undo = async () => {
      if (nodeAddr) await runCmd("ip", ["link", "del", nodeAddr.link], { timeoutMs: 10_000 });
      for (const p of procs.reverse()) await p.stop();
      await ctd?.cleanup();
      for (const d of daemons.values()) await d.cleanup();
      await Deno.remove(ctdBase, { recursive: true }).catch(() => {});
      await Deno.remove(base, { recursive: true }).catch(() => {});
      await restoreHost(sysctls, hostPaths);
    };
    try {
      const dropIns: string[] = [];
      for (const k of kinds) {
        const dir = join(base, k.kind);
        await Deno.mkdir(dir);
        const args = ["--containerd-address", join(ctdBase, "c.sock.ttrpc")];
        if (k.config) {
          await Deno.writeTextFile(join(dir, "sandboxer.toml"), k.config);
          args.push("--config", join(dir, "sandboxer.toml"));
        }
        const d = await TestDaemon.start({ base: dir, kind: k.kind, extraArgs: args });
        daemons.set(k.kind, d);
        dropIns.push(await containerdDropIn(k.kind, d.listen, join(dir, "bin")));
      }
      ctd = await TestContainerd.start({ base: ctdBase, dropIns });

      nodeAddr = await addNodeAddress();
      const etcdPort = freePort(), peerPort = freePort(), apiPort = freePort();
      const kubeletPort = freePort();
      const pki = join(base, "pki");
      await Deno.mkdir(pki, { mode: 0o700 });
      // The service-account signing key the apiserver insists on (no token is ever issued).
      const { publicKey, privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
      await Deno.writeTextFile(
        join(pki, "sa.pub"),
        publicKey.export({ type: "spki", format: "pem" }) as string,
      );
      await Deno.writeTextFile(
        join(pki, "sa.key"),
        privateKey.export({ type: "pkcs8", format: "pem" }) as string,
        { mode: 0o600 },
      );
      const adminToken = crypto.randomUUID(), kubeletToken = crypto.randomUUID();
      await Deno.writeTextFile(
        join(pki, "tokens.csv"),
        `${adminToken},admin,admin,"system:masters"\n` +
          `${kubeletToken},system:node:kubelet,kubelet,"system:nodes"\n`,
        { mode: 0o600 },
      );
      const etcd = new Proc("etcd", join(base, "etcd.log"), [
        join(K8S_BIN, "etcd"),
        "--name=e2e",
        `--data-dir=${join(base, "etcd")}`,
        `--listen-client-urls=http://127.0.0.1:${etcdPort}`,
        `--advertise-client-urls=http://127.0.0.1:${etcdPort}`,
        `--listen-peer-urls=http://127.0.0.1:${peerPort}`,
        `--initial-advertise-peer-urls=http://127.0.0.1:${peerPort}`,
        `--initial-cluster=e2e=http://127.0.0.1:${peerPort}`,
        "--unsafe-no-fsync",
        "--log-level=warn",
      ]);
      procs.push(etcd);
      await etcd.start();
      const apiserver = new Proc("kube-apiserver", join(base, "apiserver.log"), [
        join(K8S_BIN, "kube-apiserver"),
        `--etcd-servers=http://127.0.0.1:${etcdPort}`,
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        // The `kubernetes` Service's endpoint would be the advertised loopback address: refused.
        "--endpoint-reconciler-type=none",
        `--secure-port=${apiPort}`,
        `--cert-dir=${join(pki, "apiserver")}`,
        `--token-auth-file=${join(pki, "tokens.csv")}`,
        "--authorization-mode=AlwaysAllow",
        "--service-cluster-ip-range=10.96.0.0/24",
        "--service-account-issuer=https://kubernetes.default.svc",
        `--service-account-key-file=${join(pki, "sa.pub")}`,
        `--service-account-signing-key-file=${join(pki, "sa.key")}`,
        "--disable-admission-plugins=ServiceAccount",
        "--kubelet-preferred-address-types=InternalIP",
        "--v=1",
      ]);
      procs.push(apiserver);
      await apiserver.start();
      const kubeconfig = join(base, "admin.kubeconfig");
      await Deno.writeTextFile(kubeconfig, kubeconfigYaml(apiPort, adminToken), { mode: 0o600 });
      const kubeletKubeconfig = join(base, "kubelet.kubeconfig");
      await Deno.writeTextFile(kubeletKubeconfig, kubeconfigYaml(apiPort, kubeletToken), {
        mode: 0o600,
      });
      const node = `kuasar-e2e-${base.slice(-6).toLowerCase().replace(/[^a-z0-9]/g, "x")}`;
      const kubeletDir = join(base, "kubelet");
      await Deno.mkdir(kubeletDir, { mode: 0o700 });
      const kubeletConfig = join(base, "kubelet.yaml");
      await Deno.writeTextFile(
        kubeletConfig,
        kubeletConfigYaml({
          address: nodeAddr.ip,
          port: kubeletPort,
          endpoint: `unix://${ctd.address}`,
          podLogsDir: join(base, "pod-logs"),
        }),
      );
      const kubelet = new Proc("kubelet", join(base, "kubelet.log"), [
        join(K8S_BIN, "kubelet"),
        `--config=${kubeletConfig}`,
        `--kubeconfig=${kubeletKubeconfig}`,
        `--root-dir=${kubeletDir}`,
        `--cert-dir=${join(kubeletDir, "pki")}`,
        `--hostname-override=${node}`,
        `--node-ip=${nodeAddr.ip}`,
        // The labels the RuntimeClasses schedule on (an operator sets them with kubectl label).
        `--node-labels=${kinds.map((k) => `kuasar.io/${k.kind}=true`).join(",")}`,
        "--v=2",
      ]);
      const cluster = new TestCluster({
        base,
        node,
        ctd,
        daemons,
        kubeconfig,
        procs,
        kubelet,
        sysctls,
        hostPaths,
        nodeLink: nodeAddr.link,
      });
      await cluster.#waitFor(
        "the apiserver",
        async () => (await cluster.kubectl(["get", "--raw", "/readyz"])).stdout.trim() === "ok",
        apiserver,
      );
      procs.push(kubelet);
      await kubelet.start();
      await cluster.waitNodeReady(new Date(0));
      for (const k of kinds) await cluster.kubectlOk(["apply", "-f", runtimeClassFile(k.kind)]);
      return cluster;
    } catch (e) {
      for (const p of procs) console.error(`--- ${p.name} ---\n${await p.tail()}`);
      await undo();
      throw e;
    }
  }

  async #waitFor(
    what: string,
    ok: () => Promise<boolean>,
    proc: Proc,
    timeoutMs = 60_000,
  ): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const st = await proc.exited();
      if (st) throw new Error(`${proc.name} exited (${st.code}):\n${await proc.tail()}`);
      if (await ok().catch(() => false)) return;
      await new Promise((r) => setTimeout(r, 300));
    }
    throw new Error(`timed out waiting for ${what}:\n${await proc.tail()}`);
  }

  /**
   * Waits until the kubelet reports the node Ready in a heartbeat at or after `since` (default:
   * now; a restarted kubelet has synced its pods by then).
   */
  async waitNodeReady(since = new Date()): Promise<void> {
    const after = Math.floor(since.getTime() / 1000) * 1000; // heartbeats have whole seconds
    await this.#waitFor(
      "the node to be Ready",
      async () => {
        const r = await this.kubectl([
          "get",
          "node",
          this.node,
          "-o",
          "jsonpath={.status.conditions[?(@.type=='Ready')]}",
        ]);
        const ready = JSON.parse(r.stdout || "{}") as {
          status?: string;
          lastHeartbeatTime?: string;
        };
        return ready.status === "True" && Date.parse(ready.lastHeartbeatTime ?? "") >= after;
      },
      this.#kubelet,
      120_000,
    );
  }

  /** Runs kubectl as the admin. */
  async kubectl(args: readonly string[], opts: CmdOptions = {}): Promise<CmdResult> {
    return await runCmd(join(K8S_BIN, "kubectl"), ["--kubeconfig", this.kubeconfig, ...args], {
      timeoutMs: 120_000,
      ...opts,
    });
  }

  /** kubectl that must succeed: its stdout. */
  async kubectlOk(args: readonly string[], opts: CmdOptions = {}): Promise<string> {
    const r = await this.kubectl(args, opts);
    if (r.code !== 0) {
      throw new Error(`kubectl ${args.join(" ")} failed (${r.code}): ${r.stderr.trim()}`);
    }
    return r.stdout;
  }

  /**
   * kubectl with a pseudo-terminal of `rows`×`cols` as its stdin/stdout (`exec -it`): Python's
   * pty.spawn runs a second Python that sizes its terminal, then execs kubectl (argv lists, no
   * shell). kubectl sends the size to the container's terminal through the kubelet.
   */
  async kubectlTty(
    args: readonly string[],
    opts: CmdOptions & { rows?: number; cols?: number } = {},
  ): Promise<CmdResult> {
    const size = `${opts.rows ?? 40},${opts.cols ?? 120}`;
    return await runCmd("python3", [
      "-c",
      "import os, pty, sys; sys.exit(os.waitstatus_to_exitcode(pty.spawn(sys.argv[1:])))",
      "python3",
      "-c",
      "import fcntl, os, struct, sys, termios; r, c = map(int, sys.argv[1].split(',')); " +
      "fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack('HHHH', r, c, 0, 0)); " +
      "os.execv(sys.argv[2], sys.argv[2:])",
      size,
      join(K8S_BIN, "kubectl"),
      "--kubeconfig",
      this.kubeconfig,
      ...args,
    ], { timeoutMs: 60_000, ...opts });
  }

  /**
   * kubectl that must succeed, retried while a kubelet just restarted is not serving yet or does
   * not know the pod yet (it syncs its pods from the apiserver), or while its connection to a
   * restarted containerd is in its reconnect backoff: its stdout.
   */
  async kubectlRetry(args: readonly string[], opts: CmdOptions = {}): Promise<string> {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const r = await this.kubectl(args, opts);
      if (r.code === 0) return r.stdout;
      if (
        !/pod does not exist|container not found|error dialing backend|code = Unavailable/.test(
          r.stderr,
        ) ||
        Date.now() > deadline
      ) {
        throw new Error(`kubectl ${args.join(" ")} failed (${r.code}): ${r.stderr.trim()}`);
      }
      await new Promise((res) => setTimeout(res, 500));
    }
  }

  /** `kubectl logs` polled until it matches `want` (the output may still be on its way). */
  async logsMatching(args: readonly string[], want: RegExp, timeoutMs = 30_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    let text = "";
    while (Date.now() < deadline) {
      text = (await this.kubectl(["logs", ...args])).stdout;
      if (want.test(text)) return text;
      await new Promise((r) => setTimeout(r, 300));
    }
    return text;
  }

  /** Creates an object from its JSON (`kubectl create -f -`). */
  async create(obj: unknown): Promise<void> {
    await this.kubectlOk(["create", "-f", "-"], { stdin: JSON.stringify(obj) });
  }

  /** The pod's object. */
  async pod(name: string): Promise<PodObject> {
    return JSON.parse(await this.kubectlOk(["get", "pod", name, "-o", "json"])) as PodObject;
  }

  /** Polls the pod until `ok` holds; returns it, or throws with its last state and the logs. */
  async waitPod(
    name: string,
    ok: (p: PodObject) => boolean,
    what: string,
    timeoutMs = 90_000,
  ): Promise<PodObject> {
    const deadline = Date.now() + timeoutMs;
    let last: PodObject | undefined;
    while (Date.now() < deadline) {
      last = await this.pod(name).catch(() => last);
      if (last && ok(last)) return last;
      await new Promise((r) => setTimeout(r, 300));
    }
    const events = await this.kubectl([
      "get",
      "events",
      "--field-selector",
      `involvedObject.name=${name}`,
    ]);
    throw new Error(
      `pod ${name}: timed out waiting for ${what}; last status ${
        JSON.stringify(last?.status)
      }\nevents:\n${events.stdout}\n--- kubelet ---\n${await this.#kubelet.tail(30)}`,
    );
  }

  /** Waits until the pod object is gone (deleted and torn down by the kubelet). */
  async waitGone(name: string, timeoutMs = 90_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const r = await this.kubectl(["get", "pod", name, "-o", "name"]);
      if (r.code !== 0 && /NotFound|not found/.test(r.stderr)) return;
      await new Promise((r) => setTimeout(r, 300));
    }
    throw new Error(`pod ${name} still there after ${timeoutMs} ms`);
  }

  /** Restarts the kubelet (SIGTERM, as systemd does; its pods keep running). */
  async restartKubelet(): Promise<void> {
    await this.#kubelet.stop();
    await this.#kubelet.start();
    await this.waitNodeReady();
  }

  /** The kubelet's log so far. */
  async kubeletLog(lines = 60): Promise<string> {
    return await this.#kubelet.tail(lines);
  }

  /**
   * Deletes every pod through the API and waits for the kubelet to remove them; then stops
   * everything and removes what the cluster made. Never throws; problems are logged.
   */
  async stop(): Promise<void> {
    const r = await this.kubectl([
      "delete",
      "pods",
      "--all",
      "--grace-period=1",
      "--wait=true",
      "--timeout=120s",
    ]);
    if (r.code !== 0) console.error(`[TestCluster] deleting pods: ${r.stderr.trim()}`);
    for (const p of [...this.#procs].reverse()) await p.stop();
    await this.ctd.cleanup();
    for (const d of this.daemons.values()) await d.cleanup();
    for (const mp of await mountsUnder(this.base)) {
      await runCmd("umount", ["-l", mp], { timeoutMs: 30_000 });
    }
    await Deno.remove(this.base, { recursive: true }).catch((e) =>
      console.error(`[TestCluster] removing ${this.base}: ${e}`)
    );
    await runCmd("ip", ["link", "del", this.#nodeLink], { timeoutMs: 10_000 });
    await restoreHost(this.#sysctls, this.#hostPaths);
  }
}

/** Puts back the kernel settings and removes the host paths the kubelet made. */
async function restoreHost(saved: Map<string, string>, madePaths: string[]): Promise<void> {
  for (const [k, v] of saved) {
    await Deno.writeTextFile(`/proc/sys/${k}`, v).catch(() => {});
  }
  for (const p of madePaths) await Deno.remove(p, { recursive: true }).catch(() => {});
}

/** `deploy/kubernetes/runtimeclass-<kind>.yaml`: what an operator applies. */
export function runtimeClassFile(kind: string): string {
  return new URL(`../../deploy/kubernetes/runtimeclass-${kind}.yaml`, import.meta.url).pathname;
}

function kubeconfigYaml(port: number, token: string): string {
  // The apiserver's certificate is one it made itself at start (--cert-dir): not verified.
  return [
    "apiVersion: v1",
    "kind: Config",
    "clusters:",
    "- name: e2e",
    "  cluster:",
    `    server: https://127.0.0.1:${port}`,
    "    insecure-skip-tls-verify: true",
    "users:",
    "- name: u",
    "  user:",
    `    token: ${token}`,
    "contexts:",
    "- name: e2e",
    "  context: {cluster: e2e, user: u}",
    "current-context: e2e",
    "",
  ].join("\n");
}

function kubeletConfigYaml(
  o: { address: string; port: number; endpoint: string; podLogsDir: string },
): string {
  return JSON.stringify(
    {
      apiVersion: "kubelet.config.k8s.io/v1beta1",
      kind: "KubeletConfiguration",
      address: o.address,
      port: o.port,
      readOnlyPort: 0,
      healthzPort: 0,
      containerRuntimeEndpoint: o.endpoint,
      podLogsDir: o.podLogsDir,
      // This machine: cgroup v1, cgroupfs, no systemd; swap may be on.
      cgroupDriver: "cgroupfs",
      failCgroupV1: false,
      cgroupsPerQOS: false,
      enforceNodeAllocatable: [],
      failSwapOn: false,
      authentication: {
        anonymous: { enabled: true },
        webhook: { enabled: false },
      },
      authorization: { mode: "AlwaysAllow" },
      // A shared test machine: never evict the suite's pods nor collect the test images.
      evictionHard: {
        "memory.available": "0%",
        "nodefs.available": "0%",
        "imagefs.available": "0%",
        "nodefs.inodesFree": "0%",
      },
      imageGCHighThresholdPercent: 100,
      imageGCLowThresholdPercent: 99,
      nodeStatusUpdateFrequency: "4s",
      syncFrequency: "10s",
      fileCheckFrequency: "10s",
      serializeImagePulls: false,
    },
    null,
    2,
  );
}
