/**
 * The runC sandbox: no pause image, no VM — a pod is a namespace holder made
 * by the native helper (new pid/ipc/uts/mount namespaces, the CNI netns or a
 * new one), whose init reaps orphans. Containers join its namespaces through
 * /proc/<pid>/ns paths in their specs.
 *
 * @module
 */
import { join } from "node:path";
import { InvalidArgumentError } from "../../domain/errors.ts";
import { checkPodSysctls, podSysctls } from "../../domain/sysctls.ts";
import type { SandboxExit, SandboxRecord } from "../../domain/sandbox.ts";
import { now } from "../../domain/time.ts";
import type { StoredAnyBytes } from "../../ports/container_runtime.ts";
import type {
  RecoveredSandbox,
  SandboxBackend,
  SandboxExitListener,
} from "../../ports/sandbox_backend.ts";
import { Latch, withTimeout } from "../../app/sync.ts";
import { log } from "../../log.ts";
import {
  cgroupExists,
  cgroupMetrics,
  type CgroupPaths,
  cgroupPathsFor,
  summedCgroupMetrics,
} from "../os/cgroups.ts";
import { preparePodFiles } from "../os/pod_files.ts";
import type { ExitRecord, ExitWatcher } from "../os/exit_watcher.ts";
import { startHelper } from "../os/helper.ts";
import { goArch } from "../os/platform.ts";
import { holderToken, killByCommandLine } from "../os/process_tokens.ts";

/** What the runC sandbox backend needs. */
export interface RuncSandboxBackendOptions {
  /** The sandboxer's --dir (a pod's files live in `<dir>/<id>/`). */
  readonly dir: string;
  readonly helper: string;
  readonly exits: ExitWatcher;
}

const KILL_WAIT_MS = 10_000;

/** Pod lifecycle for the runC sandboxer. */
export class RuncSandboxBackend implements SandboxBackend {
  readonly platform = { os: "linux", architecture: goArch(), variant: "" };
  #opts: RuncSandboxBackendOptions;
  #listener: SandboxExitListener | undefined;
  #exits = new Map<string, Latch<SandboxExit>>();
  #log = log.with({ component: "runc-sandbox" });

  constructor(opts: RuncSandboxBackendOptions) {
    this.#opts = opts;
  }

  setExitListener(listener: SandboxExitListener): void {
    this.#listener = listener;
  }

  async create(record: SandboxRecord): Promise<void> {
    if (record.netnsPath) {
      try {
        await Deno.stat(record.netnsPath);
      } catch {
        throw new InvalidArgumentError(
          `Invalid netns path "${record.netnsPath}": it does not exist`,
        );
      }
    }
    checkPodSysctls(record.pod);
    await preparePodFiles(join(this.#opts.dir, record.id), record);
  }

  async start(record: SandboxRecord): Promise<void> {
    const token = holderToken(record.id);
    const args = ["hold", "--exit-file", this.#opts.exits.path(token)];
    if (record.netnsPath) args.push("--netns", record.netnsPath);
    else if (record.pod.network === "node") args.push("--host-netns");
    else args.push("--new-netns");
    // Host-network pods share the node's UTS namespace too, as in Kubernetes.
    if (record.pod.network === "node") args.push("--host-uts");
    else if (record.pod.hostname) args.push("--hostname", record.pod.hostname);
    if (record.pod.ipc === "node") args.push("--host-ipc");
    for (const [k, v] of podSysctls(record.pod)) args.push("--sysctl", `${k}=${v}`);
    const h = await startHelper(this.#opts.helper, args);
    record.pid = h.pid;
    record.backend = { ...record.backend, holderPid: h.helperPid };
    this.#watch(record.id, h.helperPid);
    h.exited.then(() => this.#opts.exits.check(token));
  }

  #watch(id: string, helperPid: number): Latch<SandboxExit> {
    const latch = new Latch<SandboxExit>();
    this.#exits.set(id, latch);
    const token = holderToken(id);
    this.#opts.exits.expect(token, helperPid, {
      exited: (r: ExitRecord) => {
        const exit = { status: r.status, at: r.at };
        latch.set(exit);
        this.#listener?.sandboxExited(id, exit);
      },
      lost: () => {
        const exit = { status: 255, at: now() };
        latch.set(exit);
        this.#listener?.sandboxExited(id, exit);
      },
    });
    return latch;
  }

  async stop(record: SandboxRecord, timeoutMs: number): Promise<SandboxExit> {
    const latch = this.#exits.get(record.id);
    if (!latch || !record.pid) return { status: 0, at: now() };
    if (latch.isSet) return latch.value!;
    if (timeoutMs > 0) {
      this.#signal(record.pid, "SIGTERM");
      const exit = await withTimeout(latch.wait(), timeoutMs);
      if (exit) return exit;
    }
    this.#signal(record.pid, "SIGKILL");
    const exit = await withTimeout(latch.wait(), KILL_WAIT_MS);
    if (!exit) {
      this.#log.warn("holder did not exit after SIGKILL", { sandbox: record.id, pid: record.pid });
    }
    return exit ?? { status: 137, at: now() };
  }

  #signal(pid: number, sig: Deno.Signal): void {
    try {
      Deno.kill(pid, sig);
    } catch { /* already gone */ }
  }

  async cleanup(record: SandboxRecord): Promise<void> {
    const token = holderToken(record.id);
    const latch = this.#exits.get(record.id);
    if (latch && !latch.isSet && record.pid) {
      this.#signal(record.pid, "SIGKILL");
      await withTimeout(latch.wait(), KILL_WAIT_MS);
    }
    // Whatever still carries this pod's exit file (a holder of a Start that
    // never completed) goes too.
    await killByCommandLine(this.#opts.exits.needle(token));
    this.#exits.delete(record.id);
    await this.#opts.exits.remove(token);
  }

  async recover(record: SandboxRecord): Promise<RecoveredSandbox> {
    const token = holderToken(record.id);
    const exits = this.#opts.exits;
    if (record.state !== "running") {
      // A Start that never returned may have left a holder behind.
      if (record.state === "created") {
        const n = await killByCommandLine(exits.needle(token));
        if (n) this.#log.info("killed holder of an unfinished start", { sandbox: record.id });
        record.pid = 0;
      }
      return { alive: false, exit: record.exit ?? { status: 0, at: now() } };
    }
    const helperPid = Number(record.backend.holderPid ?? 0);
    const rec = await exits.read(token);
    if (rec) return { alive: false, exit: { status: rec.status, at: rec.at } };
    if (!await exits.alive(token, helperPid)) {
      return { alive: false, exit: { status: 255, at: now() } };
    }
    this.#watch(record.id, helperPid);
    return { alive: true };
  }

  async metrics(record: SandboxRecord): Promise<StoredAnyBytes | undefined> {
    // The pod's cgroup is its parent (the kubelet's pod cgroup): it holds
    // every container. Without one (crictl, plain clients) the pod's usage is
    // the sum over its containers' cgroups.
    if (record.pod.cgroupParent) {
      const paths = cgroupPathsFor(record.pod.cgroupParent);
      if (await cgroupExists(paths)) return await cgroupMetrics(paths);
    }
    const each = Object.values(record.containers)
      .map((c) => (c.backend as { cgroups?: CgroupPaths }).cgroups)
      .filter((p): p is CgroupPaths => !!p);
    return await summedCgroupMetrics(each);
  }
}
