/**
 * A sandboxer and a real containerd wired together, as on a node: containerd
 * imports the kind's drop-in from `deploy/containerd/` as an operator installs
 * it — the daemon's Controller socket as a proxy sandbox plugin, with two CRI
 * runtime handlers on it, `kuasar-<kind>` (FIFO IO) and `kuasar-<kind>-stream`
 * (`io_type = "streaming"`).
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { TestContainerd } from "./containerd.ts";
import { TestDaemon } from "./daemon.ts";
import { BUSYBOX_IMAGE } from "./images.ts";
import { leftovers } from "./leaks.ts";

/** A running pair. */
export interface E2E {
  readonly d: TestDaemon;
  readonly ctd: TestContainerd;
  /** Handler names: FIFO IO and streaming IO. */
  readonly fifo: string;
  readonly stream: string;
  cleanup(): Promise<void>;
}

/**
 * Starts a sandboxer of `kind` and a containerd that uses it. The sandboxer
 * comes first: it installs the shim stub containerd introspects at start-up.
 */
export async function startE2E(
  kind = "runc",
  opts: E2EOptions = {},
): Promise<E2E> {
  const base = await Deno.makeTempDir({ prefix: "k-" });
  const ctdBase = await Deno.makeTempDir({ prefix: "ctd-" });
  const sock = join(base, "sandboxer.sock");
  const fifo = `kuasar-${kind}`, stream = `kuasar-${kind}-stream`;
  const d = await TestDaemon.start({
    base,
    kind,
    entry: opts.entry,
    extraArgs: [
      "--containerd-address",
      join(ctdBase, "c.sock.ttrpc"),
      ...(opts.config ? ["--config", await writeConfig(base, opts.config)] : []),
    ],
  });
  let ctd: TestContainerd;
  try {
    ctd = opts.release === "1.7"
      ? await TestContainerd.start({
        base: ctdBase,
        release: "1.7",
        shim17Toml: await containerd17Handlers(join(base, "bin")),
      })
      : await TestContainerd.start({
        base: ctdBase,
        dropIns: [
          await containerdDropIn(kind, sock, join(base, "bin")),
          ...opts.extraDropIns ?? [],
        ],
      });
  } catch (e) {
    await d.cleanup();
    await Deno.remove(ctdBase, { recursive: true }).catch(() => {});
    throw e;
  }
  if (ctd.ttrpcAddress !== join(ctdBase, "c.sock.ttrpc")) {
    throw new Error(`containerd's ttrpc address moved to ${ctd.ttrpcAddress}`);
  }
  return {
    d,
    ctd,
    fifo,
    // containerd 1.7 has no io_type: its handler uses FIFOs.
    stream: opts.release === "1.7" ? fifo : stream,
    cleanup: async () => {
      await ctd.crictl(["rmp", "--all", "--force"], { timeoutMs: 60_000 }).catch(() => {});
      await ctd.cleanup();
      await d.cleanup();
    },
  };
}

/** Options of `startE2E`. */
export interface E2EOptions {
  /** The daemon's entry point (default: src/main.ts). */
  readonly entry?: string;
  /** A sandboxer TOML config. */
  readonly config?: string;
  /**
   * containerd 2.4 (default: the sandboxer as a proxy plugin, handlers `kuasar-<kind>` with FIFOs
   * and `kuasar-<kind>-stream`) or 1.7 (shim mode, handler `kuasar-<kind>`, as docs/engines.md
   * configures it).
   */
  readonly release?: "2.4" | "1.7";
  /** More containerd 2.x drop-ins (e.g. another runtime to compare with, in the benchmarks). */
  readonly extraDropIns?: readonly string[];
}

/**
 * `deploy/containerd/kuasar-<kind>.toml`, the containerd 2.x drop-in an operator copies to
 * /etc/containerd/conf.d, with only the node's paths replaced by the test's: the sandboxer's
 * default socket by `listen`, the default helper directory by `helperDir`.
 */
export async function containerdDropIn(
  kind: string,
  listen: string,
  helperDir: string,
): Promise<string> {
  const text = await Deno.readTextFile(
    new URL(`../../deploy/containerd/kuasar-${kind}.toml`, import.meta.url),
  );
  const socket = `"/run/${kind}-sandboxer.sock"`;
  if (!text.includes(socket) || !text.includes(DOCUMENTED_HELPER_DIR)) {
    throw new Error(`deploy/containerd/kuasar-${kind}.toml names neither ${socket} nor the stubs`);
  }
  return text.replaceAll(socket, JSON.stringify(listen))
    .replaceAll(DOCUMENTED_HELPER_DIR, helperDir.replace(/\/?$/, "/"));
}

/** The helper directory deploy/containerd/ and docs/engines.md's containerd 1.7 config name. */
const DOCUMENTED_HELPER_DIR = "/var/lib/kuasar/bin/";

/**
 * docs/engines.md's containerd 1.7 handler tables, as an operator pastes them, with only the
 * helper directory moved to the test daemon's.
 */
export async function containerd17Handlers(helperDir: string): Promise<string> {
  const doc = await Deno.readTextFile(new URL("../../docs/engines.md", import.meta.url));
  const block = [...doc.matchAll(/```toml\n([\s\S]*?)```/g)].map((m) => m[1])
    .find((b) => b.includes(`sandbox_mode = "shim"`));
  if (!block) throw new Error("docs/engines.md has no containerd 1.7 (sandbox_mode) block");
  return block.replaceAll(DOCUMENTED_HELPER_DIR, helperDir.replace(/\/?$/, "/"));
}

async function writeConfig(dir: string, text: string): Promise<string> {
  const path = join(dir, "sandboxer.toml");
  await Deno.writeTextFile(path, text);
  return path;
}

let seq = 0;

/** A pod config for crictl. */
export function podConfig(e: E2E, opts: { hostNetwork?: boolean; name?: string } = {}) {
  const name = opts.name ?? `pod${++seq}`;
  return {
    metadata: { name, namespace: "default", uid: crypto.randomUUID(), attempt: 0 },
    hostname: name,
    log_directory: join(e.ctd.base, "logs", name),
    linux: {
      cgroup_parent: e.d.cgroupParent,
      security_context: { namespace_options: { network: opts.hostNetwork ? 2 : 0, pid: 1 } },
    },
  };
}

/** A container config for crictl. */
export function containerConfig(
  name: string,
  command: string[],
  opts: { tty?: boolean; stdin?: boolean; image?: string } = {},
) {
  return {
    metadata: { name },
    image: { image: opts.image ?? BUSYBOX_IMAGE },
    command,
    log_path: `${name}.log`,
    tty: opts.tty ?? false,
    stdin: opts.stdin ?? false,
    linux: {},
  };
}

/** Polls `crictl inspect` until the container's state is `state`; returns the status. */
export async function waitState(
  e: E2E,
  id: string,
  state: string,
  timeoutMs = 30_000,
): Promise<{ state: string; exitCode: number }> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = JSON.parse(await e.ctd.crictlOk(["inspect", "--output", "json", id])) as {
      status: { state: string; exitCode?: number };
    };
    if (s.status.state === state || Date.now() > deadline) {
      return { state: s.status.state, exitCode: s.status.exitCode ?? 0 };
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** `crictl runp` + `create` + `start` of one container; returns the ids and the config paths. */
export async function runContainer(
  e: E2E,
  handler: string,
  command: string[],
  opts: { hostNetwork?: boolean; tty?: boolean; stdin?: boolean; image?: string } = {},
): Promise<{ pod: string; cid: string; podJson: string }> {
  const pc = podConfig(e, { hostNetwork: opts.hostNetwork });
  const podJson = await e.ctd.writeJson(`${pc.metadata.name}.json`, pc);
  const pod = await e.ctd.crictlOk(["runp", "--runtime", handler, podJson]);
  const ctrJson = await e.ctd.writeJson(
    `${pc.metadata.name}-c.json`,
    containerConfig("c", command, opts),
  );
  const cid = await e.ctd.crictlOk(["create", pod, ctrJson, podJson]);
  await e.ctd.crictlOk(["start", cid]);
  return { pod, cid, podJson };
}

/** Runs `fn` against a fresh sandboxer of `kind` and containerd; prints both logs on failure. */
export async function withE2E(
  kind: string,
  fn: (e: E2E) => Promise<void>,
  opts: E2EOptions = {},
): Promise<void> {
  const e = await startE2E(kind, opts);
  try {
    await fn(e);
  } catch (err) {
    console.error(`--- sandboxer log ---\n${(await e.d.logs()).split("\n").slice(-60).join("\n")}`);
    console.error(
      `--- containerd log ---\n${(await e.ctd.logs()).split("\n").slice(-60).join("\n")}`,
    );
    throw err;
  } finally {
    await e.cleanup();
  }
}

/** GETs `url` until it answers (a pod's server may still be starting); "" if it never does. */
export async function fetchWhenUp(url: string, tries = 50): Promise<string> {
  for (let i = 0; i < tries; i++) {
    const body = await fetch(url, { signal: AbortSignal.timeout(2000) })
      .then((r) => r.text(), () => "");
    if (body) return body;
    await new Promise((r) => setTimeout(r, 100));
  }
  return "";
}

/** `crictl logs` of a container, polled until it matches `want` (or 5 s pass). */
export async function logsOf(e: E2E, cid: string, want: RegExp): Promise<string> {
  let text = "";
  for (let i = 0; i < 50 && !want.test(text); i++) {
    text = (await e.ctd.crictl(["logs", cid])).stdout;
    if (!want.test(text)) await new Promise((r) => setTimeout(r, 100));
  }
  return text;
}

/** The pod's IP, from `crictl inspectp`. */
export async function podIp(e: E2E, pod: string): Promise<string> {
  return JSON.parse(await e.ctd.crictlOk(["inspectp", "--output", "json", pod])).status.network.ip;
}

/**
 * Polls `crictl inspectp` until the pod is SANDBOX_READY (after a sandboxer
 * restart containerd's gRPC client reconnects with a backoff of at most 3 s);
 * returns the last state seen.
 */
export async function waitPodReady(e: E2E, pod: string): Promise<string> {
  let state = "";
  for (let i = 0; i < 50 && state !== "SANDBOX_READY"; i++) {
    const r = await e.ctd.crictl(["inspectp", "--output", "json", pod]);
    state = r.code === 0 ? JSON.parse(r.stdout).status.state : "";
    if (state !== "SANDBOX_READY") await new Promise((res) => setTimeout(res, 200));
  }
  return state;
}

/**
 * What every sandbox kind must do for a running container started with
 * `trap 'echo bye; exit 5' TERM`: exec in the pod (its hostname), a failing
 * exec's code, stats, and a stop that runs the trap (exit 5, "bye" logged).
 */
export async function assertExecStatsStop(e: E2E, cid: string): Promise<void> {
  const { ctd } = e;
  const sync = await ctd.crictl(["exec", "-s", cid, "sh", "-c", "echo in-$(hostname)"]);
  assert.equal(sync.code, 0, sync.stderr);
  assert.match(sync.stdout.trim(), /^in-pod\d+$/);
  const failing = await ctd.crictl(["exec", "-s", cid, "sh", "-c", "exit 6"]);
  assert.match(failing.stderr, /exited with 6/);
  const stats = JSON.parse(await ctd.crictlOk(["stats", "--output", "json", "--id", cid]));
  // Usage, not the working set: containerd subtracts inactive file pages from
  // it, which for an idle container in a VM (page cache of its rootfs) can be all of it.
  const memory = stats.stats[0].memory;
  assert.ok(Number(memory.usageBytes?.value) > 0, JSON.stringify(memory));
  assert.ok(Number(memory.workingSetBytes?.value) >= 0, JSON.stringify(memory));
  await ctd.crictlOk(["stop", "--timeout", "10", cid]);
  assert.deepEqual(await waitState(e, cid, "CONTAINER_EXITED"), {
    state: "CONTAINER_EXITED",
    exitCode: 5,
  });
  assert.match(await logsOf(e, cid, /bye/), /bye/);
}

/** Runs a container that logs "bye" and exits 5 on SIGTERM (see assertExecStatsStop). */
export async function runTrappingContainer(
  e: E2E,
  handler: string,
  timeoutMs?: number,
): Promise<{ pod: string; cid: string; podJson: string }> {
  const r = await runContainer(e, handler, [
    "sh",
    "-c",
    "trap 'echo bye; exit 5' TERM; while :; do sleep 0.2; done",
  ]);
  await waitState(e, r.cid, "CONTAINER_RUNNING", timeoutMs);
  return r;
}

/** `crictl rmp --all`: no pod is left in containerd, nothing of `pods` on the node. */
export async function assertAllPodsRemoved(e: E2E, pods: string[]): Promise<void> {
  await e.ctd.crictlOk(["rmp", "--all", "--force"]);
  assert.equal(await e.ctd.crictlOk(["pods", "--quiet"]), "");
  assert.deepEqual(await leftovers(e.d, pods), []);
}

/**
 * A CNI pod serving `page` over HTTP answers from the host, and goes on
 * running, answering and taking execs after a SIGKILL and restart of the
 * sandboxer; then everything is removed.
 */
export async function assertWebPodSurvivesRestart(
  e: E2E,
  page: string,
  startTimeoutMs?: number,
): Promise<void> {
  const { ctd } = e;
  const web = await runContainer(e, e.fifo, [
    "sh",
    "-c",
    `mkdir -p /www && echo ${page} > /www/index.html && httpd -f -p 8080 -h /www`,
  ]);
  await waitState(e, web.cid, "CONTAINER_RUNNING", startTimeoutMs);
  const ip = await podIp(e, web.pod);
  const get = () => fetchWhenUp(`http://${ip}:8080/`);
  assert.equal(await get(), `${page}\n`);

  await e.d.kill9();
  await e.d.spawn();
  assert.equal(await waitPodReady(e, web.pod), "SANDBOX_READY");
  assert.equal((await waitState(e, web.cid, "CONTAINER_RUNNING")).state, "CONTAINER_RUNNING");
  const r = await ctd.crictl(["exec", "-s", web.cid, "sh", "-c", "echo still-here"]);
  assert.equal(r.stdout.trim(), "still-here", r.stderr);
  assert.equal(await get(), `${page}\n`);
  await assertAllPodsRemoved(e, [web.pod]);
}
