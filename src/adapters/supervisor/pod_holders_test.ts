import assert from "node:assert/strict";
import type { SandboxRecord } from "../../domain/sandbox.ts";
import type { Supervisor } from "../../ports/supervisor.ts";
import { PodHolders, type PodProcessState } from "./pod_holders.ts";
import { isPoolVmToken, poolVmToken } from "./process_tokens.ts";

/** A supervisor that records which exit-record tokens are read, watched, killed and removed. */
function recordingSupervisor() {
  const used: string[] = [];
  const sup = {
    exits: {
      read: (t: string) => (used.push(`read ${t}`), Promise.resolve(undefined)),
      alive: (t: string) => (used.push(`alive ${t}`), Promise.resolve(true)),
      expect: (t: string) => void used.push(`expect ${t}`),
      remove: (t: string) => (used.push(`remove ${t}`), Promise.resolve()),
    },
    killOrphans: (t: string) => (used.push(`kill ${t}`), Promise.resolve(0)),
  };
  return { used, sup: sup as unknown as Supervisor };
}

function record(holderToken: unknown): SandboxRecord<PodProcessState> {
  return {
    id: "pod1",
    pid: 42,
    backend: { holderPid: 41, holderToken } as PodProcessState,
  } as unknown as SandboxRecord<PodProcessState>;
}

Deno.test("PodHolders follows a pod on a pool VM by the token its record keeps", async () => {
  const { used, sup } = recordingSupervisor();
  const h = new PodHolders(sup, () => {});
  assert.deepEqual(await h.recoverRunning(record("p@0123456789ab")), { alive: true });
  assert.deepEqual(used, ["read p@0123456789ab", "alive p@0123456789ab", "expect p@0123456789ab"]);
  used.length = 0;
  await h.forget("pod1");
  assert.deepEqual(used.sort(), [
    "kill p@0123456789ab",
    "kill s@pod1",
    "remove p@0123456789ab",
    "remove s@pod1",
  ]);
});

Deno.test("PodHolders: a recorded token that is no pool VM's is not trusted", async () => {
  for (const bad of ["../../etc/passwd", "s@other-pod", "p@../x", 7, "p@0123456789abc"]) {
    const { used, sup } = recordingSupervisor();
    const h = new PodHolders(sup, () => {});
    await h.recoverRunning(record(bad));
    assert.ok(used.every((u) => u.endsWith(" s@pod1")), `${bad}: ${used}`);
    used.length = 0;
    await h.forget("pod2", bad as string);
    assert.deepEqual(used.sort(), ["kill s@pod2", "remove s@pod2"], String(bad));
  }
  assert.ok(isPoolVmToken(poolVmToken("0123456789ab")));
});
