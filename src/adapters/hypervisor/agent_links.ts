/**
 * One ttrpc connection per VM to its agent, shared by the pod's lifecycle
 * (SetupSandbox, SyncClock) and its containers (Task API, Streaming): over
 * vsock where the VM has a vhost-vsock device, hybrid vsock (a unix socket the
 * VMM relays) on Cloud Hypervisor, else over the virtio-serial chardev, which
 * takes one host connection at a time. It is made again when
 * it drops (a restarted daemon, a transient error) as long as the VM runs.
 *
 * @module
 */
import { Code, DeadlineExceededError, UnavailableError } from "../../domain/errors.ts";
import type { RecordedSpan } from "../../lib/trace_recorder.ts";
import { BOOT_ID, BOOT_SERVICE, TRACE_DRAIN, TRACE_SERVICE } from "../../ports/agent_protocol.ts";
import type { AgentAddress } from "../../ports/hypervisor.ts";
import { SandboxServiceDefinition } from "../../gen/kuasar/sandbox.ts";
import { TtrpcClient } from "../ttrpc/client.ts";
import { type UnaryClient, unaryClient } from "../ttrpc/typed.ts";
import { TaskDefinition as TaskV3 } from "../../gen/containerd/runtime/task/v3/shim.ts";

/** How long a dropped connection is retried before calls fail. */
const RECONNECT_MS = 10_000;

/** Where an agent listens: vsock (a host with vhost-vsock) or a unix socket the VMM made. */
export type { AgentAddress };

/** A pod's connection to its agent, with typed clients of the agent's services. */
export interface AgentLink {
  readonly client: TtrpcClient;
  readonly tasks: UnaryClient<typeof TaskV3>;
  readonly sandbox: UnaryClient<typeof SandboxServiceDefinition>;
}

/** Agent connections by pod. */
export class AgentLinks {
  #links = new Map<string, Promise<AgentLink>>();
  #addressesOf: (sandboxId: string) => Promise<AgentAddress[]>;
  #verify: ((sandboxId: string, client: TtrpcClient) => Promise<void>) | undefined;

  /**
   * `addressesOf` lists a pod's agent addresses, the preferred first; `verify` is asked of each
   * new connection before it is used, and may refuse it (the guest behind it is not the pod's).
   */
  constructor(
    addressesOf: (sandboxId: string) => Promise<AgentAddress[]>,
    verify?: (sandboxId: string, client: TtrpcClient) => Promise<void>,
  ) {
    this.#addressesOf = addressesOf;
    this.#verify = verify;
  }

  /**
   * The pod's connection once its agent answers Check, waiting for it until
   * `deadline` (a `performance.now()` value): the VM may still be booting.
   */
  connect(sandboxId: string, deadline: number): Promise<AgentLink> {
    const cur = this.#links.get(sandboxId);
    const next = (async () => {
      const old = await cur?.catch(() => undefined);
      if (old && !old.client.closed) return old;
      const client = await dial(await this.#addressesOf(sandboxId), deadline);
      try {
        await this.#verify?.(sandboxId, client);
      } catch (e) {
        client.close();
        throw e;
      }
      return {
        client,
        tasks: unaryClient(client, TaskV3),
        sandbox: unaryClient(client, SandboxServiceDefinition),
      };
    })();
    this.#links.set(sandboxId, next);
    next.catch(() => {
      if (this.#links.get(sandboxId) === next) this.#links.delete(sandboxId);
    });
    return next;
  }

  /** The pod's connection, made again if it dropped. */
  get(sandboxId: string): Promise<AgentLink> {
    return this.connect(sandboxId, performance.now() + RECONNECT_MS);
  }

  /** The spans every connected agent recorded since the last call (an older agent has none). */
  async drainSpans(): Promise<RecordedSpan[]> {
    const out: RecordedSpan[] = [];
    for (const link of this.#links.values()) {
      const l = await link.catch(() => undefined);
      if (!l || l.client.closed) continue;
      try {
        const bytes = await l.client.call(TRACE_SERVICE, TRACE_DRAIN, new Uint8Array(), {
          timeoutMs: 2_000,
        });
        const answer = JSON.parse(new TextDecoder().decode(bytes)) as { spans?: unknown };
        if (Array.isArray(answer?.spans)) {
          out.push(...answer.spans.slice(0, 1000) as RecordedSpan[]);
        }
      } catch { /* an agent without tracing, or gone */ }
    }
    return out;
  }

  /** The guest kernel's boot id behind `client`; undefined from an agent that does not say. */
  static async bootId(client: TtrpcClient): Promise<string | undefined> {
    try {
      const b = await client.call(BOOT_SERVICE, BOOT_ID, new Uint8Array(), { timeoutMs: 5_000 });
      return new TextDecoder().decode(b) || undefined;
    } catch (e) {
      if ((e as { code?: number }).code === Code.UNIMPLEMENTED) return undefined; // an older guest
      throw e;
    }
  }

  /** Closes the pod's connection (the VM is gone). */
  async drop(sandboxId: string): Promise<void> {
    const cur = this.#links.get(sandboxId);
    this.#links.delete(sandboxId);
    (await cur?.catch(() => undefined))?.client.close();
  }
}

/** A stream to the agent at `addr` (for hybrid vsock, once the VMM has connected it). */
async function open(addr: AgentAddress, deadline: number): Promise<Deno.Conn> {
  if (addr.transport === "vsock") {
    return await Deno.connect({ transport: "vsock", cid: addr.cid, port: addr.port });
  }
  const conn = await Deno.connect({ transport: "unix", path: addr.path });
  if (addr.transport === "unix") return conn;
  try {
    await hybridVsockConnect(conn, addr.port, Math.max(500, deadline - performance.now()));
    return conn;
  } catch (e) {
    try {
      conn.close();
    } catch { /* closed by the handshake's timer */ }
    throw e;
  }
}

/**
 * The hybrid vsock handshake: `CONNECT <port>\n`, then the VMM's line `OK <host port>\n` (read
 * a byte at a time: what follows it is the agent's). A guest not listening yet closes the socket.
 */
export async function hybridVsockConnect(
  conn: Deno.Conn,
  port: number,
  timeoutMs: number,
): Promise<void> {
  await conn.write(new TextEncoder().encode(`CONNECT ${port}\n`));
  const line: number[] = [];
  const one = new Uint8Array(1);
  let late = false;
  const timer = setTimeout(() => (late = true, conn.close()), timeoutMs);
  try {
    while (line.length < 64) {
      const n = await conn.read(one);
      if (n === null && !late) {
        throw new UnavailableError(`hybrid vsock: port ${port} refused (the VMM closed)`);
      }
      if (n === null) throw new Error(`no answer within ${timeoutMs} ms`);
      if (one[0] === 0x0a) break;
      line.push(one[0]);
    }
  } catch (e) {
    if (e instanceof UnavailableError) throw e;
    throw new UnavailableError(`hybrid vsock: no answer to CONNECT ${port}: ${String(e)}`);
  } finally {
    clearTimeout(timer);
  }
  const text = new TextDecoder().decode(Uint8Array.from(line));
  if (!/^OK \d+$/.test(text)) {
    throw new UnavailableError(`hybrid vsock: CONNECT ${port} answered ${JSON.stringify(text)}`);
  }
}

/** Connects to the first address whose agent answers Check, trying them in turn until `deadline`. */
export async function dial(
  addresses: readonly AgentAddress[],
  deadline: number,
): Promise<TtrpcClient> {
  let last: unknown;
  while (performance.now() < deadline) {
    for (const addr of addresses) {
      let client: TtrpcClient | undefined;
      try {
        const conn = await open(addr, deadline);
        client = new TtrpcClient(conn);
        await unaryClient(client, SandboxServiceDefinition).check({ service: "" }, {
          timeoutMs: Math.max(500, Math.min(5_000, deadline - performance.now())),
        });
        return client;
      } catch (e) {
        last = e;
        client?.close();
      }
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  if (last instanceof Deno.errors.NotFound || last instanceof Deno.errors.ConnectionRefused) {
    throw new UnavailableError(`The VM's agent is not reachable: ${String(last)}`);
  }
  throw new DeadlineExceededError(`The VM's agent did not answer: ${String(last)}`);
}
