/**
 * Containers of gVisor pods: runsc subcontainers of the pod's sandbox.
 *
 * runsc differs from runc in ways this file is about:
 * - a subcontainer takes its stdio from `runsc start` (not `create`), so
 *   Create runs `runsc create` directly and Start runs `runsc start` under a
 *   monitor that owns the stdio; but its pty comes from `create`, so a
 *   terminal container's monitor runs `runsc create` instead;
 * - container processes live inside the sandbox, not on the host: the
 *   monitor learns the exit from `runsc wait` (waiter mode), and an exec's
 *   host pid is that of the `runsc exec` process waiting for it, so signals go
 *   through `runsc kill --pid` with the pid inside the sandbox;
 * - every container of a pod shares the sandbox's host cgroup; stats are the
 *   sandbox's.
 *
 * @module
 */
import { basename, join } from "node:path";
import { FailedPreconditionError, InternalError, NotFoundError } from "../../domain/errors.ts";
import type { OciSpec } from "../../domain/oci.ts";
import type { SandboxRecord } from "../../domain/sandbox.ts";
import type { ContainerRecord, ExecRecord } from "../../domain/task.ts";
import type {
  Capabilities,
  ProcessInfo,
  StartedProcess,
  StatsCapability,
  StoredAnyBytes,
} from "../../ports/container_runtime.ts";
import { readSpec } from "../os/bundle.ts";
import { cgroupMetrics, cgroupPathsOf, removeCgroup } from "../os/cgroups.ts";
import { mountRootfs, unmountOwn } from "../os/mounts.ts";
import { rootfsMountTarget } from "../../domain/bundle_paths.ts";
import { addPodFileMounts } from "../os/pod_files.ts";
import { initToken } from "../supervisor/process_tokens.ts";
import { MonitoredContainers, type MonitoredState } from "../oci/monitored_containers.ts";
import { killError } from "../oci/runtime_cli.ts";
import { CONTAINER_TYPE, SANDBOX_ID, sandboxWaitArgv } from "./gvisor_sandbox_backend.ts";

/** What a gVisor container or exec keeps in its record. */
export interface GvisorProcessState extends MonitoredState {
  /** Pid inside the sandbox (execs), for `runsc kill --pid`. */
  innerPid?: number;
  /** The container's cgroup as its spec names it (see delete). */
  cgroupsPath?: string;
}

type C = ContainerRecord<GvisorProcessState>;
type E = ExecRecord<GvisorProcessState>;

/**
 * Makes a container spec a subcontainer of sandbox `sandboxId`: runsc reads
 * the CRI annotations, and namespace paths (of the pod's host processes) mean
 * nothing inside a sandbox.
 */
export function asSubcontainer(spec: OciSpec, sandboxId: string): void {
  spec.annotations = {
    ...spec.annotations,
    [CONTAINER_TYPE]: "container",
    [SANDBOX_ID]: sandboxId,
  };
  for (const ns of spec.linux?.namespaces ?? []) delete ns.path;
}

/** runsc-backed containers. */
export class GvisorContainerRuntime extends MonitoredContainers<GvisorProcessState>
  implements StatsCapability<GvisorProcessState> {
  // runsc has no update verb: the sandbox's resources are the pod's.
  readonly capabilities: Capabilities<GvisorProcessState> = {
    exec: this,
    pause: this,
    stats: this,
  };
  readonly lacking = { update: "gVisor cannot change a running container's resources" };
  protected readonly runtimeName = "runsc";

  async create(sb: SandboxRecord, c: C): Promise<StartedProcess> {
    const spec = await readSpec(c.bundle);
    asSubcontainer(spec, sb.id);
    await addPodFileMounts(spec, join(this.opts.dir, sb.id));
    await Deno.writeTextFile(join(c.bundle, "config.json"), JSON.stringify(spec));
    const state = this.stateDir(sb.id, c.id);
    await Deno.mkdir(state, { recursive: true, mode: 0o700 });
    const b = c.backend;
    if (spec.linux?.cgroupsPath) b.cgroupsPath = spec.linux.cgroupsPath;
    if (c.rootfs.length) {
      b.rootfs = rootfsMountTarget(c.bundle, spec.root?.path);
      await mountRootfs(c.rootfs, b.rootfs);
    }
    const pidFile = join(state, "init.pid");
    const logFile = join(state, "create.log.json");
    try {
      if (c.io.terminal) {
        // runsc hands out a container's pty at create: the monitor takes it
        // now, and learns the exit by waiting (which holds until the start).
        const token = initToken(c.id);
        const h = await this.launch(sb.id, token, c.io, pidFile, state, {
          argv: (console) => [
            ...this.cli.global(logFile),
            "create",
            "--bundle",
            c.bundle,
            "--pid-file",
            pidFile,
            "--console-socket",
            console!,
            c.id,
          ],
          waitArgv: sandboxWaitArgv(this.opts.supervisor.binary, this.cli, sb.id, c.id),
          logFile,
        });
        b.helperPid = h.helperPid;
        this.watch(sb.id, c, undefined, h.helperPid);
        await this.io.attach(sb.id, token, c.io);
        return { pid: h.pid };
      }
      await this.cli.createDetached(c.id, c.bundle, pidFile, logFile);
      const pid = Number((await Deno.readTextFile(pidFile).catch(() => "")).trim());
      if (!Number.isInteger(pid) || pid <= 0) {
        await this.cli.delete(c.id, true).catch(() => {});
        throw new InternalError(`runsc created container "${c.id}" but wrote no pid to ${pidFile}`);
      }
      return { pid };
    } catch (e) {
      if (b.rootfs) await unmountOwn(b.rootfs, c.rootfs.length).catch(() => {});
      throw e;
    }
  }

  /**
   * runsc removes a subcontainer's cgroup through its sandbox: with the
   * sandbox gone first (the pod stopped with the container still there, or
   * its sentry killed) the cgroup stays. It is removed here, when it is
   * named after the container (a cgroupfs path ending in its id).
   */
  override async delete(sb: SandboxRecord, c: C): Promise<void> {
    await super.delete(sb, c);
    const path = c.backend.cgroupsPath;
    if (typeof path === "string" && !path.includes(":") && basename(path) === c.id) {
      await removeCgroup(path);
    }
  }

  async start(sb: SandboxRecord, c: C): Promise<void> {
    // A pty container's monitor exists since create: it owns the terminal.
    if (c.backend.helperPid) return await this.cli.start(c.id);
    const state = this.stateDir(sb.id, c.id);
    const token = initToken(c.id);
    const logFile = join(state, "start.log.json");
    const h = await this.launch(sb.id, token, c.io, join(state, "init.pid"), state, {
      argv: () => [...this.cli.global(logFile), "start", c.id],
      waitArgv: sandboxWaitArgv(this.opts.supervisor.binary, this.cli, sb.id, c.id),
      logFile,
    });
    c.backend.helperPid = h.helperPid;
    this.watch(sb.id, c, undefined, h.helperPid);
    await this.io.attach(sb.id, token, c.io);
  }

  protected override execFlags(stateDir: string, e: E): string[] {
    return ["--internal-pid-file", join(stateDir, `exec-${e.id}.inner-pid`)];
  }

  protected override async execStarted(stateDir: string, e: E): Promise<void> {
    const text = await Deno.readTextFile(join(stateDir, `exec-${e.id}.inner-pid`)).catch(() => "");
    e.backend.innerPid = Number(text.trim()) || undefined;
  }

  protected async signalExec(c: C, e: E, signal: number): Promise<void> {
    const inner = e.backend.innerPid;
    if (!inner) throw new FailedPreconditionError(`Exec "${e.id}" has no pid in the sandbox`);
    await this.cli.run(
      ["kill", "--pid", String(inner), c.id, String(signal)],
      `signal exec "${e.id}"`,
      undefined,
      killError,
    ).catch((err) => {
      // The process ended between the check and the signal.
      if (!(err instanceof NotFoundError)) throw err;
    });
  }

  /** Pids inside the sandbox (gVisor's own pid space), as `runsc ps` lists them. */
  async pids(_sb: SandboxRecord, c: C): Promise<ProcessInfo[]> {
    const out = await this.cli.run(["ps", "--format", "json", c.id], `list processes of "${c.id}"`);
    const byInner = new Map(
      Object.values(c.execs).map((e) => [e.backend.innerPid, e.id]),
    );
    const list = JSON.parse(out || "[]");
    return (Array.isArray(list) ? list : [])
      .map((p) => Number(typeof p === "object" && p ? p.PID ?? p.pid : p))
      .filter((pid) => Number.isInteger(pid) && pid > 0)
      .map((pid) => ({ pid, execId: byInner.get(pid) }));
  }

  async stats(sb: SandboxRecord, _c: C): Promise<StoredAnyBytes> {
    if (!sb.pid) throw new FailedPreconditionError(`Sandbox "${sb.id}" is not running`);
    return await cgroupMetrics(await cgroupPathsOf(sb.pid));
  }
}
