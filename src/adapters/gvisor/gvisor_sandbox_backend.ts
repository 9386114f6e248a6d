/**
 * The gVisor sandbox: a pod is one runsc sandbox. Its root container runs the
 * helper's `pause` from a rootfs the sandboxer provides (no pause image to
 * pull), in the pod's CNI netns; containers join it as subcontainers.
 *
 * The root container is made and started by `runsc run --detach` under a
 * monitor in waiter mode: the monitor then asks the sandbox for the root
 * container's exit (`kuasar-helper sandbox-wait`, `runsc wait` its fallback)
 * and records it, so a restarted daemon still learns how the pod ended.
 *
 * @module
 */
import { join } from "node:path";
import { InternalError } from "../../domain/errors.ts";
import type { OciSpec } from "../../domain/oci.ts";
import type { SandboxExit, SandboxRecord } from "../../domain/sandbox.ts";
import { podSysctls } from "../../domain/sysctls.ts";
import type { StartedProcess, StoredAnyBytes } from "../../ports/container_runtime.ts";
import { log } from "../../lib/log.ts";
import {
  cgroupMetrics,
  cgroupPathsFor,
  cgroupPathsOf,
  cgroupProcesses,
  removeCgroup,
} from "../os/cgroups.ts";
import { ProcessStartError, type Supervisor } from "../../ports/supervisor.ts";
import { PodProcessBackend } from "../supervisor/pod_process_backend.ts";
import type { PodProcessState } from "../supervisor/pod_holders.ts";
import { holderToken } from "../supervisor/process_tokens.ts";
import { lastRuntimeError, type OciRuntimeCli } from "../oci/runtime_cli.ts";
import type { StateLayout } from "../os/state_layout.ts";
import { unmountAll } from "../os/mounts.ts";

/** What the gVisor sandbox backend needs. */
export interface GvisorSandboxBackendOptions {
  /** The sandboxer's --dir (a pod's files live in `<dir>/<id>/`). */
  readonly dir: string;
  /** Where the daemon's own entries under --dir are (the shared pause rootfs). */
  readonly layout: StateLayout;
  readonly supervisor: Supervisor;
  readonly runsc: OciRuntimeCli;
}

const SIGTERM = 15, SIGKILL = 9;

/** CRI annotations runsc reads to tell a sandbox's root container from its subcontainers. */
export const CONTAINER_TYPE = "io.kubernetes.cri.container-type";
export const SANDBOX_ID = "io.kubernetes.cri.sandbox-id";

/**
 * The monitor's waiter of container `id` in sandbox `sandboxId`: the helper
 * asks the sandbox's control socket (one small C process per container where
 * `runsc wait` is a Go one, ~3 MiB of PSS each), and runs `runsc wait` when
 * it cannot (native/sandbox_wait.c).
 */
export function sandboxWaitArgv(
  helper: string,
  runsc: OciRuntimeCli,
  sandboxId: string,
  id: string,
): string[] {
  return [
    helper,
    "sandbox-wait",
    runsc.opts.root,
    sandboxId,
    id,
    "--",
    ...runsc.global(),
    "wait",
    id,
  ];
}

/** The OCI spec of a pod's root container. */
export function rootContainerSpec(
  record: SandboxRecord<GvisorPodState>,
  rootfs: string,
  cgroupsPath: string,
): OciSpec {
  const namespaces: { type: string; path?: string }[] = [
    { type: "pid" },
    { type: "ipc" },
    { type: "uts" },
    { type: "mount" },
  ];
  if (record.netnsPath) namespaces.push({ type: "network", path: record.netnsPath });
  const sysctl = Object.fromEntries(podSysctls(record.pod));
  return {
    ociVersion: "1.0.2",
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args: ["/pause", "pause"],
      env: ["PATH=/"],
      cwd: "/",
    },
    root: { path: rootfs, readonly: true },
    hostname: record.pod.network === "node"
      ? Deno.hostname()
      : record.pod.hostname || record.id.slice(0, 12),
    mounts: [{ destination: "/proc", type: "proc", source: "proc" }],
    annotations: { [CONTAINER_TYPE]: "sandbox", [SANDBOX_ID]: record.id },
    linux: { namespaces, cgroupsPath, ...(Object.keys(sysctl).length ? { sysctl } : {}) },
  };
}

/**
 * runsc's network mode for a pod, overriding the configured one where the pod
 * decides: a host-network pod uses the host's stack; a pod without a netns
 * (no CNI) gets loopback only, as runsc will not run its own stack in the
 * host's netns.
 */
export function networkFlags(record: SandboxRecord<GvisorPodState>): string[] {
  if (record.pod.network === "node") return ["--network=host"];
  if (!record.netnsPath) return ["--network=none"];
  return [];
}

/** What an operator can do about a known runsc failure. */
function hintFor(why: string): string {
  if (why.includes("cannot run with network enabled in root network namespace")) {
    // runsc before 2023 takes /proc/sys/net/core/rmem_default for a sign of
    // the root netns; kernels since 5.x have it in every netns.
    return ' (this runsc mistakes the pod\'s netns for the root one on newer kernels: set [gvisor] network = "host", or install a newer runsc)';
  }
  return "";
}

/** What a gVisor pod keeps in its record. */
export interface GvisorPodState extends PodProcessState {
  /** The sandbox's cgroup, recorded before runsc makes it. */
  cgroupsPath?: string;
}

/** Pod lifecycle for the gVisor sandboxer. */
export class GvisorSandboxBackend
  extends PodProcessBackend<GvisorSandboxBackendOptions, GvisorPodState> {
  #log = log.with({ component: "gvisor-sandbox" });

  /** The bundle of a pod's root container. */
  #bundle(id: string): string {
    return join(this.opts.dir, id, "sandbox");
  }

  /** The read-only rootfs every pod's root container shares: just the pause binary. */
  async #pauseRootfs(): Promise<string> {
    const root = this.opts.layout.path("pauseRootfs");
    const bin = join(root, "pause");
    const want = (await Deno.stat(this.opts.supervisor.binary)).size;
    const have = await Deno.stat(bin).then((s) => s.size, () => -1);
    if (have !== want) {
      await Deno.mkdir(join(root, "proc"), { recursive: true, mode: 0o755 });
      const tmp = `${bin}.${crypto.randomUUID()}`;
      await Deno.copyFile(this.opts.supervisor.binary, tmp);
      await Deno.chmod(tmp, 0o755);
      await Deno.rename(tmp, bin);
    }
    return root;
  }

  /** Starts under way, and a release of runsc's null-netns under way (see #releaseNullNetns). */
  #starting = 0;
  #releasing?: Promise<void>;

  async start(record: SandboxRecord<GvisorPodState>): Promise<StartedProcess> {
    this.#starting++;
    let failed = true;
    try {
      await this.#releasing;
      const started = await this.#start(record);
      failed = false;
      return started;
    } finally {
      this.#starting--;
      // A failed Start may have made the root's null-netns for its sandbox alone.
      if (failed) await this.#releaseNullNetns();
    }
  }

  async #start(record: SandboxRecord<GvisorPodState>): Promise<StartedProcess> {
    const runsc = this.opts.runsc;
    const bundle = this.#bundle(record.id);
    await Deno.mkdir(bundle, { recursive: true, mode: 0o700 });
    const cgroupsPath = join(record.pod.cgroupParent || "/kuasar-gvisor", record.id);
    const spec = rootContainerSpec(record, await this.#pauseRootfs(), cgroupsPath);
    await Deno.writeTextFile(join(bundle, "config.json"), JSON.stringify(spec));
    const pidFile = join(bundle, "pid");
    const flags = networkFlags(record);
    // Recorded before runsc makes the cgroup: a Start failing from here on
    // leaves it (in every hierarchy), and Shutdown's cleanup must find it.
    record.backend = { ...record.backend, cgroupsPath };
    const token = holderToken(record.id);
    const startLog = join(bundle, "start.log.json");
    let h;
    try {
      h = await this.opts.supervisor.startMonitored({
        token,
        pidFile,
        monitorLog: join(bundle, "monitor.log"),
        // One runsc process where create + start take two (each a Go start-up, ~10% of a
        // pod's start): it returns once the root container runs, its sandbox left behind.
        argv: () => [
          ...runsc.global(startLog),
          ...flags,
          "run",
          "--detach",
          "--bundle",
          bundle,
          "--pid-file",
          pidFile,
          record.id,
        ],
        waitArgv: sandboxWaitArgv(this.opts.supervisor.binary, runsc, record.id, record.id),
      });
    } catch (e) {
      await this.#destroy(record);
      if (!(e instanceof ProcessStartError)) throw e;
      const why = await lastRuntimeError(startLog) ?? e.message;
      throw new InternalError(`runsc cannot start sandbox "${record.id}": ${why}${hintFor(why)}`);
    }
    record.backend = { ...record.backend, holderPid: h.helperPid };
    this.holders.watch(record.id, h.helperPid, h.pid);
    return { pid: h.pid };
  }

  stop(record: SandboxRecord<GvisorPodState>, timeoutMs: number): Promise<SandboxExit> {
    return this.holders.stop(record, timeoutMs, async (_pid, sig) => {
      const signal = sig === "SIGTERM" ? SIGTERM : SIGKILL;
      await this.opts.runsc.kill(record.id, signal, false).catch((e) =>
        this.#log.debug("signalling the sandbox failed", { sandbox: record.id, error: e })
      );
    });
  }

  async cleanup(record: SandboxRecord<GvisorPodState>): Promise<void> {
    await this.#deleteSandbox(record);
    await this.holders.waitGone(record.id);
    // A monitor of a Start that never completed goes too.
    await this.holders.forget(record.id);
    await this.#removeCgroup(record);
    await this.#releaseNullNetns();
  }

  /** Destroys the sandbox of a failed Start, and its cgroup. */
  async #destroy(record: SandboxRecord<GvisorPodState>): Promise<void> {
    await this.#deleteSandbox(record);
    await this.#removeCgroup(record);
  }

  /**
   * runsc since 2023 keeps one bind mount of an empty netns in its root,
   * `null-netns`, for every sandbox's gofers, made by the first create and
   * never removed by runsc. Once the root holds no sandbox (no runsc state
   * file) and no Start is under way, it is taken down (a Start waits for
   * that), so that a root without pods is a plain directory again.
   */
  #releaseNullNetns(): Promise<void> {
    if (this.#starting > 0 || this.#releasing) return this.#releasing ?? Promise.resolve();
    const root = this.opts.runsc.opts.root;
    const nullNetns = join(root, "null-netns");
    this.#releasing = (async () => {
      try {
        for await (const e of Deno.readDir(root)) if (e.name.endsWith(".state")) return;
        await unmountAll(nullNetns);
        await Deno.remove(nullNetns);
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) {
          this.#log.warn("cannot take down runsc's null-netns", { path: nullNetns, error: e });
        }
      } finally {
        this.#releasing = undefined;
      }
    })();
    return this.#releasing;
  }

  /** Destroys the sandbox with whatever still runs in it. */
  async #deleteSandbox(record: SandboxRecord<GvisorPodState>): Promise<void> {
    await this.opts.runsc.delete(record.id, true).catch((e) =>
      this.#log.warn("runsc delete failed", { sandbox: record.id, error: e })
    );
    // runsc's lock of a sandbox whose create failed outlives it (runsc
    // knows no such container any more, so delete leaves it).
    const lock = join(this.opts.runsc.opts.root, `${record.id}_sandbox:${record.id}.lock`);
    await Deno.remove(lock).catch(() => {});
  }

  /**
   * Removes the pod's cgroup from every hierarchy. `runsc delete` does not
   * always empty it (a `runsc create` that failed or timed out leaves a
   * sandbox runsc no longer manages): what is left (gofer, sentry) is killed.
   */
  async #removeCgroup(record: SandboxRecord<GvisorPodState>): Promise<void> {
    const path = record.backend.cgroupsPath;
    if (typeof path !== "string") return; // read back from disk: checked, not trusted
    const left = await cgroupProcesses(cgroupPathsFor(path)).catch(() => []);
    if (left.length) {
      this.#log.warn("killing sandbox processes runsc left", { sandbox: record.id, pids: left });
    }
    for (const pid of left) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* gone */ }
    }
    await removeCgroup(path);
  }

  protected override async abandonStart(record: SandboxRecord<GvisorPodState>): Promise<void> {
    // The Start may have left a sandbox and its monitor.
    await this.holders.killUnfinished(record.id);
    await this.opts.runsc.delete(record.id, true).catch(() => {});
  }

  async metrics(record: SandboxRecord<GvisorPodState>): Promise<StoredAnyBytes | undefined> {
    // The whole sandbox (sentry, gofer, every container) lives in the root container's cgroup.
    if (!record.pid) return undefined;
    return await cgroupMetrics(await cgroupPathsOf(record.pid));
  }
}
