/**
 * The runC sandbox: no pause image, no VM — a pod is a namespace holder made
 * by the native helper (new pid/ipc/uts/mount namespaces, the CNI netns or a
 * new one), whose init reaps orphans. Containers join its namespaces through
 * /proc/<pid>/ns paths in their specs.
 *
 * @module
 */

import { podSysctls } from "../../domain/sysctls.ts";
import type { SandboxExit, SandboxRecord } from "../../domain/sandbox.ts";
import type { StoredAnyBytes } from "../../ports/container_runtime.ts";
import { log } from "../../log.ts";
import {
  cgroupExists,
  cgroupMetrics,
  type CgroupPaths,
  cgroupPathsFor,
  summedCgroupMetrics,
} from "../os/cgroups.ts";
import type { ExitWatcher } from "../os/exit_watcher.ts";
import { PodProcessBackend } from "../os/pod_process_backend.ts";
import { startHelper } from "../os/helper.ts";
import { holderToken } from "../os/process_tokens.ts";

/** What the runC sandbox backend needs. */
export interface RuncSandboxBackendOptions {
  /** The sandboxer's --dir (a pod's files live in `<dir>/<id>/`). */
  readonly dir: string;
  readonly helper: string;
  readonly exits: ExitWatcher;
}

/** Pod lifecycle for the runC sandboxer. */
export class RuncSandboxBackend extends PodProcessBackend<RuncSandboxBackendOptions> {
  #log = log.with({ component: "runc-sandbox" });

  async start(record: SandboxRecord): Promise<void> {
    const token = holderToken(record.id);
    const args = ["hold", "--exit-file", this.opts.exits.path(token)];
    if (record.netnsPath) args.push("--netns", record.netnsPath);
    else if (record.pod.network === "node") args.push("--host-netns");
    else args.push("--new-netns");
    // Host-network pods share the node's UTS namespace too, as in Kubernetes.
    if (record.pod.network === "node") args.push("--host-uts");
    else if (record.pod.hostname) args.push("--hostname", record.pod.hostname);
    if (record.pod.ipc === "node") args.push("--host-ipc");
    for (const [k, v] of podSysctls(record.pod)) args.push("--sysctl", `${k}=${v}`);
    const h = await startHelper(this.opts.helper, args);
    record.pid = h.pid;
    record.backend = { ...record.backend, holderPid: h.helperPid };
    this.holders.watch(record.id, h.helperPid);
    h.exited.then(() => this.opts.exits.check(token));
  }

  stop(record: SandboxRecord, timeoutMs: number): Promise<SandboxExit> {
    return this.holders.stop(record, timeoutMs, (r, sig) => {
      try {
        Deno.kill(r.pid, sig);
      } catch { /* already gone */ }
      return Promise.resolve();
    });
  }

  async cleanup(record: SandboxRecord): Promise<void> {
    if (this.holders.running(record.id) && record.pid) {
      try {
        Deno.kill(record.pid, "SIGKILL");
      } catch { /* already gone */ }
      await this.holders.waitGone(record.id);
    }
    // Whatever still carries this pod's exit file (a holder of a Start that
    // never completed) goes too.
    await this.holders.forget(record.id);
  }

  protected override async abandonStart(record: SandboxRecord): Promise<void> {
    const n = await this.holders.killUnfinished(record.id);
    if (n) this.#log.info("killed holder of an unfinished start", { sandbox: record.id });
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
