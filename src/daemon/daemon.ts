/**
 * The sandboxer daemon, the same for every kind: recover what is on disk,
 * serve the Controller on --listen, serve each pod's Task API, tell systemd
 * when ready, and shut down on SIGTERM/SIGINT without touching running pods
 * (they are recovered by the next start).
 *
 * @module
 */
import { SandboxRegistry } from "../app/registry.ts";
import { SandboxService } from "../app/sandbox_service.ts";
import { TaskService } from "../app/task_service.ts";
import { ContainerdEventPublisher } from "../adapters/events/containerd_events.ts";
import { ensureSocketFree, serveController } from "../adapters/grpc/controller_server.ts";
import { ExitWatcher } from "../adapters/supervisor/exit_watcher.ts";
import { HelperSupervisor } from "../adapters/supervisor/helper_supervisor.ts";
import { installHelper, installShimStubs } from "../adapters/supervisor/helper_install.ts";
import { registerShimSandboxService, shimRequests } from "../adapters/task/shim_mode.ts";
import { IdleReclaimer, limitMallocArenas } from "../adapters/os/memory.ts";
import { runCommand } from "../adapters/os/command.ts";
import { JsonSandboxStore } from "../adapters/store/json_sandbox_store.ts";
import { registerTaskService, RelayTaskEndpoint } from "../adapters/task/task_endpoint.ts";
import { Relay, relayPaths } from "../adapters/supervisor/relay.ts";
import { checkNetnsPath } from "../adapters/os/netns.ts";
import { StateLayout } from "../adapters/os/state_layout.ts";
import { TtrpcServer } from "../adapters/ttrpc/server.ts";
import { TracingSwitch } from "../adapters/telemetry/tracing_switch.ts";
import { StreamHub } from "../adapters/task/streaming.ts";
import { log } from "../lib/log.ts";
import type { HostKind } from "../adapters/kind_host.ts";
import { prepareStateDir } from "./state_dir.ts";

/** Daemon settings (flags merged over the config file). */
export interface DaemonOptions {
  readonly listen: string;
  readonly dir: string;
  /** Explicit helper binary; otherwise the embedded one is installed under `helperDir`. */
  readonly helper?: string;
  readonly helperDir: string;
  /** containerd's ttrpc address for task events; none = events are only logged. */
  readonly containerdAddress?: string;
  /** Task API version Start reports (3 for containerd ≥ 2.1; 2 for Kuasar's peers). */
  readonly taskApiVersion: number;
  readonly stopTimeoutMs: number;
  /** A sandbox created and never started is shut down after this long (0: never). */
  readonly createdSandboxTimeoutMs?: number;
  /** Kind-specific settings. */
  readonly settings: Readonly<Record<string, unknown>>;
  /** `[sandbox] enable_tracing`: OTLP spans from the start (SIGUSR1 toggles at run time). */
  readonly enableTracing?: boolean;
}

/** A running daemon. */
export interface Daemon {
  readonly sandboxes: SandboxService;
  /** Resolves when the daemon stopped serving. */
  readonly finished: Promise<void>;
  /** Stops serving; pods keep running. */
  stop(): Promise<void>;
}

/** Starts a sandboxer of `kind`. */
export async function startDaemon(kind: HostKind, opts: DaemonOptions): Promise<Daemon> {
  const l = log.with({ kind: kind.name });
  limitMallocArenas();
  // Refuse a --dir another user could have written into (see state_dir.ts).
  await prepareStateDir(opts.dir);
  // Refuse early, before touching any pod, if another daemon serves this socket.
  await ensureSocketFree(opts.listen);
  const helper = await installHelper({ path: opts.helper, installDir: opts.helperDir });
  // Pods and the daemon's own entries share --dir; an old layout is kept (see state_layout.ts).
  const layout = await StateLayout.detect(opts.dir);
  if (layout.old) {
    l.warn(
      "--dir has the old layout: its daemon entries keep their names, which pods may not take",
      {
        dir: opts.dir,
      },
    );
  }
  const exits = new ExitWatcher(layout.path("exits"));
  await exits.start();

  const reclaimer = new IdleReclaimer();
  const ttrpc = new TtrpcServer();
  ttrpc.onCall = () => reclaimer.touch();
  const streams = new StreamHub();
  streams.register(ttrpc);
  const tracing = new TracingSwitch(`kuasar-${kind.name}`);
  if (opts.enableTracing) await tracing.enable();
  const onUsr1 = () => void tracing.toggle();
  Deno.addSignalListener("SIGUSR1", onUsr1);
  const relay = new Relay(helper, relayPaths(layout));
  const parts = await kind.create({
    dir: opts.dir,
    layout,
    supervisor: new HelperSupervisor(helper, exits),
    ttrpc,
    streams,
    tracing,
    outputHolder: relay,
    settings: opts.settings,
  });
  const registry = new SandboxRegistry(new JsonSandboxStore(opts.dir, layout));
  const events = new ContainerdEventPublisher(opts.containerdAddress);
  const tasks = new TaskService(registry, parts.runtime, events);
  registerTaskService(ttrpc, tasks);
  const endpoint = new RelayTaskEndpoint(opts.dir, ttrpc, relay, layout.path("sockets"));
  // Task calls (the relay's replays first) wait until their pod is recovered.
  registry.beginRecovery();
  endpoint.serveWhen((id) => registry.whenRecovered(id));
  const sandboxes = new SandboxService(registry, parts.backend, tasks, endpoint, {
    kind: kind.name,
    taskApiVersion: opts.taskApiVersion,
    defaultStopTimeoutMs: opts.stopTimeoutMs,
    createdSandboxTimeoutMs: opts.createdSandboxTimeoutMs,
    checkNetns: checkNetnsPath,
  });

  // containerd 1.7 (shim mode): the same pod connections carry the shim's Sandbox API.
  registerShimSandboxService(ttrpc, sandboxes, endpoint);
  endpoint.onShimRequest(
    shimRequests(sandboxes, endpoint, {
      sandboxOf: (cid) => registry.sandboxOfContainer(cid),
      tasks,
    }),
  );
  await installShimStubs(helper, opts.helperDir, kind.name, relay.paths.backend);

  // Serve relayed task connections before recovery re-registers the pods' sockets.
  await endpoint.start();
  await sandboxes.recover();
  const server = await serveController(opts.listen, sandboxes, () => reclaimer.touch());
  reclaimer.touch();
  l.info("sandboxer ready", { listen: opts.listen, dir: opts.dir, pid: Deno.pid });
  await notifySystemd(helper, "READY=1", `MAINPID=${Deno.pid}`);
  const watchdog = startWatchdog(helper);

  let resolveFinished!: () => void;
  const finished = new Promise<void>((r) => (resolveFinished = r));
  let stopping: Promise<void> | undefined;
  const stop = () =>
    stopping ??= (async () => {
      l.info("sandboxer stopping");
      clearInterval(watchdog);
      reclaimer.stop();
      await notifySystemd(helper, "STOPPING=1");
      await server.close();
      sandboxes.close();
      // The relay keeps the pods' task connections for the next daemon.
      await endpoint.closeAll();
      exits.stop();
      await events.close();
      await parts.close?.();
      Deno.removeSignalListener("SIGUSR1", onUsr1);
      await tracing.disable().catch((e) => l.warn("tracing off failed", { error: String(e) }));
      resolveFinished();
    })();
  return { sandboxes, finished, stop };
}

async function notifySystemd(helper: string, ...state: string[]): Promise<void> {
  if (!Deno.env.get("NOTIFY_SOCKET")) return;
  const r = await runCommand([helper, "notify", ...state]).catch((e) => ({
    code: -1,
    stderr: String(e),
  }));
  if (r.code !== 0) log.warn("sd_notify failed", { state, error: r.stderr });
}

/** WATCHDOG=1 every WATCHDOG_USEC/2, as systemd's Type=notify units expect. */
function startWatchdog(helper: string): ReturnType<typeof setInterval> | undefined {
  const usec = Number(Deno.env.get("WATCHDOG_USEC") ?? 0);
  if (!usec || !Deno.env.get("NOTIFY_SOCKET")) return undefined;
  const t = setInterval(() => notifySystemd(helper, "WATCHDOG=1"), Math.max(1000, usec / 2000));
  return t;
}
