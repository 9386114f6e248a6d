/**
 * The runC sandbox: no pause image, no VM — a pod is a namespace holder made
 * by the native helper (new pid/ipc/uts namespaces, the CNI netns or a
 * new one), whose init reaps orphans. Containers join its namespaces through
 * /proc/<pid>/ns paths in their specs, and bind its /dev/shm from the init's fd where the
 * kernel allows (a tmpfs in no mount table: native/pod_shm.c says why).
 *
 * @module
 */

import { podSysctls } from "../../domain/sysctls.ts";
import type { SandboxExit, SandboxRecord } from "../../domain/sandbox.ts";
import type { StartedProcess, StoredAnyBytes } from "../../ports/container_runtime.ts";
import { log } from "../../lib/log.ts";
import {
  cgroupExists,
  cgroupMetrics,
  type CgroupPaths,
  cgroupPathsFor,
  summedCgroupMetrics,
} from "../os/cgroups.ts";
import type { Supervisor } from "../../ports/supervisor.ts";
import { PodProcessBackend } from "../supervisor/pod_process_backend.ts";
import type { PodProcessState } from "../supervisor/pod_holders.ts";
import type { RuncProcessState } from "./runc_container_runtime.ts";
import { holderToken } from "../supervisor/process_tokens.ts";
import { preparePod, SHM_SIZE } from "../os/pod_files.ts";
import { join } from "node:path";

/** What the runC sandbox backend needs. */
export interface RuncSandboxBackendOptions {
  /** The sandboxer's --dir (a pod's files live in `<dir>/<id>/`). */
  readonly dir: string;
  readonly supervisor: Supervisor;
}

/** What a runC pod keeps in its record. */
export interface RuncPodState extends PodProcessState {
  /** "detached": the pod's init holds its /dev/shm (else it is mounted in the pod's files). */
  shm?: "detached";
}

/** Pod lifecycle for the runC sandboxer. */
export class RuncSandboxBackend extends PodProcessBackend<RuncSandboxBackendOptions, RuncPodState> {
  #log = log.with({ component: "runc-sandbox" });
  #detachedShm: Promise<boolean> | undefined;

  /** Whether pods' /dev/shm can be a tmpfs their init holds (asked of the kernel once). */
  #canDetachShm(): Promise<boolean> {
    this.#detachedShm ??= (async () => {
      const sv = this.opts.supervisor;
      const r = await sv.run([sv.binary, "probe-shm", this.opts.dir], { timeoutMs: 10_000 })
        .catch((e) => ({ code: -1, stdout: String(e), stderr: "" }));
      const ok = r.code === 0;
      const why = (r.stdout + r.stderr).trim();
      if (ok) this.#log.info("pods' /dev/shm: a tmpfs in no mount table, held by the pod");
      else this.#log.info("pods' /dev/shm: a tmpfs mounted on the node", { why });
      return ok;
    })();
    return this.#detachedShm;
  }

  override async create(record: SandboxRecord<RuncPodState>): Promise<void> {
    const detached = record.pod.ipc !== "node" && await this.#canDetachShm();
    if (detached) record.backend = { ...record.backend, shm: "detached" };
    await preparePod(join(this.opts.dir, record.id), record, !detached);
  }

  async start(record: SandboxRecord<RuncPodState>): Promise<StartedProcess> {
    const hostNetwork = record.pod.network === "node";
    const h = await this.opts.supervisor.hold(holderToken(record.id), {
      netnsPath: record.netnsPath || undefined,
      hostNetwork,
      // Host-network pods share the node's UTS namespace too, as in Kubernetes.
      hostUts: hostNetwork,
      hostname: record.pod.hostname || undefined,
      hostIpc: record.pod.ipc === "node",
      sysctls: podSysctls(record.pod),
      shmSize: record.backend.shm === "detached" ? SHM_SIZE : undefined,
    });
    record.backend = { ...record.backend, holderPid: h.helperPid };
    this.holders.watch(record.id, h.helperPid, h.pid);
    return { pid: h.pid };
  }

  stop(record: SandboxRecord<RuncPodState>, timeoutMs: number): Promise<SandboxExit> {
    return this.holders.stop(record, timeoutMs, (pid, sig) => {
      try {
        Deno.kill(pid, sig);
      } catch { /* already gone */ }
      return Promise.resolve();
    });
  }

  async cleanup(record: SandboxRecord<RuncPodState>): Promise<void> {
    const pid = this.holders.runningPid(record.id);
    if (pid) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* already gone */ }
      await this.holders.waitGone(record.id);
    }
    // Whatever still carries this pod's exit file (a holder of a Start that
    // never completed) goes too.
    await this.holders.forget(record.id);
  }

  protected override async abandonStart(record: SandboxRecord<RuncPodState>): Promise<void> {
    const n = await this.holders.killUnfinished(record.id);
    if (n) this.#log.info("killed holder of an unfinished start", { sandbox: record.id });
  }

  async metrics(record: SandboxRecord<RuncPodState>): Promise<StoredAnyBytes | undefined> {
    // The pod's cgroup is its parent (the kubelet's pod cgroup): it holds
    // every container. Without one (crictl, plain clients) the pod's usage is
    // the sum over its containers' cgroups.
    if (record.pod.cgroupParent) {
      const paths = cgroupPathsFor(record.pod.cgroupParent);
      if (await cgroupExists(paths)) return await cgroupMetrics(paths);
    }
    const each = Object.values(record.containers)
      .map((c) => (c.backend as RuncProcessState).cgroups)
      .filter((p): p is CgroupPaths => !!p);
    return await summedCgroupMetrics(each);
  }
}
