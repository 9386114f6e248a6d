import assert from "node:assert/strict";
import { emptyPodConfig, type PodConfig } from "../../domain/pod_config.ts";
import type { SandboxExit, SandboxRecord } from "../../domain/sandbox.ts";
import { RecordingSupervisor } from "../../../tests/fakes/recording_supervisor.ts";
import type { PodProcessState } from "../supervisor/pod_holders.ts";
import { RuncSandboxBackend } from "./runc_sandbox_backend.ts";
import { sandboxRecord } from "../../../tests/fakes/records.ts";

function record(
  id: string,
  pod: Partial<PodConfig> = {},
  netnsPath = "",
): SandboxRecord<PodProcessState> {
  return sandboxRecord<PodProcessState>(id, {
    kind: "runc",
    state: "created",
    pid: 0,
    netnsPath,
    pod: { ...emptyPodConfig(), ...pod },
  });
}

function backend() {
  const sup = new RecordingSupervisor();
  const b = new RuncSandboxBackend({ dir: "/nonexistent", supervisor: sup });
  const exits: [string, SandboxExit][] = [];
  b.setExitListener({ sandboxExited: (id, exit) => exits.push([id, exit]) });
  return { sup, b, exits };
}

Deno.test("runc pod: Start holds the namespaces the pod config asks for", async () => {
  const { sup, b } = backend();
  const cni = record("cni", { hostname: "web-0" }, "/var/run/netns/cni-1");
  const { pid } = await b.start(cni);
  // The pod's pid is the namespace init's; the holder's own is kept for recovery.
  assert.equal(pid, sup.started[0].pid);
  assert.equal(cni.backend.holderPid, sup.started[0].helperPid);
  const host = record("host", { network: "node", ipc: "node", hostname: "ignored" });
  await b.start(host);
  const isolated = record("isolated");
  await b.start(isolated);
  assert.deepEqual(sup.holds.map((h) => h.token), ["s@cni", "s@host", "s@isolated"]);
  const [a, h, i] = sup.holds.map((x) => x.opts);
  assert.equal(a.netnsPath, "/var/run/netns/cni-1");
  assert.equal(a.hostname, "web-0");
  assert.equal(a.hostNetwork || a.hostUts || a.hostIpc, false);
  // A host-network pod shares the node's UTS namespace too, as in Kubernetes.
  assert.equal(h.hostNetwork && h.hostUts && h.hostIpc, true);
  assert.equal(i.netnsPath, undefined);
  assert.equal(i.hostNetwork, false);
  // Unprivileged ports from 0 in a pod's own network namespace, not on the host's.
  assert.ok(a.sysctls?.some(([k]) => k === "net.ipv4.ip_unprivileged_port_start"));
  assert.ok(!h.sysctls?.some(([k]) => k === "net.ipv4.ip_unprivileged_port_start"));
});

Deno.test("runc pod: the holder's exit is the pod's; Stop after it answers at once", async () => {
  const { sup, b, exits } = backend();
  const r = record("p1");
  r.pid = (await b.start(r)).pid;
  await sup.exits.exit("s@p1", 137);
  assert.deepEqual(exits.map(([id, e]) => [id, e.status]), [["p1", 137]]);
  assert.equal((await b.stop(r, 1000)).status, 137);
});

Deno.test("runc pod: Stop asks with SIGTERM, and the pod ends with its holder's exit", async () => {
  const { sup, b } = backend();
  const child = new Deno.Command("sleep", { args: ["30"], stdout: "null", stderr: "null" }).spawn();
  try {
    sup.nextProcess = { pid: child.pid, helperPid: 4_300_500 };
    const r = record("p2");
    await b.start(r);
    // The holder records the exit of its init once the signal took it down.
    child.status.then((s) => sup.exits.exit("s@p2", 128 + (s.signal === "SIGTERM" ? 15 : 0)));
    assert.equal((await b.stop(r, 10_000)).status, 143);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* ended */ }
    await child.status;
  }
});

Deno.test("runc pod: Stop of a pod never started has nothing to signal", async () => {
  const { b } = backend();
  assert.equal((await b.stop(record("never"), 1000)).status, 0);
});

Deno.test("runc pod: recovery follows a live holder, reports one that ended, and undoes an unfinished Start", async () => {
  const { sup, b, exits } = backend();
  const ended = {
    ...record("ended"),
    state: "running" as const,
    backend: { holderPid: 4_300_600 },
  };
  await sup.exits.exit("s@ended", 0);
  const rec = sup.exits.records.get("s@ended")!;
  assert.deepEqual(await b.recover(ended), { alive: false, exit: { status: 0, at: rec.at } });

  const gone = { ...record("gone"), state: "running" as const, backend: { holderPid: 4_300_700 } };
  const r = await b.recover(gone);
  assert.equal(r.alive ? -1 : r.exit.status, 255, "a holder gone without a record: unknown");

  const live = {
    ...record("live"),
    state: "running" as const,
    pid: 4_300_801,
    backend: { holderPid: 4_300_800 },
  };
  sup.exits.running.add("s@live");
  assert.deepEqual(await b.recover(live), { alive: true });
  await sup.exits.exit("s@live", 9);
  assert.deepEqual(exits.map(([id, e]) => [id, e.status]), [["live", 9]]);

  // A Start the daemon died in: whatever carries the pod's exit file is killed.
  const unfinished = record("unfinished");
  unfinished.pid = 4_300_901;
  await b.recover(unfinished);
  assert.deepEqual(sup.orphanKills, ["s@unfinished"]);
  assert.equal(unfinished.pid, 0);
});

Deno.test("runc pod: cleanup forgets the pod and kills what still carries its exit file", async () => {
  const { sup, b } = backend();
  const r = record("c1");
  await b.start(r);
  await sup.exits.exit("s@c1", 0);
  await b.cleanup(r);
  assert.deepEqual(sup.orphanKills, ["s@c1"]);
  assert.equal(sup.exits.records.has("s@c1"), false, "its exit record goes");
});
