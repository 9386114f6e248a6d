/**
 * One ttrpc connection per VM to its agent, shared by the pod's lifecycle
 * (SetupSandbox, SyncClock) and its containers (Task API, Streaming). The
 * virtio-serial chardev takes one host connection at a time, so there is
 * exactly one; it is made again when it drops (a restarted daemon, a
 * transient error) as long as the VM runs.
 *
 * @module
 */
import { DeadlineExceededError, UnavailableError } from "../../domain/errors.ts";
import { SandboxServiceDefinition } from "../../gen/kuasar/sandbox.ts";
import { TtrpcClient } from "../ttrpc/client.ts";
import { unaryClient } from "../ttrpc/typed.ts";

/** How long a dropped connection is retried before calls fail. */
const RECONNECT_MS = 10_000;

/** Agent connections by pod. */
export class AgentLinks {
  #links = new Map<string, Promise<TtrpcClient>>();
  #socketOf: (sandboxId: string) => Promise<string>;

  constructor(socketOf: (sandboxId: string) => Promise<string>) {
    this.#socketOf = socketOf;
  }

  /**
   * The pod's connection once its agent answers Check, waiting for it until
   * `deadline` (a `performance.now()` value): the VM may still be booting.
   */
  connect(sandboxId: string, deadline: number): Promise<TtrpcClient> {
    const cur = this.#links.get(sandboxId);
    const next = (async () => {
      const old = await cur?.catch(() => undefined);
      if (old && !old.closed) return old;
      return await dial(await this.#socketOf(sandboxId), deadline);
    })();
    this.#links.set(sandboxId, next);
    next.catch(() => {
      if (this.#links.get(sandboxId) === next) this.#links.delete(sandboxId);
    });
    return next;
  }

  /** The pod's connection, made again if it dropped. */
  get(sandboxId: string): Promise<TtrpcClient> {
    return this.connect(sandboxId, performance.now() + RECONNECT_MS);
  }

  /** Closes the pod's connection (the VM is gone). */
  async drop(sandboxId: string): Promise<void> {
    const cur = this.#links.get(sandboxId);
    this.#links.delete(sandboxId);
    (await cur?.catch(() => undefined))?.close();
  }
}

async function dial(path: string, deadline: number): Promise<TtrpcClient> {
  let last: unknown;
  while (performance.now() < deadline) {
    let client: TtrpcClient | undefined;
    try {
      client = new TtrpcClient(await Deno.connect({ transport: "unix", path }));
      await unaryClient(client, SandboxServiceDefinition).check({ service: "" }, {
        timeoutMs: Math.max(500, Math.min(5_000, deadline - performance.now())),
      });
      return client;
    } catch (e) {
      last = e;
      client?.close();
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  if (last instanceof Deno.errors.NotFound || last instanceof Deno.errors.ConnectionRefused) {
    throw new UnavailableError(`The VM's agent socket is gone: ${String(last)}`);
  }
  throw new DeadlineExceededError(`The VM's agent did not answer: ${String(last)}`);
}
