/**
 * A private, real containerd 2.4.2 for end-to-end tests and benchmarks, driven with crictl and
 * ctr exactly as kubelet and operators drive it. It is how we find out what containerd really
 * sends a sandboxer (the research notes are only a reading of its code), and it gives the
 * benchmarks containerd's own runc shim as the baseline.
 *
 * Each instance lives under its own short temp dir (unix socket paths are limited to 107 bytes):
 * root, state, gRPC and ttrpc sockets, shim sockets, runc root, CNI config and IPAM data, and a
 * bridge with a random name and subnet, so instances can run side by side and next to a system
 * containerd. The tools come from `scripts/install_go_tools.sh` (`KUASAR_TOOLS_CACHE`, default
 * `~/.cache/kuasar-tools`).
 *
 * ```ts
 * const ctd = await TestContainerd.start({
 *   dropIns: [await containerdDropIn("runc", daemon.listen, helperDir)], // e2e.ts
 * });
 * try {
 *   const pod = await ctd.crictlOk(["runp", "--runtime", "kuasar-runc", podJson]);
 * } finally {
 *   await ctd.cleanup();
 * }
 * ```
 *
 * @module
 */
import { join } from "node:path";
import {
  CRITEST_OFFLINE_SKIP,
  importTestImages,
  PAUSE_IMAGE,
  writeCritestImagesFile,
} from "./images.ts";

import { TOOLS_CACHE } from "./env.ts";
export { TOOLS_CACHE };
/** containerd, ctr, containerd-shim-runc-v2, crictl and critest. */
export const TOOLS_BIN = join(TOOLS_CACHE, "bin");
/** Where the CNI plugins are on Debian (containernetworking-plugins). */
export const CNI_BIN_DIR = "/usr/lib/cni";

/** Options of `TestContainerd.start`. */
export interface TestContainerdOptions {
  /**
   * containerd 2.x config files, imported (`imports`) as a node imports what an operator drops
   * into /etc/containerd/conf.d: the sandboxers' handlers (`deploy/containerd/`).
   */
  readonly dropIns?: readonly string[];
  /** Paths or globs added to the config's `imports`, as an operator's config.toml names them. */
  readonly imports?: readonly string[];
  /** CRI `default_runtime_name` (used by `crictl runp` without `--runtime`); default `runc`. */
  readonly defaultRuntime?: string;
  /** Import the test images (`images.ts`) once containerd is up; default true. */
  readonly images?: boolean;
  /** Add the CNI portmap plugin (hostPort, needs iptables); default: if iptables exists. */
  readonly portmap?: boolean;
  /** Parent of the instance's temp dir; default `/tmp` (keep it short). */
  readonly parentDir?: string;
  /** An existing (empty) directory to use as the base instead of a new temp dir. */
  readonly base?: string;
  /** TOML appended to the generated config (new tables only). */
  readonly extraToml?: string;
  /** How long containerd may take to serve CRI; default 60 s. */
  readonly startTimeoutMs?: number;
  /**
   * Which containerd: 2.4 (default; sandboxers as proxy plugins) or 1.7 (the sandboxers' shims
   * in shim mode, with `shim17Toml` as the handlers' config).
   */
  readonly release?: "2.4" | "1.7";
  /** containerd 1.7 only: the runtime tables of the kuasar handlers (docs/engines.md). */
  readonly shim17Toml?: string;
  /**
   * Runs containerd through this argv prefix (e.g. `nsenter -t <pid> -m --`: in a mount
   * namespace that shows a staging root's files at a node's paths). It must exec, not fork.
   */
  readonly exec?: readonly string[];
}

/** What a finished command printed. */
export interface CmdResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Options of one crictl or ctr run. */
export interface CmdOptions {
  /** Written to the command's stdin, which is then closed. */
  readonly stdin?: string;
  /** The command is killed after this long; default 120 s. */
  readonly timeoutMs?: number;
}

/** containerd 1.7, built by `scripts/install_go_tools.sh` apart from the 2.4 tools. */
export const CONTAINERD17_BIN = join(TOOLS_CACHE, "containerd-1.7", "bin", "containerd");
/** ctr of the same release. */
export const CONTAINERD17_CTR = join(TOOLS_CACHE, "containerd-1.7", "bin", "ctr");

/** Why the containerd 1.7 end-to-end tests cannot run here, or undefined if they can. */
export function containerd17Unavailable(): string | undefined {
  for (const bin of [CONTAINERD17_BIN, CONTAINERD17_CTR]) {
    if (!isExecutable(bin)) {
      return `${bin} is missing (run scripts/install_go_tools.sh ${TOOLS_CACHE})`;
    }
  }
  return containerdUnavailable();
}

/** Why the containerd end-to-end tests cannot run here, or undefined if they can. */
export function containerdUnavailable(): string | undefined {
  if (Deno.uid() !== 0) return "needs root (containerd, mounts, namespaces)";
  for (const t of ["containerd", "ctr", "crictl", "containerd-shim-runc-v2"]) {
    if (!isExecutable(join(TOOLS_BIN, t))) {
      return `${t} is not in ${TOOLS_BIN} (run scripts/install_go_tools.sh ${TOOLS_CACHE})`;
    }
  }
  for (const t of ["runc", "busybox", "tar", "ip", "umount"]) {
    if (!inPath(t)) return `${t} is not installed`;
  }
  for (const p of ["bridge", "host-local", "loopback"]) {
    if (!isExecutable(join(CNI_BIN_DIR, p))) {
      return `CNI plugin ${p} is not in ${CNI_BIN_DIR} (containernetworking-plugins)`;
    }
  }
  return undefined;
}

function isExecutable(path: string): boolean {
  try {
    const st = Deno.statSync(path);
    return st.isFile && ((st.mode ?? 0) & 0o111) !== 0;
  } catch {
    return false;
  }
}

function inPath(bin: string): boolean {
  const dirs = (Deno.env.get("PATH") ?? "").split(":").concat(["/usr/sbin", "/sbin"]);
  return dirs.some((d) => d && isExecutable(join(d, bin)));
}

const dec = new TextDecoder();

/** Runs `cmd args` (argv, no shell), feeding `stdin`, killing it after `timeoutMs`. */
export async function runCmd(
  cmd: string,
  args: readonly string[],
  opts: CmdOptions & { env?: Record<string, string> } = {},
): Promise<CmdResult> {
  const child = new Deno.Command(cmd, {
    args: [...args],
    stdin: opts.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    env: opts.env,
  }).spawn();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  }, opts.timeoutMs ?? 120_000);
  try {
    if (opts.stdin !== undefined) {
      const w = child.stdin.getWriter();
      await w.write(new TextEncoder().encode(opts.stdin)).catch(() => {});
      await w.close().catch(() => {});
    }
    const out = await child.output();
    const stderr = dec.decode(out.stderr) +
      (timedOut ? `\n[killed after ${opts.timeoutMs ?? 120_000} ms]` : "");
    return { code: out.code, stdout: dec.decode(out.stdout), stderr };
  } finally {
    clearTimeout(timer);
  }
}

/** The CRI runtime handlers and CNI network of a generated config. */
export interface ContainerdConfigParams {
  readonly base: string;
  readonly root: string;
  readonly state: string;
  readonly address: string;
  readonly ttrpcAddress: string;
  readonly shimSocketDir: string;
  readonly runcRoot: string;
  readonly cniConfDir: string;
  /** Files in containerd's `imports`. */
  readonly imports: readonly string[];
  readonly defaultRuntime: string;
  readonly extraToml?: string;
}

const q = (s: string) => JSON.stringify(s); // a TOML basic string (paths, names)

/** The containerd config (version 3) of a test instance. */
export function containerdConfig(p: ContainerdConfigParams): string {
  const rt = `plugins."io.containerd.cri.v1.runtime"`;
  const lines = [
    "# generated by tests/support/containerd.ts",
    "version = 3",
    ...(p.imports.length ? [`imports = [${p.imports.map(q).join(", ")}]`] : []),
    `root = ${q(p.root)}`,
    `state = ${q(p.state)}`,
    `required_plugins = ["io.containerd.grpc.v1.cri"]`,
    `# NRI would listen on the host-wide /var/run/nri/nri.sock`,
    `disabled_plugins = ["io.containerd.nri.v1.nri"]`,
    "",
    "[grpc]",
    `  address = ${q(p.address)}`,
    "",
    "[ttrpc]",
    `  address = ${q(p.ttrpcAddress)}`,
    "",
    "[debug]",
    `  level = "debug"`,
    "",
  ];
  lines.push(
    `[plugins."io.containerd.cri.v1.images"]`,
    `  snapshotter = "overlayfs"`,
    `  [plugins."io.containerd.cri.v1.images".pinned_images]`,
    `    sandbox = ${q(PAUSE_IMAGE)}`,
    "",
    `[${rt}]`,
    `  disable_apparmor = true`,
    `  netns_mounts_under_state_dir = true`,
    `  # no CAP_SYS_RESOURCE in a container: never ask for an oom_score_adj below containerd's`,
    `  restrict_oom_score_adj = true`,
    `  [${rt}.containerd]`,
    `    default_runtime_name = ${q(p.defaultRuntime)}`,
    `    [${rt}.containerd.runtimes.runc]`,
    `      runtime_type = "io.containerd.runc.v2"`,
    `      [${rt}.containerd.runtimes.runc.options]`,
    `        Root = ${q(p.runcRoot)}`,
    `        SystemdCgroup = false`,
  );
  lines.push(
    `  [${rt}.cni]`,
    `    bin_dirs = [${q(CNI_BIN_DIR)}]`,
    `    conf_dir = ${q(p.cniConfDir)}`,
    "",
    `[plugins."io.containerd.grpc.v1.cri"]`,
    `  disable_tcp_service = true`,
    `  stream_server_address = "127.0.0.1"`,
    `  stream_server_port = "0"`,
    "",
    `[plugins."io.containerd.shim.v1.manager"]`,
    `  socket_dir = ${q(p.shimSocketDir)}`,
    "",
  );
  if (p.extraToml) lines.push(p.extraToml, "");
  return lines.join("\n");
}

/**
 * The containerd 1.7 config (version 2) of a test instance: CRI's sandbox server (the process
 * runs with ENABLE_CRI_SANDBOXES=1) with the kuasar handlers of `shim17Toml`, which must be
 * `[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.<name>]` tables.
 */
export function containerd17Config(p: ContainerdConfigParams & { shim17Toml: string }): string {
  const cri = `plugins."io.containerd.grpc.v1.cri"`;
  return [
    "# generated by tests/support/containerd.ts",
    "version = 2",
    `root = ${q(p.root)}`,
    `state = ${q(p.state)}`,
    `required_plugins = ["io.containerd.grpc.v1.cri"]`,
    `disabled_plugins = ["io.containerd.nri.v1.nri"]`,
    "",
    "[grpc]",
    `  address = ${q(p.address)}`,
    "",
    "[ttrpc]",
    `  address = ${q(p.ttrpcAddress)}`,
    "",
    "[debug]",
    `  level = "debug"`,
    "",
    `[${cri}]`,
    `  disable_tcp_service = true`,
    `  stream_server_address = "127.0.0.1"`,
    `  stream_server_port = "0"`,
    `  sandbox_image = ${q(PAUSE_IMAGE)}`,
    `  disable_apparmor = true`,
    `  netns_mounts_under_state_dir = true`,
    `  restrict_oom_score_adj = true`,
    `  [${cri}.containerd]`,
    `    snapshotter = "overlayfs"`,
    `    default_runtime_name = "runc"`,
    `    [${cri}.containerd.runtimes.runc]`,
    `      runtime_type = "io.containerd.runc.v2"`,
    `      [${cri}.containerd.runtimes.runc.options]`,
    `        Root = ${q(p.runcRoot)}`,
    `  [${cri}.cni]`,
    `    bin_dir = ${q(CNI_BIN_DIR)}`,
    `    conf_dir = ${q(p.cniConfDir)}`,
    "",
    "# the kuasar handlers, as docs/engines.md gives them",
    p.shim17Toml.trim(),
    "",
    ...(p.extraToml ? [p.extraToml, ""] : []),
  ].join("\n");
}

/** The CNI network of an instance (containerd adds loopback itself: `cni.WithLoNetwork`). */
export function cniConflist(o: {
  name: string;
  bridge: string;
  subnet: string;
  ipamDataDir: string;
  portmap: boolean;
}): string {
  const plugins: Record<string, unknown>[] = [{
    type: "bridge",
    bridge: o.bridge,
    isGateway: true,
    ipMasq: false,
    hairpinMode: true,
    ipam: {
      type: "host-local",
      ranges: [[{ subnet: o.subnet }]],
      routes: [{ dst: "0.0.0.0/0" }],
      dataDir: o.ipamDataDir,
    },
  }];
  if (o.portmap) plugins.push({ type: "portmap", capabilities: { portMappings: true } });
  return JSON.stringify({ cniVersion: "1.0.0", name: o.name, plugins }, null, 2) + "\n";
}

async function sh(cmd: string, ...args: string[]): Promise<CmdResult> {
  return await runCmd(cmd, args, { timeoutMs: 30_000 });
}

/** A random /24 in 10.0.0.0/8 that no local address or route uses, and a free bridge name. */
async function pickNetwork(): Promise<{ bridge: string; subnet: string }> {
  const used = (await sh("ip", "-4", "addr")).stdout + (await sh("ip", "-4", "route")).stdout;
  const links = (await sh("ip", "-o", "link")).stdout;
  for (let i = 0; i < 100; i++) {
    const [a, b] = crypto.getRandomValues(new Uint8Array(2));
    const second = 100 + (a % 150); // 10.100.x.0 – 10.249.x.0
    const prefix = `10.${second}.${b}.`;
    const bridge = `kt${crypto.randomUUID().replaceAll("-", "").slice(0, 8)}`;
    if (
      !used.includes(prefix) && !used.includes(`10.${second}.0.0/16`) && !links.includes(bridge)
    ) {
      return { bridge, subnet: `${prefix}0/24` };
    }
  }
  throw new Error("no free 10.x.y.0/24 subnet found");
}

/** A directory's entries; none if it does not exist. */
async function listDir(dir: string): Promise<Deno.DirEntry[]> {
  try {
    return await Array.fromAsync(Deno.readDir(dir));
  } catch {
    return [];
  }
}

/** Decodes a mountinfo path (`\040` for a space, …). */
function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Mount points at or under `dir`, deepest first. */
export async function mountsUnder(dir: string): Promise<string[]> {
  const info = await Deno.readTextFile("/proc/self/mountinfo");
  const out: string[] = [];
  for (const line of info.split("\n")) {
    const field = line.split(" ")[4];
    if (!field) continue;
    const mp = unescapeMount(field);
    if (mp === dir || mp.startsWith(dir + "/")) out.push(mp);
  }
  return out.sort((x, y) => y.length - x.length);
}

/**
 * Copies a child's output into a log file as it comes (`pipeTo` a file's `writable` only showed
 * the text once the child had exited, which is too late for a log read during a test).
 */
function appendTo(stream: ReadableStream<Uint8Array>, path: string): void {
  (async () => {
    const f = await Deno.open(path, { append: true, create: true, write: true });
    try {
      for await (const chunk of stream) {
        for (let off = 0; off < chunk.length;) off += await f.write(chunk.subarray(off));
      }
    } finally {
      f.close();
    }
  })().catch(() => {});
}

/** Pids of processes run with `-address <address>` (shims of that containerd) and descendants. */
async function shimsOf(address: string): Promise<number[]> {
  const parent = new Map<number, number>();
  const roots: number[] = [];
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    const pid = Number(e.name);
    if (pid === Deno.pid) continue;
    try {
      const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
      parent.set(pid, Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
      const argv = (await Deno.readTextFile(`/proc/${pid}/cmdline`)).split("\0");
      if (argv.some((a, i) => a === address && argv[i - 1] === "-address")) roots.push(pid);
    } catch { /* exited */ }
  }
  const found = new Set(roots);
  let grew = true;
  while (grew) {
    grew = false;
    for (const [pid, ppid] of parent) {
      if (!found.has(pid) && found.has(ppid)) {
        found.add(pid);
        grew = true;
      }
    }
  }
  return [...found];
}

/** A containerd 2.4.2 process under test, with crictl and ctr pointed at it. */
export class TestContainerd {
  /** The instance's temp dir; everything it writes is below it. */
  readonly base: string;
  readonly root: string;
  readonly state: string;
  /** containerd's gRPC (and CRI) socket path. */
  readonly address: string;
  /** containerd's ttrpc socket path (events; a sandboxer's `--containerd-address`). */
  readonly ttrpcAddress: string;
  readonly configPath: string;
  readonly logFile: string;
  readonly cniConfDir: string;
  /** The CNI bridge of this instance and its subnet. */
  readonly bridge: string;
  readonly subnet: string;
  readonly containerdBin: string;
  readonly release: "2.4" | "1.7";
  readonly ctrBin: string;
  readonly crictlBin = join(TOOLS_BIN, "crictl");
  /** crictl's config file (endpoints), also usable as `crictl --config` by hand. */
  readonly crictlConfig: string;
  readonly #env: Record<string, string>;
  readonly #startTimeoutMs: number;
  #child: Deno.ChildProcess | undefined;
  #exited: Promise<Deno.CommandStatus> | undefined;

  private constructor(
    base: string,
    net: { bridge: string; subnet: string },
    opts: TestContainerdOptions,
  ) {
    this.base = base;
    this.root = join(base, "root");
    this.state = join(base, "state");
    this.address = join(base, "c.sock");
    this.ttrpcAddress = join(base, "c.sock.ttrpc");
    this.configPath = join(base, "config.toml");
    this.logFile = join(base, "containerd.log");
    this.cniConfDir = join(base, "cni");
    this.crictlConfig = join(base, "crictl.yaml");
    this.bridge = net.bridge;
    this.subnet = net.subnet;
    // containerd resolves shims in its cwd, then PATH, then next to its own binary: the runc shim
    // of the same release before Debian's 1.6 one in /usr/bin. The kuasar handlers name their
    // stubs by absolute path (deploy/containerd/), as on a node, so nothing else is added.
    const path = [TOOLS_BIN, Deno.env.get("PATH") ?? "/usr/sbin:/usr/bin:/sbin:/bin"].join(":");
    this.release = opts.release ?? "2.4";
    this.containerdBin = this.release === "1.7" ? CONTAINERD17_BIN : join(TOOLS_BIN, "containerd");
    // ctr 2.x imports through the transfer service, whose images containerd 1.7's CRI never sees.
    this.ctrBin = this.release === "1.7" ? CONTAINERD17_CTR : join(TOOLS_BIN, "ctr");
    // containerd 1.7 serves sandbox_mode = "shim" only from its experimental sandbox CRI server.
    this.#env = this.release === "1.7" ? { PATH: path, ENABLE_CRI_SANDBOXES: "1" } : { PATH: path };
    this.#startTimeoutMs = opts.startTimeoutMs ?? 60_000;
    this.#exec = opts.exec ?? [];
  }

  /** Writes the config, starts containerd and waits until CRI serves (and imports the images). */
  static async start(opts: TestContainerdOptions = {}): Promise<TestContainerd> {
    const parent = opts.parentDir ?? "/tmp";
    const base = opts.base ?? await Deno.makeTempDir({ dir: parent, prefix: "ctd-" });
    // shim sockets are <socket_dir>/<64 hex>; a unix socket path has at most 107 bytes
    if (join(base, "s", "x".repeat(64)).length > 107) {
      await Deno.remove(base);
      throw new Error(`${base} is too long for containerd's unix sockets`);
    }
    const ctd = new TestContainerd(base, await pickNetwork(), opts);
    try {
      await ctd.#writeConfig(opts);
      await ctd.#spawn();
      if (opts.images ?? true) await ctd.importImages();
      return ctd;
    } catch (e) {
      await ctd.cleanup();
      throw e;
    }
  }

  async #writeConfig(opts: TestContainerdOptions): Promise<void> {
    const shimSocketDir = join(this.base, "s");
    for (
      const d of [this.root, this.state, this.cniConfDir, shimSocketDir, join(this.base, "logs")]
    ) {
      await Deno.mkdir(d, { recursive: true, mode: 0o700 });
    }
    await Deno.chmod(this.base, 0o711);
    const portmap = opts.portmap ?? inPath("iptables");
    await Deno.writeTextFile(
      join(this.cniConfDir, "10-kuasar-test.conflist"),
      cniConflist({
        name: `kuasar-test-${this.bridge}`,
        bridge: this.bridge,
        subnet: this.subnet,
        ipamDataDir: join(this.base, "ipam"),
        portmap,
      }),
    );
    const imports: string[] = [...opts.imports ?? []];
    if (opts.dropIns?.length) {
      const dir = join(this.base, "conf.d");
      await Deno.mkdir(dir, { mode: 0o700 });
      for (const [i, text] of opts.dropIns.entries()) {
        const path = join(dir, `${i}.toml`);
        imports.push(path);
        await Deno.writeTextFile(path, text, { mode: 0o600 });
      }
    }
    const params = {
      base: this.base,
      root: this.root,
      state: this.state,
      address: this.address,
      ttrpcAddress: this.ttrpcAddress,
      shimSocketDir,
      runcRoot: join(this.base, "runc"),
      cniConfDir: this.cniConfDir,
      imports,
      defaultRuntime: opts.defaultRuntime ?? "runc",
      extraToml: opts.extraToml,
    };
    await Deno.writeTextFile(
      this.configPath,
      this.release === "1.7"
        ? containerd17Config({ ...params, shim17Toml: opts.shim17Toml ?? "" })
        : containerdConfig(params),
    );
    const endpoint = `unix://${this.address}`;
    await Deno.writeTextFile(
      this.crictlConfig,
      `runtime-endpoint: ${endpoint}\nimage-endpoint: ${endpoint}\ntimeout: 60\n`,
    );
  }

  /** The generated config file's text. */
  async config(): Promise<string> {
    return await Deno.readTextFile(this.configPath);
  }

  /** Whether the containerd process is running. */
  get running(): boolean {
    return this.#child !== undefined;
  }

  /** containerd's pid (0 when stopped). */
  get pid(): number {
    return this.#child?.pid ?? 0;
  }

  readonly #exec: readonly string[];

  async #spawn(): Promise<void> {
    const [bin, ...prefix] = [...this.#exec, this.containerdBin];
    const child = new Deno.Command(bin, {
      args: [...prefix, "--config", this.configPath, "--log-level", "debug"],
      cwd: this.base,
      env: this.#env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#child = child;
    this.#exited = child.status;
    appendTo(child.stdout, this.logFile);
    appendTo(child.stderr, this.logFile);
    const deadline = Date.now() + this.#startTimeoutMs;
    let last = "";
    while (Date.now() < deadline) {
      const st = await Promise.race([
        this.#exited,
        new Promise<undefined>((r) => setTimeout(() => r(undefined), 200)),
      ]);
      if (st) {
        this.#child = undefined;
        throw new Error(`containerd exited (${st.code}) during start-up:\n${await this.#tail()}`);
      }
      if (!(await Deno.stat(this.address).then(() => true, () => false))) continue;
      const r = await this.crictl(["--max-retries", "0", "info"], { timeoutMs: 10_000 })
        .catch((e) => ({ code: -1, stdout: "", stderr: String(e) }));
      last = r.stderr || r.stdout;
      if (r.code === 0 && this.#criReady(r.stdout)) return;
    }
    throw new Error(
      `containerd did not serve CRI within ${this.#startTimeoutMs} ms (${last.trim()}):\n` +
        await this.#tail(),
    );
  }

  /** `crictl info` says RuntimeReady and NetworkReady (the CNI config is loaded). */
  #criReady(info: string): boolean {
    try {
      const conds = (JSON.parse(info) as {
        status?: { conditions?: { type: string; status: boolean }[] };
      }).status?.conditions ?? [];
      return ["RuntimeReady", "NetworkReady"].every((t) =>
        conds.some((c) => c.type === t && c.status)
      );
    } catch {
      return false;
    }
  }

  async #tail(lines = 60): Promise<string> {
    return (await this.logs()).split("\n").slice(-lines).join("\n");
  }

  /** containerd's log so far (debug level; shims' stderr too). */
  async logs(): Promise<string> {
    return await Deno.readTextFile(this.logFile).catch(() => "");
  }

  /** Imports the test images (`images.ts`) into the `k8s.io` namespace. */
  async importImages(): Promise<void> {
    await importTestImages(this.ctrBin, this.address);
  }

  /**
   * Runs crictl against this containerd. Global flags go before `args`, so `args` starts with
   * the subcommand (or with more global flags).
   */
  async crictl(args: readonly string[], opts: CmdOptions = {}): Promise<CmdResult> {
    const timeoutMs = opts.timeoutMs ?? 120_000;
    const endpoint = `unix://${this.address}`;
    return await runCmd(this.crictlBin, [
      "--config",
      this.crictlConfig,
      "--runtime-endpoint",
      endpoint,
      "--image-endpoint",
      endpoint,
      "--timeout",
      `${Math.max(1, Math.ceil(timeoutMs / 1000))}s`,
      ...args,
    ], { ...opts, timeoutMs: timeoutMs + 5_000 });
  }

  /**
   * crictl with a pseudo-terminal as its stdin/stdout (for `exec -t`), made
   * by Python's pty.spawn with an argv list (no shell).
   */
  async crictlTty(args: readonly string[], opts: CmdOptions = {}): Promise<CmdResult> {
    const endpoint = `unix://${this.address}`;
    return await runCmd("python3", [
      "-c",
      "import os, pty, sys; sys.exit(os.waitstatus_to_exitcode(pty.spawn(sys.argv[1:])))",
      this.crictlBin,
      "--config",
      this.crictlConfig,
      "--runtime-endpoint",
      endpoint,
      "--image-endpoint",
      endpoint,
      ...args,
    ], { ...opts, timeoutMs: opts.timeoutMs ?? 60_000 });
  }

  /** crictl that must succeed: its trimmed stdout, or an error with its stderr. */
  async crictlOk(args: readonly string[], opts: CmdOptions = {}): Promise<string> {
    const r = await this.crictl(args, opts);
    if (r.code !== 0) {
      throw new Error(`crictl ${args.join(" ")} failed (${r.code}): ${r.stderr.trim()}`);
    }
    return r.stdout.trim();
  }

  /** Runs ctr against this containerd, in `namespace` (default `k8s.io`, CRI's). */
  async ctr(
    args: readonly string[],
    opts: CmdOptions & { namespace?: string } = {},
  ): Promise<CmdResult> {
    return await runCmd(this.ctrBin, [
      "--address",
      this.address,
      "--namespace",
      opts.namespace ?? "k8s.io",
      ...args,
    ], opts);
  }

  /**
   * Runs critest against this containerd with the local test images, skipping what cannot pass
   * offline (`CRITEST_OFFLINE_SKIP`) unless `args` has its own `--ginkgo.skip`. E.g.
   * `ctd.critest(["-runtime-handler", "kuasar-runc", "--ginkgo.focus", "PodSandbox"])`.
   */
  async critest(args: readonly string[], opts: CmdOptions = {}): Promise<CmdResult> {
    const images = join(this.base, "critest-images.yaml");
    await writeCritestImagesFile(images);
    const endpoint = `unix://${this.address}`;
    const skip = args.some((a) => a.startsWith("--ginkgo.skip") || a.startsWith("-ginkgo.skip"))
      ? []
      : [`--ginkgo.skip=${CRITEST_OFFLINE_SKIP}`];
    return await runCmd(join(TOOLS_BIN, "critest"), [
      "-config",
      this.crictlConfig,
      "-runtime-endpoint",
      endpoint,
      "-image-endpoint",
      endpoint,
      "-test-images-file",
      images,
      ...skip,
      ...args,
    ], { timeoutMs: 1_800_000, ...opts });
  }

  /** Writes `value` as JSON to `<base>/<name>` (pod and container configs) and returns the path. */
  async writeJson(name: string, value: unknown): Promise<string> {
    const p = join(this.base, name);
    await Deno.writeTextFile(p, JSON.stringify(value, null, 2));
    return p;
  }

  /** SIGTERM, then SIGKILL after `graceMs`; waits for the exit. Shims and pods keep running. */
  async stop(graceMs = 20_000): Promise<Deno.CommandStatus | undefined> {
    const child = this.#child;
    if (!child) return undefined;
    this.#child = undefined;
    try {
      child.kill("SIGTERM");
    } catch { /* already exited */ }
    const timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* exited */ }
    }, graceMs);
    try {
      return await this.#exited;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Stops containerd and starts it again on the same config and directories. */
  async restart(): Promise<void> {
    await this.stop();
    await this.#spawn();
  }

  /** rmdir the cgroups of tasks whose bundles are still there (their shims were killed). */
  async #removeTaskCgroups(): Promise<void> {
    const bundles = join(this.state, "io.containerd.runtime.v2.task");
    const paths: string[] = [];
    for (const ns of await listDir(bundles)) {
      for (const t of await listDir(join(bundles, ns.name))) {
        try {
          const spec = JSON.parse(
            await Deno.readTextFile(join(bundles, ns.name, t.name, "config.json")),
          ) as { linux?: { cgroupsPath?: string } };
          const cg = spec.linux?.cgroupsPath;
          if (cg && cg.startsWith("/") && !cg.includes(":")) paths.push(cg);
        } catch { /* no spec */ }
      }
    }
    if (!paths.length) return;
    const hierarchies = ["/sys/fs/cgroup"];
    for (const e of await listDir("/sys/fs/cgroup")) {
      if (e.isDirectory) hierarchies.push(join("/sys/fs/cgroup", e.name));
    }
    for (const h of hierarchies) {
      for (const cg of paths) await Deno.remove(join(h, cg)).catch(() => {});
    }
  }

  /** Pids of this instance's shim processes (run with its `-address`) and their descendants. */
  async shimPids(): Promise<number[]> {
    return await shimsOf(this.address);
  }

  /**
   * Removes everything: every pod (through CRI, while containerd still runs), containerd, any
   * shim of this instance still alive and its children, every mount under the base dir, the
   * bridge, the base dir. Never throws; problems are logged.
   */
  async cleanup(): Promise<void> {
    if (this.#child) {
      const r = await this.crictl(["rmp", "--all", "--force"], { timeoutMs: 120_000 });
      if (r.code !== 0) console.error(`[TestContainerd] crictl rmp -fa: ${r.stderr.trim()}`);
    }
    await this.stop();
    // Shims outlive containerd by design; any still here belongs to a pod rmp could not remove.
    const left = await shimsOf(this.address);
    for (const pid of left) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* gone */ }
    }
    if (left.length) await new Promise((r) => setTimeout(r, 200));
    await this.#removeTaskCgroups();
    for (let pass = 0; pass < 3; pass++) {
      const mounts = await mountsUnder(this.base);
      if (!mounts.length) break;
      for (const mp of mounts) {
        const r = await sh("umount", mp);
        if (r.code !== 0 && pass > 0) await sh("umount", "-l", mp);
      }
    }
    await sh("ip", "link", "del", this.bridge);
    try {
      await Deno.remove(this.base, { recursive: true });
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) {
        console.error(`[TestContainerd] removing ${this.base}: ${e}`);
      }
    }
  }
}
