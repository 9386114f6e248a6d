/**
 * The Task API in the guest: containers of the pod run by the guest's crun or runc,
 * with the same TaskService, runtime and Streaming service the host's runC
 * sandboxer uses. The whole VM is the pod: one sandbox record, scope
 * `GUEST_SCOPE`, specs and bundles prepared by the host in the shared
 * directory. Task events are queued for the host's GetEvents.
 *
 * @module
 */
import { join } from "node:path";
import { SandboxRegistry } from "../app/registry.ts";
import { TaskService } from "../app/task_service.ts";
import { encodeEvent } from "../adapters/events/containerd_events.ts";
import { toTimestamp } from "../adapters/convert.ts";
import { ExitWatcher } from "../adapters/supervisor/exit_watcher.ts";
import { StateLayout } from "../adapters/os/state_layout.ts";
import { OciRuntimeCli } from "../adapters/oci/runtime_cli.ts";
import { HelperSupervisor } from "../adapters/supervisor/helper_supervisor.ts";
import { RuncContainerRuntime } from "../adapters/runc/runc_container_runtime.ts";
import { JsonSandboxStore } from "../adapters/store/json_sandbox_store.ts";
import { StreamHub } from "../adapters/task/streaming.ts";
import { registerTaskService } from "../adapters/task/task_endpoint.ts";
import type { TtrpcServer } from "../adapters/ttrpc/server.ts";
import { emptyPodConfig } from "../domain/pod_config.ts";
import { now } from "../domain/time.ts";
import {
  DEFAULT_GUEST_OCI_RUNTIME,
  GUEST_OCI_RUNTIMES,
  type GuestOciRuntime,
  OCI_RUNTIME_PARAM,
} from "../ports/agent_protocol.ts";
import type { EventPublisher, TaskEvent } from "../ports/event_publisher.ts";
import type { Envelope } from "../gen/kuasar/github.com/containerd/containerd/api/services/ttrpc/events/v1/events.ts";

/** The sandbox id every Task API call of the host is scoped to. */
export const GUEST_SCOPE = "pod";
/** Where the agent keeps its state (the initramfs root is memory anyway). */
const STATE_DIR = "/run/kuasar/agent";
/** The pod's directory there: its shared files (pod_files.ts) as the runtime finds them. */
export const GUEST_POD_DIR = join(STATE_DIR, GUEST_SCOPE);
/** Events kept for the host while it does not ask; the oldest go first. */
const MAX_QUEUED_EVENTS = 1024;

/** Task events waiting for the host's GetEvents. */
export class GuestEvents implements EventPublisher {
  #queue: Envelope[] = [];
  #waiters: ((e: Envelope) => void)[] = [];

  publish(namespace: string, event: TaskEvent): void {
    const env: Envelope = {
      timestamp: toTimestamp(now()),
      namespace,
      topic: event.topic,
      event: encodeEvent(event),
    };
    const w = this.#waiters.shift();
    if (w) return w(env);
    this.#queue.push(env);
    if (this.#queue.length > MAX_QUEUED_EVENTS) this.#queue.shift();
  }

  /** The next event; waits for one (an aborted wait takes none, so none is lost). */
  next(signal?: AbortSignal): Promise<Envelope> {
    const e = this.#queue.shift();
    if (e) return Promise.resolve(e);
    return new Promise((resolve, reject) => {
      const w = (env: Envelope) => {
        signal?.removeEventListener("abort", abort);
        resolve(env);
      };
      const abort = () => {
        this.#waiters = this.#waiters.filter((x) => x !== w);
        reject(signal?.reason ?? new Error("aborted"));
      };
      this.#waiters.push(w);
      signal?.addEventListener("abort", abort, { once: true });
    });
  }

  flush(): Promise<void> {
    return Promise.resolve();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/**
 * The OCI runtime the host named on the kernel command line (`kuasar.oci_runtime=`); an
 * unknown name is refused (the host checks its config, so only a hand-made command line gets here).
 */
export function ociRuntimeOf(cmdline: string): GuestOciRuntime {
  const named = cmdline.split(/\s+/).filter((a) => a.startsWith(`${OCI_RUNTIME_PARAM}=`)).pop()
    ?.slice(OCI_RUNTIME_PARAM.length + 1);
  if (named === undefined) return DEFAULT_GUEST_OCI_RUNTIME;
  if (!Object.hasOwn(GUEST_OCI_RUNTIMES, named)) {
    throw new Error(
      `${OCI_RUNTIME_PARAM}=${named}: not a runtime of the guest image (${
        Object.keys(GUEST_OCI_RUNTIMES).join(", ")
      })`,
    );
  }
  return named as GuestOciRuntime;
}

/** Registers the Task API and Streaming service on the agent's server. */
export async function serveGuestTasks(server: TtrpcServer, events: GuestEvents): Promise<void> {
  await Deno.mkdir(STATE_DIR, { recursive: true, mode: 0o700 });
  // The image has the helper binary; /init says where.
  const helper = Deno.env.get("KUASAR_HELPER");
  if (!helper) {
    throw new Error("KUASAR_HELPER is not set: the guest image's /init names the helper");
  }
  const ociRuntime = ociRuntimeOf(await Deno.readTextFile("/proc/cmdline").catch(() => ""));
  const layout = new StateLayout(STATE_DIR);
  const exits = new ExitWatcher(layout.path("exits"));
  await exits.start();
  const supervisor = new HelperSupervisor(helper, exits);
  const streams = new StreamHub();
  streams.register(server);
  const runtime = new RuncContainerRuntime({
    dir: STATE_DIR,
    layout,
    supervisor,
    // The root is the initramfs, where pivot_root cannot work.
    cli: new OciRuntimeCli({
      binary: GUEST_OCI_RUNTIMES[ociRuntime],
      root: layout.path("runcRoot"),
      systemdCgroup: false,
      createFlags: ["--no-pivot"],
    }, supervisor),
    streams,
    guest: true,
  });
  const store = new JsonSandboxStore(STATE_DIR, layout);
  const registry = new SandboxRegistry(store);
  await store.prepare(GUEST_SCOPE);
  registry.add({
    id: GUEST_SCOPE,
    kind: "vm",
    state: "running",
    createdAt: now(),
    startedAt: now(),
    pid: Deno.pid,
    netnsPath: "",
    pod: emptyPodConfig(),
    annotations: {},
    labels: {},
    extensions: {},
    taskAddress: "",
    taskApiVersion: 3,
    backend: {},
    containers: {},
  });
  registerTaskService(server, new TaskService(registry, runtime, events));
}
