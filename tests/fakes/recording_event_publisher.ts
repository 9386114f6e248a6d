/**
 * An `EventPublisher` for unit tests that keeps every event in order.
 *
 * @module
 */
import type { EventPublisher, TaskEvent } from "../../src/ports/event_publisher.ts";

/** An event and the containerd namespace it was published in. */
export interface PublishedEvent {
  readonly namespace: string;
  readonly event: TaskEvent;
}

/** Records published events. */
export class RecordingEventPublisher implements EventPublisher {
  readonly published: PublishedEvent[] = [];
  closed = false;

  publish(namespace: string, event: TaskEvent): void {
    if (this.closed) throw new Error("publish after close");
    this.published.push({ namespace, event });
  }

  flush(): Promise<void> {
    return Promise.resolve();
  }

  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }

  /** The topics published so far, in order. */
  topics(): string[] {
    return this.published.map((p) => p.event.topic);
  }

  /** The events of one topic, narrowed to its type. */
  ofTopic<T extends TaskEvent["topic"]>(topic: T): Extract<TaskEvent, { topic: T }>[] {
    return this.published.map((p) => p.event).filter((e): e is Extract<TaskEvent, { topic: T }> =>
      e.topic === topic
    );
  }
}
