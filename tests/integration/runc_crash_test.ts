/**
 * "SIGKILL at any moment loses nothing and leaks nothing": a client runs pod
 * and container lifecycles back to back while the daemon is killed at a
 * random moment, several times over. After the last restart every pod the
 * client ever asked for either answers or is unknown, and Stop + Shutdown of
 * all of them leaves no process, mount, cgroup or file behind. The moments
 * come from a seeded generator; the seed is printed (KUASAR_CRASH_SEED
 * replays a run).
 */
import assert from "node:assert/strict";
import { TestDaemon } from "../support/daemon.ts";
import { createContainer, randomId, runToExit, startPod } from "../support/pod.ts";
import { runcUnavailable, skipUnless } from "../support/env.ts";
import { leftovers } from "../support/leaks.ts";
import { Code } from "../../src/domain/errors.ts";

const ROUNDS = 10;

/** mulberry32: a small seeded generator of numbers in [0, 1). */
function generator(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One pod's whole life, as the kubelet drives it through containerd. */
async function lifecycle(d: TestDaemon, podId: string): Promise<void> {
  const pod = await startPod(d, { id: podId });
  const c = await createContainer(d, pod, { args: ["sh", "-c", "exit 3"] });
  assert.equal(await runToExit(pod, c.id), 3);
  await d.controller.stop(pod.id, 1);
  await d.controller.shutdown(pod.id);
}

Deno.test({
  name: "runC: SIGKILL at random moments of pod lifecycles leaks nothing after recovery",
  ...skipUnless(runcUnavailable(), "runC crash"),
  async fn() {
    const seed = Number(Deno.env.get("KUASAR_CRASH_SEED") ?? Date.now() % 1_000_000);
    console.log(`crash moments from seed ${seed} (KUASAR_CRASH_SEED=${seed} replays them)`);
    const random = generator(seed);
    let d = await TestDaemon.start();
    const podIds: string[] = [];
    let completed = 0;
    const wrong: unknown[] = [];
    try {
      for (let round = 0; round < ROUNDS; round++) {
        const current = d;
        let stopped = false;
        const client = (async () => {
          while (!stopped) {
            const id = randomId();
            podIds.push(id);
            await lifecycle(current, id);
            completed++;
          }
        })().catch((e) => {
          // A call the crash cut off fails in many ways (unavailable, a reset
          // stream, not found after the restart); a wrong answer is a bug.
          if (e instanceof assert.AssertionError) wrong.push(e);
        });
        await new Promise((r) => setTimeout(r, 50 + random() * 700));
        // (If it died by itself meanwhile, see below, this is the restart.)
        await d.kill9();
        stopped = true;
        d = await TestDaemon.start({ base: d.base });
        // Calls in flight through a pod's task socket are answered by the new daemon.
        await client;
        await current.kill9(); // closes the client it made after the crash (the process is gone)
      }
      // A daemon that died by itself (as Deno 2.9.6's HTTP/2 made it on a
      // client's GOAWAY before src/adapters/grpc/http2_goaway_guard.ts) is one
      // more crash nothing may be lost to: restart it, as systemd would.
      await new Promise((r) => setTimeout(r, 300)); // the last client's close has arrived
      if (d.died) {
        console.log("the daemon died by itself; restarting it as systemd would");
        d = await TestDaemon.start({ base: d.base });
      }
      console.log(`${podIds.length} pods asked for, ${completed} lifecycles completed`);
      assert.ok(completed > 0, "lifecycles ran between the crashes");
      assert.deepEqual(wrong, [], "no wrong answer around a crash");
      for (const id of podIds) {
        // Unknown (NOT_FOUND) is fine: the crash came before Create took it, or after Shutdown.
        const known = await d.controller.status(id).then(() => true, (e) => {
          if ((e as { code?: number }).code === Code.NOT_FOUND) return false;
          throw e;
        });
        if (!known) continue;
        await d.controller.stop(id, 1);
        await d.controller.shutdown(id);
      }
      assert.deepEqual(await leftovers(d, podIds), [], `seed ${seed}`);
    } catch (e) {
      console.error(await d.logs());
      throw e;
    } finally {
      await d.cleanup();
    }
  },
});
