/**
 * Binds the generated service definitions (ts-proto "generic definitions")
 * to the byte-level ttrpc server and client, so handlers and callers work
 * with decoded messages.
 *
 * @module
 */
import { InvalidArgumentError } from "../../domain/errors.ts";
import type { CallOptions, TtrpcClient } from "./client.ts";
import type { CallContext, MethodHandler } from "./server.ts";

/** Encoder/decoder pair of a generated message type. */
export interface MessageFns<T> {
  encode(message: T): { finish(): Uint8Array };
  decode(input: Uint8Array): T;
  fromPartial(object: never): T;
}

/** A method of a generated service definition. */
export interface MethodDefinition<Req, Res> {
  readonly name: string;
  readonly requestType: MessageFns<Req>;
  readonly responseType: MessageFns<Res>;
  readonly requestStream: boolean;
  readonly responseStream: boolean;
}

/** A generated service definition. */
export interface ServiceDefinition {
  readonly fullName: string;
  // deno-lint-ignore no-explicit-any
  readonly methods: Record<string, MethodDefinition<any, any>>;
}

type Req<M> = M extends MethodDefinition<infer R, unknown> ? R : never;
type Res<M> = M extends MethodDefinition<unknown, infer R> ? R : never;

/** Handlers of the unary methods of a service, by the definition's (camelCase) keys. */
export type UnaryImplementation<D extends ServiceDefinition> = {
  [K in keyof D["methods"]]?: (
    req: Req<D["methods"][K]>,
    ctx: CallContext,
  ) => Promise<Res<D["methods"][K]>>;
};

/** Decodes a request, turning a decode failure into INVALID_ARGUMENT. */
export function decodeRequest<T>(type: MessageFns<T>, payload: Uint8Array, what: string): T {
  try {
    return type.decode(payload);
  } catch (e) {
    throw new InvalidArgumentError(`Cannot decode ${what}: ${(e as Error).message}`);
  }
}

/**
 * Turns typed handlers into ttrpc method handlers keyed by RPC name. Methods
 * of the definition without a handler are left out (the server answers
 * UNIMPLEMENTED for them).
 */
export function unaryMethods<D extends ServiceDefinition>(
  def: D,
  impl: UnaryImplementation<D>,
): Record<string, MethodHandler> {
  const out: Record<string, MethodHandler> = {};
  for (const [key, m] of Object.entries(def.methods)) {
    const fn =
      (impl as Record<string, ((r: unknown, c: CallContext) => Promise<unknown>) | undefined>)[key];
    if (!fn || m.requestStream || m.responseStream) continue;
    out[m.name] = {
      kind: "unary",
      handle: async (payload, ctx) => {
        const req = decodeRequest(m.requestType, payload, `${def.fullName}.${m.name} request`);
        const res = await fn(req, ctx);
        return m.responseType.encode(res).finish();
      },
    };
  }
  return out;
}

/** A typed unary client for a service. */
export type UnaryClient<D extends ServiceDefinition> = {
  [K in keyof D["methods"]]: (
    req: Req<D["methods"][K]>,
    opts?: CallOptions,
  ) => Promise<Res<D["methods"][K]>>;
};

/** Wraps a ttrpc client connection as a typed client of `def`. */
export function unaryClient<D extends ServiceDefinition>(
  client: TtrpcClient,
  def: D,
): UnaryClient<D> {
  const out: Record<string, unknown> = {};
  for (const [key, m] of Object.entries(def.methods)) {
    out[key] = async (req: unknown, opts?: CallOptions) => {
      const p = await client.call(def.fullName, m.name, m.requestType.encode(req).finish(), opts);
      return m.responseType.decode(p);
    };
  }
  return out as UnaryClient<D>;
}
