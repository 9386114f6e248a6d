import assert from "node:assert/strict";
import { join } from "node:path";
import { Logger } from "../../lib/log.ts";
import { now } from "../../domain/time.ts";
import { startEventsSink } from "../../../tests/support/events.ts";
import { ContainerdEventPublisher } from "./containerd_events.ts";

const exit = (id: string) => ({
  topic: "/tasks/exit" as const,
  containerId: id,
  id,
  pid: 1,
  exitStatus: 0,
  exitedAt: now(),
});

Deno.test("events: a node without containerd's socket is told once; events flow once it appears", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kuasar-events-" });
  const lines: { level: string; msg: string }[] = [];
  Logger.setSink((l) => lines.push(JSON.parse(l)));
  const level = Logger.level;
  Logger.setLevel("debug");
  const path = join(dir, "containerd.sock.ttrpc");
  const pub = new ContainerdEventPublisher(path, { retryMs: 0 });
  try {
    for (const id of ["a", "b", "c"]) pub.publish("k8s.io", exit(id));
    await pub.flush();
    const info = lines.filter((l) => l.level === "info");
    assert.equal(info.length, 1, JSON.stringify(info));
    assert.match(info[0].msg, /does not exist: task events are dropped/);
    assert.equal(lines.filter((l) => /cannot forward/.test(l.msg)).length, 3);

    // containerd comes up: the next events reach it, in order.
    const sink = startEventsSink(dir);
    pub.publish("k8s.io", exit("d"));
    pub.publish("ns2", { topic: "/tasks/oom", containerId: "d" });
    await pub.flush();
    assert.deepEqual(sink.events.map((e) => `${e.namespace} ${e.topic}`), [
      "k8s.io /tasks/exit",
      "ns2 /tasks/oom",
    ]);
    assert.ok(lines.some((l) => /is back/.test(l.msg)));
    await pub.close();
    await sink.close();
  } finally {
    Logger.setSink((l) => console.error(l));
    Logger.setLevel(level);
    await pub.close().catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
});
