/**
 * A typed gRPC client of the Sandbox Controller on a unix socket, used by
 * `kuasar ctl` and the tests. Errors come back as the project's error
 * classes (via `fromStatus`).
 *
 * @module
 */
import "./http2_goaway_guard.ts";
import * as grpc from "@grpc/grpc-js";
import {
  type ControllerCreateRequest,
  type ControllerCreateResponse,
  ControllerDefinition,
  type ControllerMetricsResponse,
  type ControllerPlatformResponse,
  type ControllerStartResponse,
  type ControllerStatusResponse,
  type ControllerUpdateRequest,
  type ControllerWaitResponse,
} from "../../gen/containerd/services/sandbox/v1/sandbox.ts";
import { fromStatus } from "../rpc_status.ts";
import { grpcServiceDefinition } from "./controller_server.ts";

type Partial<T> = { [K in keyof T]?: T[K] };

/** Client of `containerd.services.sandbox.v1.Controller`. */
export class ControllerClient {
  #client: grpc.Client & Record<string, grpc.MethodDefinition<unknown, unknown> | unknown>;

  constructor(socketPath: string) {
    const Ctor = grpc.makeGenericClientConstructor(
      grpcServiceDefinition(ControllerDefinition),
      "Controller",
    );
    // A connection of its own: grpc-js otherwise shares one per target among
    // clients, and after a sandboxer restart a new client would inherit the
    // old connection's reconnect back-off and fail calls that would succeed.
    this.#client = new Ctor(`unix://${socketPath}`, grpc.credentials.createInsecure(), {
      "grpc.use_local_subchannel_pool": 1,
    }) as never;
  }

  #call<T>(method: string, req: unknown, timeoutMs?: number): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const fn = this.#client[method] as (
        r: unknown,
        md: grpc.Metadata,
        o: grpc.CallOptions,
        cb: (e: grpc.ServiceError | null, res: T) => void,
      ) => void;
      const opts: grpc.CallOptions = timeoutMs ? { deadline: Date.now() + timeoutMs } : {};
      fn.call(this.#client, req, new grpc.Metadata(), opts, (err, res) => {
        if (err) reject(fromStatus(err.code, err.details || err.message));
        else resolve(res);
      });
    });
  }

  create(
    req: Partial<ControllerCreateRequest> & { sandboxId: string },
  ): Promise<ControllerCreateResponse> {
    return this.#call("Create", {
      rootfs: [],
      options: undefined,
      netnsPath: "",
      annotations: {},
      sandbox: undefined,
      sandboxer: "",
      ...req,
    });
  }

  start(sandboxId: string): Promise<ControllerStartResponse> {
    return this.#call("Start", { sandboxId, sandboxer: "" });
  }

  platform(sandboxId: string): Promise<ControllerPlatformResponse> {
    return this.#call("Platform", { sandboxId, sandboxer: "" });
  }

  stop(sandboxId: string, timeoutSecs = 0): Promise<unknown> {
    return this.#call("Stop", { sandboxId, timeoutSecs, sandboxer: "" });
  }

  wait(sandboxId: string, timeoutMs?: number): Promise<ControllerWaitResponse> {
    return this.#call("Wait", { sandboxId, sandboxer: "" }, timeoutMs);
  }

  status(sandboxId: string, verbose = false): Promise<ControllerStatusResponse> {
    return this.#call("Status", { sandboxId, verbose, sandboxer: "" });
  }

  shutdown(sandboxId: string): Promise<unknown> {
    return this.#call("Shutdown", { sandboxId, sandboxer: "" });
  }

  metrics(sandboxId: string): Promise<ControllerMetricsResponse> {
    return this.#call("Metrics", { sandboxId, sandboxer: "" });
  }

  update(req: Partial<ControllerUpdateRequest> & { sandboxId: string }): Promise<unknown> {
    return this.#call("Update", { sandboxer: "", sandbox: undefined, fields: [], ...req });
  }

  close(): void {
    this.#client.close();
  }
}
