/**
 * A stand-in for containerd's ttrpc Events service (what a sandboxer is given
 * with --containerd-address): it records every forwarded event.
 *
 * @module
 */
import { join } from "node:path";
import { EventsDefinition } from "../../src/gen/containerd/services/ttrpc/events/v1/events.ts";
import { TtrpcServer } from "../../src/adapters/ttrpc/server.ts";
import { unaryMethods } from "../../src/adapters/ttrpc/typed.ts";
import { TestDaemon, withDaemon } from "./daemon.ts";

/** An event as forwarded. */
export interface ForwardedEvent {
  readonly topic: string;
  readonly namespace: string;
  readonly typeUrl: string;
  readonly value: Uint8Array;
}

/** A listening Events service. */
export interface EventsSink {
  /** The socket to pass as --containerd-address. */
  readonly address: string;
  readonly events: ForwardedEvent[];
  /** Resolves once `pred` holds for the events so far (or after `timeoutMs`). */
  until(pred: (events: ForwardedEvent[]) => boolean, timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

/** Serves the Events service on `<dir>/containerd.sock.ttrpc`. */
export function startEventsSink(dir: string): EventsSink {
  const events: ForwardedEvent[] = [];
  const server = new TtrpcServer();
  server.register(
    EventsDefinition.fullName,
    unaryMethods(EventsDefinition, {
      forward: (r) => {
        const e = r.envelope!;
        events.push({
          topic: e.topic,
          namespace: e.namespace,
          typeUrl: e.event!.typeUrl,
          value: e.event!.value,
        });
        return Promise.resolve({});
      },
    }),
  );
  const address = join(dir, "containerd.sock.ttrpc");
  const serving = server.serve(Deno.listen({ transport: "unix", path: address }));
  return {
    address,
    events,
    async until(pred, timeoutMs = 5_000) {
      const deadline = Date.now() + timeoutMs;
      while (!pred(events) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    },
    async close() {
      server.close();
      await serving;
    },
  };
}

/** Runs `fn` with an Events sink in a directory of its own; both are gone afterwards. */
export async function withEventsSink(fn: (sink: EventsSink) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "k-ev-" });
  const sink = startEventsSink(dir);
  try {
    await fn(sink);
  } finally {
    await sink.close();
    await Deno.remove(dir, { recursive: true });
  }
}

/** Runs `fn` against a runC sandboxer whose task events go to a sink. */
export function withEventsDaemon(
  fn: (d: TestDaemon, sink: EventsSink) => Promise<void>,
): Promise<void> {
  return withEventsSink((sink) =>
    withDaemon(
      (d) => fn(d, sink),
      () => TestDaemon.start({ extraArgs: ["--containerd-address", sink.address] }),
    )
  );
}
