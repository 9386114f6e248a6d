/**
 * containerd's Sandbox Controller (`containerd.services.sandbox.v1.Controller`)
 * over gRPC on a unix socket, with @grpc/grpc-js. Handlers decode, call the
 * use case and encode; errors become statuses in `toStatus` only.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { traced } from "../../lib/trace.ts";
import "./http2_goaway_guard.ts";
import * as grpc from "@grpc/grpc-js";
import { Code, InvalidArgumentError, UnavailableError } from "../../domain/errors.ts";
import {
  ControllerDefinition,
  type ControllerUpdateRequest,
} from "../../gen/containerd/services/sandbox/v1/sandbox.ts";
import type { SandboxService } from "../../app/sandbox_service.ts";
import { log } from "../../lib/log.ts";
import { toStoredAny, toTimestamp } from "../convert.ts";
import { toStatus } from "../rpc_status.ts";
import type { MethodDefinition, ServiceDefinition } from "../ttrpc/typed.ts";
import { podConfigFromOptions } from "./pod_config.ts";

/** A request that failed to decode travels to the handler as this marker. */
class Undecodable {
  constructor(readonly error: Error) {}
}

/** grpc-js service definition of a generated (ts-proto) definition. */
export function grpcServiceDefinition(def: ServiceDefinition): grpc.ServiceDefinition {
  const out: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const m of Object.values(def.methods) as MethodDefinition<unknown, unknown>[]) {
    out[m.name] = {
      path: `/${def.fullName}/${m.name}`,
      requestStream: m.requestStream,
      responseStream: m.responseStream,
      requestSerialize: (x) => Buffer.from(m.requestType.encode(x).finish()),
      // grpc-js answers INTERNAL when this throws; malformed input is the
      // client's fault, so the handler turns the marker into INVALID_ARGUMENT.
      requestDeserialize: (b: Buffer) => {
        try {
          return m.requestType.decode(new Uint8Array(b));
        } catch (e) {
          return new Undecodable(e as Error);
        }
      },
      responseSerialize: (x) => Buffer.from(m.responseType.encode(x).finish()),
      responseDeserialize: (b: Buffer) => m.responseType.decode(new Uint8Array(b)),
    };
  }
  return out as grpc.ServiceDefinition;
}

type Handler = (req: never, signal: AbortSignal) => Promise<unknown>;

function unaryHandler(
  name: string,
  fn: Handler,
  onCall?: () => void,
): grpc.handleUnaryCall<unknown, unknown> {
  return (call, callback) => {
    onCall?.();
    const ac = new AbortController();
    call.on("cancelled", () => ac.abort(new DOMException("cancelled", "AbortError")));
    const req = call.request;
    // Handlers may throw synchronously; run them inside the promise chain.
    const pod = (req as { sandboxId?: unknown })?.sandboxId;
    const run = traced(
      `containerd.services.sandbox.v1.Controller/${name}`,
      typeof pod === "string" ? { "kuasar.pod": pod } : {},
      async () => {
        if (req instanceof Undecodable) {
          throw new InvalidArgumentError(`Cannot decode ${name} request: ${req.error.message}`);
        }
        return await fn(req as never, ac.signal);
      },
      String(call.metadata.get("traceparent")[0] ?? "") || undefined,
    );
    run.then(
      (res) => callback(null, res),
      (e) => {
        const st = toStatus(e);
        if (st.code === Code.INTERNAL || st.code === Code.UNKNOWN) {
          log.warn("controller call failed", { method: name, code: st.code, error: st.message });
        } else {
          log.debug("controller call rejected", { method: name, code: st.code, error: st.message });
        }
        callback(
          {
            code: st.code,
            details: st.message,
            metadata: new grpc.Metadata(),
          } as grpc.ServiceError,
        );
      },
    );
  };
}

/** Handlers of the Controller service over a SandboxService; `onCall` hears every call. */
export function controllerHandlers(
  svc: SandboxService,
  onCall?: () => void,
): grpc.UntypedServiceImplementation {
  const unary = (name: string, fn: Handler) => unaryHandler(name, fn, onCall);
  return {
    Create: unary("Create", async (r: {
      sandboxId: string;
      options?: { typeUrl: string; value: Uint8Array };
      netnsPath: string;
      annotations: Record<string, string>;
      sandbox?: {
        labels: Record<string, string>;
        extensions: Record<string, { typeUrl: string; value: Uint8Array }>;
      };
    }) => {
      const pod = podConfigFromOptions(r.options);
      const extensions = Object.fromEntries(
        Object.entries(r.sandbox?.extensions ?? {}).map(([k, v]) => [k, toStoredAny(v)]),
      );
      await svc.create({
        id: r.sandboxId,
        netnsPath: r.netnsPath,
        pod,
        podConfigAny: r.options ? toStoredAny(r.options) : undefined,
        annotations: { ...r.annotations },
        labels: { ...(r.sandbox?.labels ?? {}) },
        extensions,
      });
      return { sandboxId: r.sandboxId };
    }),
    Start: unary("Start", async (r: { sandboxId: string }) => {
      const s = await svc.start(r.sandboxId);
      return {
        sandboxId: r.sandboxId,
        pid: s.pid,
        createdAt: toTimestamp(s.createdAt),
        labels: s.labels,
        address: s.address,
        version: s.version,
        spec: undefined,
      };
    }),
    Platform: unary("Platform", (r: { sandboxId: string }) => {
      const p = svc.platform(r.sandboxId);
      return Promise.resolve({ platform: { ...p, osVersion: "", osFeatures: [] } });
    }),
    Stop: unary("Stop", async (r: { sandboxId: string; timeoutSecs: number }) => {
      await svc.stop(r.sandboxId, r.timeoutSecs);
      return {};
    }),
    Wait: unary("Wait", async (r: { sandboxId: string }, signal) => {
      const e = await svc.wait(r.sandboxId, signal);
      return { exitStatus: e.status, exitedAt: toTimestamp(e.at) };
    }),
    Status: unary("Status", (r: { sandboxId: string; verbose: boolean }) => {
      const s = svc.status(r.sandboxId, r.verbose);
      return Promise.resolve({
        sandboxId: s.id,
        pid: s.pid,
        state: s.state,
        info: s.info,
        createdAt: toTimestamp(s.createdAt),
        exitedAt: toTimestamp(s.exitedAt),
        extra: undefined,
        address: s.address,
        version: s.version,
      });
    }),
    Shutdown: unary("Shutdown", async (r: { sandboxId: string }) => {
      await svc.shutdown(r.sandboxId);
      return {};
    }),
    Metrics: unary("Metrics", async (r: { sandboxId: string }) => {
      const m = await svc.metrics(r.sandboxId);
      return { metrics: { timestamp: toTimestamp(m.timestamp), id: m.id, data: m.data } };
    }),
    Update: unary("Update", async (r: ControllerUpdateRequest) => {
      await svc.update(r.sandboxId, {
        fields: r.fields,
        labels: { ...(r.sandbox?.labels ?? {}) },
        extensions: Object.fromEntries(
          Object.entries(r.sandbox?.extensions ?? {}).map(([k, v]) => [k, toStoredAny(v)]),
        ),
      });
      return {};
    }),
  };
}

/** A running Controller server. */
export interface ControllerServer {
  readonly path: string;
  close(): Promise<void>;
}

/**
 * Serves the Controller on `path` (mode 0600). A live server already on that
 * path is an error; a stale socket file is replaced.
 */
export async function serveController(
  path: string,
  svc: SandboxService,
  onCall?: () => void,
): Promise<ControllerServer> {
  await ensureSocketFree(path);
  const server = new grpc.Server({ "grpc.max_receive_message_length": 16 << 20 });
  server.addService(grpcServiceDefinition(ControllerDefinition), controllerHandlers(svc, onCall));
  // The socket is born 0600 (a chmod after bind would leave a moment in which it is
  // not, and a client could already connect): the umask says so while it is made.
  const umask = Deno.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) =>
      server.bindAsync(
        `unix://${path}`,
        grpc.ServerCredentials.createInsecure(),
        (err) => err ? reject(err) : resolve(),
      )
    );
  } finally {
    Deno.umask(umask);
  }
  await Deno.chmod(path, 0o600);
  return {
    path,
    close: () =>
      new Promise<void>((resolve) => {
        server.tryShutdown(() => resolve());
        setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 2000);
      }).finally(() => Deno.remove(path).catch(() => {})),
  };
}

/** Fails if something answers on `path`; removes the file if nothing does. */
export async function ensureSocketFree(path: string): Promise<void> {
  let st: Deno.FileInfo;
  try {
    st = await Deno.lstat(path);
  } catch {
    return;
  }
  // Only a socket is ours to replace: a file or link there is someone's mistake, not stale state.
  if (!st.isSocket) {
    throw new InvalidArgumentError(
      `--listen "${path}" exists and is not a socket: remove it or choose another path`,
    );
  }
  try {
    const c = await Deno.connect({ transport: "unix", path });
    c.close();
  } catch {
    await Deno.remove(path);
    log.info("removed stale socket", { path });
    return;
  }
  throw new UnavailableError(`Another sandboxer is already listening on "${path}"`);
}
