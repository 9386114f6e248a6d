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
