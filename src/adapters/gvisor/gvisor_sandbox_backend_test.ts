/**
 * Unit tests of the gVisor sandbox backend against the recording Supervisor:
 * runsc's argv, the root container's spec, what is recorded when, and how a
 * failed Start is undone. Nothing runs on the host; cgroup paths are named
 * after random ids, so their removal finds nothing.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { InternalError, NotFoundError } from "../../domain/errors.ts";
import type { OciSpec } from "../../domain/oci.ts";
import { emptyPodConfig, type PodConfig } from "../../domain/pod_config.ts";
import type { SandboxExit, SandboxRecord } from "../../domain/sandbox.ts";
import { now } from "../../domain/time.ts";
import type { SupervisedProcess } from "../../ports/supervisor.ts";
import { RecordingSupervisor } from "../../../tests/fakes/recording_supervisor.ts";
import { OciRuntimeCli } from "../oci/runtime_cli.ts";
import { StateLayout } from "../os/state_layout.ts";
import {
  CONTAINER_TYPE,
  type GvisorPodState,
  GvisorSandboxBackend,
  SANDBOX_ID,
} from "./gvisor_sandbox_backend.ts";
import { sandboxRecord } from "../../../tests/fakes/records.ts";

const RUNSC = "/opt/gvisor/runsc";

interface Setup {
  readonly dir: string;
  readonly root: string;
  readonly helper: string;
  readonly layout: StateLayout;
  readonly sup: RecordingSupervisor;
  readonly backend: GvisorSandboxBackend;
  /** What each startMonitored resolved with. */
  readonly started: SupervisedProcess[];
  /** sandboxExited calls. */
  readonly exited: [string, SandboxExit][];
}

async function withBackend(fn: (s: Setup) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "kuasar-gvisor-unit-" });
  try {
    // The helper binary the pause rootfs is made of: any file will do.
    const helper = join(dir, "kuasar-helper");
    await Deno.writeTextFile(helper, "#!/bin/sh\n# not really the helper\n", { mode: 0o600 });
    const sup = new RecordingSupervisor(helper);
    const started: SupervisedProcess[] = [];
    const startMonitored = sup.startMonitored.bind(sup);
    sup.startMonitored = async (p, stdio) => {
      const h = await startMonitored(p, stdio);
      started.push(h);
      return h;
    };
    const layout = new StateLayout(dir);
    const root = layout.path("runscRoot");
    const runsc = new OciRuntimeCli({
      binary: RUNSC,
      root,
      systemdCgroup: false,
      globalFlags: ["--platform=ptrace"],
      detached: true,
    }, sup);
    const backend = new GvisorSandboxBackend({ dir, layout, supervisor: sup, runsc });
    const exited: [string, SandboxExit][] = [];
    backend.setExitListener({ sandboxExited: (id, exit) => exited.push([id, exit]) });
    await fn({ dir, root, helper, layout, sup, backend, started, exited });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A pod id no real cgroup has. */
function podId(): string {
  return `gvunit${crypto.randomUUID().replaceAll("-", "").slice(0, 20)}`;
}

function podRecord(
  over: { id?: string; netnsPath?: string; pod?: Partial<PodConfig> } = {},
): SandboxRecord<GvisorPodState> {
  const id = over.id ?? podId();
  return sandboxRecord<GvisorPodState>(id, {
    kind: "gvisor",
    state: "created",
    pid: 0,
    netnsPath: over.netnsPath ?? `/var/run/netns/cni-${id}`,
    pod: { ...emptyPodConfig(), name: `pod-${id}`, namespace: "default", ...over.pod },
    taskApiVersion: 2,
  });
}

/** runsc's global flags as configured, with `--log` when `log` is given. */
function global(root: string, log?: string): string[] {
  return [
    RUNSC,
    "--root",
    root,
    ...(log ? ["--log", log, "--log-format", "json"] : []),
    "--platform=ptrace",
  ];
}

/** The JSON line runsc logs for a failure. */
function errorLine(msg: string): string {
  return `${JSON.stringify({ level: "info", msg: "starting" })}\n` +
    `${JSON.stringify({ level: "error", msg, time: "2026-01-01T00:00:00Z" })}\n`;
}

Deno.test("gVisor Start: runsc run --detach under a monitor that waits", async () => {
  await withBackend(async ({ dir, root, sup, backend, started }) => {
    const rec = podRecord();
    const bundle = join(dir, rec.id, "sandbox");
    let atRun: GvisorPodState | undefined;
    sup.onMonitored = () => void (atRun = { ...rec.backend });
    const r = await backend.start(rec);

    assert.equal(sup.runs.length, 0, "runsc runs under the monitor only");
    assert.equal(sup.monitored.length, 1);
    const m = sup.monitored[0];
    assert.equal(m.token, `s@${rec.id}`);
    assert.equal(m.pidFile, join(bundle, "pid"));
    assert.equal(m.monitorLog, join(bundle, "monitor.log"));
    assert.deepEqual(m.argv, [
      ...global(root, join(bundle, "start.log.json")),
      "run",
      "--detach",
      "--bundle",
      bundle,
      "--pid-file",
      join(bundle, "pid"),
      rec.id,
    ]);
    assert.deepEqual(m.waitArgv, [
      sup.binary,
      "sandbox-wait",
      root,
      rec.id,
      rec.id,
      "--",
      ...global(root),
      "wait",
      rec.id,
    ]);
    assert.equal(m.io, undefined, "the root container has no stdio");

    // The cgroup is recorded before runsc makes it; the monitor once it runs.
    assert.deepEqual(atRun, { cgroupsPath: `/kuasar-gvisor/${rec.id}` });
    assert.equal(started.length, 1);
    assert.deepEqual(rec.backend, {
      cgroupsPath: `/kuasar-gvisor/${rec.id}`,
      holderPid: started[0].helperPid,
    });
    assert.deepEqual(r, { pid: started[0].pid });
    assert.notEqual(
      r.pid,
      started[0].helperPid,
      "the pod's pid is the sandbox's, not the monitor's",
    );
    // The monitor's exit record is followed from now on.
    assert.equal(sup.exits.watches.get(`s@${rec.id}`)?.helperPid, started[0].helperPid);
  });
});

Deno.test("gVisor Start: the root container's spec runs the helper's pause in the pod's netns", async () => {
  await withBackend(async ({ dir, helper, layout, backend }) => {
    const rec = podRecord({
      netnsPath: "/var/run/netns/cni-1234",
      pod: {
        cgroupParent: "/kubepods/besteffort/pod-u1",
        sysctls: { "net.core.somaxconn": "1024" },
      },
    });
    await backend.start(rec);
    const spec: OciSpec = JSON.parse(
      await Deno.readTextFile(join(dir, rec.id, "sandbox", "config.json")),
    );
    const rootfs = layout.path("pauseRootfs");
    assert.deepEqual(spec.root, { path: rootfs, readonly: true });
    assert.deepEqual(spec.process?.args, ["/pause", "pause"]);
    // The pause binary is the helper itself, copied executable into the shared rootfs.
    const pause = join(rootfs, "pause");
    assert.equal(await Deno.readTextFile(pause), await Deno.readTextFile(helper));
    assert.equal((await Deno.stat(pause)).mode! & 0o777, 0o755);
    assert.ok((await Deno.stat(join(rootfs, "proc"))).isDirectory);
    // runsc tells the root container from subcontainers by the CRI annotations.
    assert.deepEqual(spec.annotations, { [CONTAINER_TYPE]: "sandbox", [SANDBOX_ID]: rec.id });
    assert.deepEqual(spec.linux?.namespaces, [
      { type: "pid" },
      { type: "ipc" },
      { type: "uts" },
      { type: "mount" },
      { type: "network", path: "/var/run/netns/cni-1234" },
    ]);
    assert.equal(spec.linux?.cgroupsPath, `/kubepods/besteffort/pod-u1/${rec.id}`);
    assert.deepEqual(rec.backend.cgroupsPath, `/kubepods/besteffort/pod-u1/${rec.id}`);
    assert.deepEqual(spec.linux?.sysctl, {
      "net.ipv4.ip_unprivileged_port_start": "0",
      "net.ipv4.ping_group_range": "0 2147483647",
      "net.core.somaxconn": "1024",
    });
    assert.equal(spec.hostname, rec.id.slice(0, 12), "no hostname configured: the id's prefix");
  });
});

Deno.test("gVisor Start: the pod decides runsc's network (host network, no netns)", async () => {
  await withBackend(async ({ dir, sup, backend }) => {
    const host = podRecord({ netnsPath: "", pod: { network: "node" } });
    await backend.start(host);
    const none = podRecord({ netnsPath: "" });
    await backend.start(none);
    const flagOf = (argv: readonly string[]) => argv[argv.indexOf("run") - 1];
    assert.equal(flagOf(sup.monitored[0].argv), "--network=host");
    assert.equal(flagOf(sup.monitored[1].argv), "--network=none");
    const spec: OciSpec = JSON.parse(
      await Deno.readTextFile(join(dir, host.id, "sandbox", "config.json")),
    );
    assert.ok(!spec.linux?.namespaces?.some((n) => n.type === "network"));
    assert.equal(spec.hostname, Deno.hostname(), "a host-network pod has the node's name");
  });
});

Deno.test("gVisor Start: a failing runsc run is runsc's reason, and the sandbox is destroyed", async () => {
  await withBackend(async ({ dir, root, sup, backend }) => {
    const rec = podRecord();
    const bundle = join(dir, rec.id, "sandbox");
    // runsc leaves the lock of a sandbox whose create failed.
    const lock = join(root, `${rec.id}_sandbox:${rec.id}.lock`);
    await Deno.mkdir(root, { recursive: true });
    await Deno.writeTextFile(lock, "");
    sup.failNextMonitored = 128;
    sup.onMonitored = async () => {
      await Deno.writeTextFile(
        join(bundle, "start.log.json"),
        errorLine("creating sandbox: EPERM"),
      );
    };
    const err = await backend.start(rec).then(() => undefined, (e) => e);
    assert.ok(err instanceof InternalError, String(err));
    assert.match(
      err.message,
      new RegExp(`runsc cannot start sandbox "${rec.id}": creating sandbox: EPERM`),
    );
    assert.deepEqual(sup.runs.map((r) => r.argv), [[...global(root), "delete", "--force", rec.id]]);
    assert.equal(await Deno.stat(lock).then(() => true, () => false), false, "lock removed");
    // Shutdown's cleanup still finds the cgroup; there is no monitor to follow.
    assert.deepEqual(rec.backend, { cgroupsPath: `/kuasar-gvisor/${rec.id}` });
  });
});

Deno.test("gVisor Start: a runsc start failing under the monitor is runsc's reason, the sandbox destroyed", async () => {
  await withBackend(async ({ dir, sup, backend }) => {
    const rec = podRecord();
    const startLog = join(dir, rec.id, "sandbox", "start.log.json");
    sup.failNextMonitored = 1;
    sup.onMonitored = async () => {
      await Deno.writeTextFile(startLog, errorLine("starting sandbox: netns busy"));
    };
    await assert.rejects(
      backend.start(rec),
      (e: Error) =>
        e instanceof InternalError &&
        e.message === `runsc cannot start sandbox "${rec.id}": starting sandbox: netns busy`,
    );
    assert.deepEqual(sup.runs.at(-1)?.argv.slice(-3), ["delete", "--force", rec.id]);
    assert.equal(rec.backend.holderPid, undefined);
    assert.equal(sup.exits.watches.size, 0, "nothing followed");
  });
});

Deno.test("gVisor Start: runsc's root-netns mistake gets a hint; without a log, the monitor's reason", async () => {
  await withBackend(async ({ dir, sup, backend }) => {
    const rec = podRecord();
    sup.failNextMonitored = 1;
    sup.onMonitored = async () => {
      await Deno.writeTextFile(
        join(dir, rec.id, "sandbox", "start.log.json"),
        errorLine("cannot run with network enabled in root network namespace"),
      );
    };
    await assert.rejects(backend.start(rec), /set \[gvisor\] network = "host"/);

    const other = podRecord();
    sup.failNextMonitored = 3;
    sup.onMonitored = () => {};
    await assert.rejects(
      backend.start(other),
      new RegExp(`runsc cannot start sandbox "${other.id}": runtime exited with status 3$`),
    );
    assert.equal(sup.runs.filter((r) => r.argv.includes("delete")).length, 2);
  });
});

Deno.test("gVisor Start: a monitor that cannot be started at all destroys the sandbox, error unchanged", async () => {
  await withBackend(async ({ sup, backend }) => {
    const rec = podRecord();
    const boom = new NotFoundError("no helper");
    sup.onMonitored = () => {
      throw boom;
    };
    await assert.rejects(backend.start(rec), (e) => e === boom);
    assert.deepEqual(sup.runs.at(-1)?.argv.slice(-3), ["delete", "--force", rec.id]);
  });
});

Deno.test("gVisor Stop: runsc kill asks, then forces; the monitor's exit record is how it ended", async () => {
  await withBackend(async ({ sup, backend, exited }) => {
    const rec = podRecord();
    await backend.start(rec);
    const token = `s@${rec.id}`;
    sup.answer = (argv) => {
      // The sandbox ends on SIGTERM: its monitor records it.
      if (argv.includes("kill")) setTimeout(() => sup.exits.exit(token, 143), 0);
      return { code: 0, stdout: "", stderr: "" };
    };
    const exit = await backend.stop(rec, 5_000);
    assert.equal(exit.status, 143);
    assert.deepEqual(sup.runs.at(-1)?.argv.slice(-3), ["kill", rec.id, "15"]);
    assert.deepEqual(exited.map(([id, e]) => [id, e.status]), [[rec.id, 143]]);

    const forced = podRecord();
    await backend.start(forced);
    sup.answer = (argv) => {
      if (argv.includes("kill")) setTimeout(() => sup.exits.exit(`s@${forced.id}`, 137), 0);
      return { code: 0, stdout: "", stderr: "" };
    };
    assert.equal((await backend.stop(forced, 0)).status, 137);
    assert.deepEqual(sup.runs.at(-1)?.argv.slice(-3), ["kill", forced.id, "9"]);
  });
});

Deno.test("gVisor cleanup: deletes the sandbox, waits for its end, forgets its monitor", async () => {
  await withBackend(async ({ sup, backend }) => {
    const rec = podRecord();
    await backend.start(rec);
    const token = `s@${rec.id}`;
    sup.answer = (argv) => {
      if (argv.includes("delete")) setTimeout(() => sup.exits.exit(token, 137), 0);
      return { code: 0, stdout: "", stderr: "" };
    };
    await backend.cleanup(rec);
    assert.deepEqual(sup.runs.at(-1)?.argv.slice(-3), ["delete", "--force", rec.id]);
    assert.deepEqual(sup.orphanKills, [token]);
    assert.equal(sup.exits.records.has(token), false, "its exit record removed");
  });
});

Deno.test("gVisor recovery: a running pod's exit record, lost monitor, or live monitor", async () => {
  await withBackend(async ({ sup, backend, exited }) => {
    const running = (id: string, holderPid: number) => ({
      ...podRecord({ id }),
      state: "running" as const,
      pid: 4_300_001,
      backend: { holderPid },
    });
    // Ended while the daemon was down: its record says how.
    const ended = running("ended", 4_300_000);
    const at = now();
    sup.exits.records.set("s@ended", { pid: 4_300_001, status: 137, at });
    assert.deepEqual(await backend.recover(ended), { alive: false, exit: { status: 137, at } });

    // Its monitor is gone without a record: unknown status.
    const lost = await backend.recover(running("lost", 4_300_002));
    assert.equal(lost.alive, false);
    assert.equal(!lost.alive && lost.exit.status, 255);

    // Its monitor still runs: followed again, and its end reported.
    sup.exits.running.add("s@alive");
    assert.deepEqual(await backend.recover(running("alive", 4_300_004)), { alive: true });
    assert.equal(sup.exits.watches.get("s@alive")?.helperPid, 4_300_004);
    assert.equal(exited.length, 0);
    await sup.exits.exit("s@alive", 0);
    assert.deepEqual(exited.map(([id, e]) => [id, e.status]), [["alive", 0]]);
    assert.deepEqual(sup.runs, [], "recovery of running pods asks runsc nothing");
  });
});

Deno.test("gVisor recovery: a Start that never returned is undone", async () => {
  await withBackend(async ({ sup, backend }) => {
    const rec = { ...podRecord({ id: "halfway" }), pid: 4_300_001 };
    const r = await backend.recover(rec);
    assert.equal(r.alive, false);
    assert.equal(rec.pid, 0);
    assert.deepEqual(sup.orphanKills, ["s@halfway"]);
    assert.deepEqual(sup.runs.map((x) => x.argv.slice(-3)), [["delete", "--force", "halfway"]]);
  });
});
