/**
 * Publishes task events to containerd's ttrpc Events service
 * (`containerd.services.events.ttrpc.v1.Events/Forward`), the way shims do.
 * Events are queued and sent in order by one sender; while containerd cannot
 * be reached they are logged and dropped (containerd re-reads task state on
 * reconnect, so a lost event is not a lost exit). A node without containerd's
 * socket (iSulad's, which learns exits through Wait) is told once, not per
 * event.
 *
 * @module
 */
import * as ev from "../../gen/containerd/events/task.ts";
import { EventsDefinition } from "../../gen/containerd/services/ttrpc/events/v1/events.ts";
import type { EventPublisher, TaskEvent } from "../../ports/event_publisher.ts";
import { now } from "../../domain/time.ts";
import { log } from "../../lib/log.ts";
import { toPbMount, toTimestamp } from "../convert.ts";
import { TtrpcClient } from "../ttrpc/client.ts";
import { unaryClient } from "../ttrpc/typed.ts";
import { NAMESPACE_KEY } from "../task/task_endpoint.ts";

/** Encodes an event as containerd's typeurl does: the bare message name. */
export function encodeEvent(e: TaskEvent): { typeUrl: string; value: Uint8Array } {
  const enc = <T>(name: string, type: { encode(m: T): { finish(): Uint8Array } }, m: T) => ({
    typeUrl: `containerd.events.${name}`,
    value: type.encode(m).finish(),
  });
  switch (e.topic) {
    case "/tasks/create":
      return enc("TaskCreate", ev.TaskCreate, {
        containerId: e.containerId,
        bundle: e.bundle,
        rootfs: e.rootfs.map(toPbMount),
        io: {
          stdin: e.io.stdin,
          stdout: e.io.stdout,
          stderr: e.io.stderr,
          terminal: e.io.terminal,
        },
        checkpoint: "",
        pid: e.pid,
      });
    case "/tasks/start":
      return enc("TaskStart", ev.TaskStart, { containerId: e.containerId, pid: e.pid });
    case "/tasks/exit":
      return enc("TaskExit", ev.TaskExit, {
        containerId: e.containerId,
        id: e.id,
        pid: e.pid,
        exitStatus: e.exitStatus,
        exitedAt: toTimestamp(e.exitedAt),
      });
    case "/tasks/delete":
      return enc("TaskDelete", ev.TaskDelete, {
        containerId: e.containerId,
        pid: e.pid,
        exitStatus: e.exitStatus,
        exitedAt: toTimestamp(e.exitedAt),
        id: e.id,
      });
    case "/tasks/exec-added":
      return enc("TaskExecAdded", ev.TaskExecAdded, {
        containerId: e.containerId,
        execId: e.execId,
      });
    case "/tasks/exec-started":
      return enc("TaskExecStarted", ev.TaskExecStarted, {
        containerId: e.containerId,
        execId: e.execId,
        pid: e.pid,
      });
    case "/tasks/oom":
      return enc("TaskOOM", ev.TaskOOM, { containerId: e.containerId });
    case "/tasks/paused":
      return enc("TaskPaused", ev.TaskPaused, { containerId: e.containerId });
    case "/tasks/resumed":
      return enc("TaskResumed", ev.TaskResumed, { containerId: e.containerId });
  }
}

const RETRY_MS = 5000;

/** Options of the publisher. */
export interface EventPublisherOptions {
  /** How long after a failed send the next connection is tried. */
  readonly retryMs?: number;
}

/** Sends events to containerd at `address` (a ttrpc unix socket), or only logs them without one. */
export class ContainerdEventPublisher implements EventPublisher {
  #address: string | undefined;
  #queue: { namespace: string; event: TaskEvent }[] = [];
  #sending: Promise<void> | undefined;
  #client: TtrpcClient | undefined;
  #downUntil = 0;
  #retryMs: number;
  /** The socket was found missing, and that was said. */
  #absent = false;
  #log = log.with({ component: "events" });

  constructor(address: string | undefined, opts: EventPublisherOptions = {}) {
    this.#address = address;
    this.#retryMs = opts.retryMs ?? RETRY_MS;
  }

  publish(namespace: string, event: TaskEvent): void {
    const fields = { topic: event.topic, namespace, container: event.containerId };
    // Without containerd's address the log is where the events go.
    if (!this.#address) return this.#log.info("task event", fields);
    this.#log.debug("task event", fields);
    this.#queue.push({ namespace, event });
    this.#sending ??= this.#drain().finally(() => (this.#sending = undefined));
  }

  async flush(): Promise<void> {
    while (this.#sending) await this.#sending;
  }

  async close(): Promise<void> {
    await this.flush();
    this.#client?.close();
  }

  async #drain(): Promise<void> {
    for (let item = this.#queue.shift(); item; item = this.#queue.shift()) {
      try {
        await this.#send(item.namespace, item.event);
        if (this.#absent) {
          this.#absent = false;
          this.#log.info("containerd's events socket is back: task events are forwarded", {
            address: this.#address,
          });
        }
      } catch (e) {
        this.#client?.close();
        this.#client = undefined;
        this.#downUntil = Date.now() + this.#retryMs;
        const fields = { topic: item.event.topic, address: this.#address, error: e };
        const missing = (e as Error).cause instanceof Deno.errors.NotFound;
        if (missing || this.#absent) {
          if (!this.#absent) {
            this.#log.info(
              "containerd's events socket does not exist: task events are dropped until it does " +
                '(an iSulad node needs none; --containerd-address "" turns them off)',
              { address: this.#address },
            );
          }
          this.#absent ||= missing;
          this.#log.debug("cannot forward event to containerd", fields);
        } else {
          this.#log.info("cannot forward event to containerd", fields);
        }
      }
    }
  }

  async #send(namespace: string, event: TaskEvent): Promise<void> {
    if (Date.now() < this.#downUntil) throw new Error("containerd unreachable, retrying later");
    if (!this.#client || this.#client.closed) {
      this.#client = await TtrpcClient.connectUnix(this.#address!);
    }
    const events = unaryClient(this.#client, EventsDefinition);
    await events.forward({
      envelope: {
        timestamp: toTimestamp(now()),
        namespace,
        topic: event.topic,
        event: encodeEvent(event),
      },
    }, { timeoutMs: 5000, metadata: { [NAMESPACE_KEY]: namespace } });
  }
}
