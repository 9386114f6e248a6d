/**
 * containerd 1.7's shim mode (`sandbox_mode = "shim"`): containerd runs
 * `containerd-shim-kuasar-<kind>-v2 start` once per pod, dials the address it
 * prints and speaks the shim's Sandbox API (`containerd.runtime.sandbox.v1.Sandbox`)
 * and the Task API v2 there. The binary (native/shim_v2.c) only asks this
 * daemon for the pod's socket and exits: no process per pod stays behind. The
 * socket is the pod's relayed task socket, so both services survive a restart
 * of this daemon like the Task API does under containerd 2.x.
 *
 * @module
 */
import { InvalidArgumentError, NotFoundError, UnimplementedError } from "../../domain/errors.ts";
import { validateId } from "../../domain/ids.ts";
import { toMillis } from "../../domain/time.ts";
import { SandboxDefinition } from "../../gen/containerd/runtime/sandbox/v1/sandbox.ts";
import type { SandboxService } from "../../app/sandbox_service.ts";
import type { TaskService } from "../../app/task_service.ts";
import { log } from "../../lib/log.ts";
import { toStoredAny, toTimestamp } from "../convert.ts";
import { podConfigFromOptions } from "../grpc/pod_config.ts";
import type { CallContext, TtrpcServer } from "../ttrpc/server.ts";
import { unaryMethods } from "../ttrpc/typed.ts";

/** The pods' sockets, as shim mode uses them (`RelayTaskEndpoint`). */
export interface ShimSockets {
  /** Serves a pod's socket before the pod exists; returns the address a shim prints. */
  openShim(sandboxId: string): Promise<string>;
  /** Withdraws a pod's socket. */
  close(sandboxId: string): Promise<void>;
  /** Ends the connections of a pod whose socket was withdrawn, once its Shutdown is answered. */
  finishShimClose(sandboxId: string): void;
}

/** A pod's socket handed to a shim binary is withdrawn if no CreateSandbox follows within this. */
export const SHIM_CREATE_GRACE_MS = 60_000;

/** A connection serves one pod: a request naming another is refused. */
function samePod(ctx: CallContext, sandboxId: string): string {
  if (sandboxId !== ctx.scope) {
    throw new InvalidArgumentError(
      `Sandbox "${sandboxId}" is not the pod this connection serves ("${ctx.scope}")`,
    );
  }
  return sandboxId;
}

/** Registers `containerd.runtime.sandbox.v1.Sandbox` on the pods' task connections. */
export function registerShimSandboxService(
  server: TtrpcServer,
  sandboxes: SandboxService,
  endpoint: ShimSockets,
): void {
  server.register(
    SandboxDefinition.fullName,
    unaryMethods(SandboxDefinition, {
      createSandbox: async (r, ctx) => {
        const id = samePod(ctx, r.sandboxId);
        await sandboxes.create({
          id,
          netnsPath: r.netnsPath,
          pod: podConfigFromOptions(r.options),
          podConfigAny: r.options ? toStoredAny(r.options) : undefined,
          annotations: { ...r.annotations },
          labels: {},
          extensions: {},
        });
        return {};
      },
      startSandbox: async (r, ctx) => {
        const s = await sandboxes.start(samePod(ctx, r.sandboxId));
        return { pid: s.pid, createdAt: toTimestamp(s.createdAt), spec: undefined };
      },
      platform: (r, ctx) => {
        const p = sandboxes.platform(samePod(ctx, r.sandboxId));
        return Promise.resolve({ platform: { ...p, osVersion: "", osFeatures: [] } });
      },
      stopSandbox: async (r, ctx) => {
        await sandboxes.stop(samePod(ctx, r.sandboxId), r.timeoutSecs);
        return {};
      },
      waitSandbox: async (r, ctx) => {
        const e = await sandboxes.wait(samePod(ctx, r.sandboxId), ctx.signal);
        return { exitStatus: e.status, exitedAt: toTimestamp(e.at) };
      },
      sandboxStatus: (r, ctx) => {
        const s = sandboxes.status(samePod(ctx, r.sandboxId), r.verbose);
        return Promise.resolve({
          sandboxId: s.id,
          pid: s.pid,
          state: s.state,
          info: s.info,
          createdAt: toTimestamp(s.createdAt),
          exitedAt: toTimestamp(s.exitedAt),
          extra: undefined,
        });
      },
      pingSandbox: (r, ctx) => {
        sandboxes.status(samePod(ctx, r.sandboxId), false);
        return Promise.resolve({});
      },
      shutdownSandbox: async (r, ctx) => {
        const id = samePod(ctx, r.sandboxId);
        await sandboxes.shutdown(id);
        // The pod's connections go once this answer, which travels on one of them, is out.
        ctx.afterResponse?.(() => endpoint.finishShimClose(id));
        return {};
      },
      sandboxMetrics: async (r, ctx) => {
        const m = await sandboxes.metrics(samePod(ctx, r.sandboxId));
        return { metrics: { timestamp: toTimestamp(m.timestamp), id: m.id, data: m.data } };
      },
    }),
  );
}

/** The containers a shim `delete` may name (containerd gave up on a task). */
export interface ShimContainers {
  /** The pod holding container `id`, if any. */
  sandboxOf(id: string): string | undefined;
  readonly tasks: Pick<TaskService, "kill" | "wait" | "delete">;
}

/** How long a container's shim delete waits for SIGKILL to take effect. */
const DELETE_WAIT_MS = 10_000;

/**
 * Answers the shim binary's one-line requests (see native/shim_v2.c):
 * `start <namespace> <id>` → the pod's address; `delete <namespace> <id>` →
 * `<exit status> <exited at, ms>` after stopping and removing the pod or the
 * container containerd has given up on (as runc's shim does: containerd
 * reports the task exited and may start another, so it must not run on).
 */
export function shimRequests(
  sandboxes: SandboxService,
  endpoint: ShimSockets,
  containers?: ShimContainers,
  createGraceMs = SHIM_CREATE_GRACE_MS,
): (args: readonly string[]) => Promise<string> {
  const l = log.with({ component: "shim-mode" });
  const exists = (id: string) => {
    try {
      sandboxes.status(id, false);
      return true;
    } catch (e) {
      if (e instanceof NotFoundError) return false;
      throw e;
    }
  };
  return async (args) => {
    const [verb, namespace, id, ...extra] = args;
    if (!verb || !namespace || !id || extra.length) {
      throw new InvalidArgumentError(`Malformed shim request "${args.join(" ")}"`);
    }
    validateId("sandbox", id);
    switch (verb) {
      case "start": {
        const address = await endpoint.openShim(id);
        if (!exists(id)) {
          // containerd creates the pod on the address next; if it never does
          // (it died in between), the socket must not stay for ever.
          const t = setTimeout(() => {
            if (!exists(id)) {
              l.warn("withdrawing a shim socket no pod was created on", { sandbox: id });
              endpoint.close(id).catch(() => {});
            }
          }, createGraceMs);
          Deno.unrefTimer(t);
        }
        l.info("shim address handed out", { sandbox: id, namespace, address });
        return address;
      }
      case "delete": {
        const pod = containers?.sandboxOf(id);
        if (pod && containers) return await deleteContainer(containers, pod, id);
        if (!exists(id)) return `0 ${Date.now()}`;
        l.warn("containerd gave up on the pod's shim: removing the pod", { sandbox: id });
        // containerd already takes the pod for dead: a short grace, not the default one.
        await sandboxes.stop(id, 1);
        const s = sandboxes.status(id, false);
        const exit = await sandboxes.wait(id);
        await sandboxes.shutdown(id);
        return `${exit.status} ${s.exitedAt ? toMillis(s.exitedAt) : Date.now()}`;
      }
      default:
        throw new UnimplementedError(`Unknown shim request "${verb}"`);
    }
  };
}

async function deleteContainer(c: ShimContainers, pod: string, id: string): Promise<string> {
  log.warn("containerd gave up on a container's shim: killing and removing the container", {
    component: "shim-mode",
    sandbox: pod,
    container: id,
  });
  // Already stopped is fine: the exit is what containerd asks for.
  await c.tasks.kill(pod, id, "", 9, true).catch(() => {});
  const exit = await c.tasks.wait(pod, id, "", AbortSignal.timeout(DELETE_WAIT_MS));
  await c.tasks.delete(pod, id, "");
  return `${exit.exitStatus} ${exit.exitedAt ? toMillis(exit.exitedAt) : Date.now()}`;
}
