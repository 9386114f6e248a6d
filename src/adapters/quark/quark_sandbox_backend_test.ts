/**
 * Unit tests of the Quark sandbox backend against the recording Supervisor:
 * the `quark sandbox` command, how its failures are reported, and how the
 * Quark process (a `sleep` this test starts, standing in for the daemonised
 * sandbox) is watched and taken down — with no poll timer left behind.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { InternalError } from "../../domain/errors.ts";
import { emptyPodConfig } from "../../domain/pod_config.ts";
import type { SandboxExit, SandboxRecord } from "../../domain/sandbox.ts";
import { now } from "../../domain/time.ts";
import type { CommandResult, RunOptions } from "../../ports/supervisor.ts";
import { RecordingSupervisor } from "../../../tests/fakes/recording_supervisor.ts";
import { QuarkSandboxBackend } from "./quark_sandbox_backend.ts";
import { podSpec, quarkPaths } from "./quark_spec.ts";
import { sandboxRecord } from "../../../tests/fakes/records.ts";

const QUARK = "/usr/local/bin/quark";
const POLL_MS = 10;

interface Setup {
  readonly dir: string;
  readonly sup: RecordingSupervisor;
  readonly backend: QuarkSandboxBackend;
  readonly exited: [string, SandboxExit][];
}

async function withBackend(fn: (s: Setup) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "kuasar-quark-unit-" });
  try {
    const sup = new RecordingSupervisor();
    const backend = new QuarkSandboxBackend({
      dir,
      binary: QUARK,
      supervisor: sup,
      pollMs: POLL_MS,
    });
    const exited: [string, SandboxExit][] = [];
    backend.setExitListener({ sandboxExited: (id, exit) => exited.push([id, exit]) });
    await fn({ dir, sup, backend, exited });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function quarkRecord(id: string): SandboxRecord {
  return sandboxRecord(id, {
    kind: "quark",
    state: "created",
    pid: 0,
    netnsPath: `/var/run/netns/cni-${id}`,
    pod: {
      ...emptyPodConfig(),
      name: `pod-${id}`,
      hostname: "web-0",
      cgroupParent: "/kubepods/pod-u1",
      annotations: { "io.kubernetes.cri.sandbox-name": `pod-${id}` },
    },
    taskApiVersion: 2,
  });
}

/** A live process standing in for the daemonised Quark. */
function fakeQuarkProcess(): Deno.ChildProcess {
  return new Deno.Command("sleep", { args: ["30"], stdout: "null", stderr: "null" }).spawn();
}

/** Quark as it behaves: it writes its pid file and returns 0. */
function quarkWrites(pidText: string): (argv: readonly string[]) => Promise<CommandResult> {
  return async (argv) => {
    await Deno.writeTextFile(argv[argv.indexOf("--pid-file") + 1], pidText);
    return { code: 0, stdout: "", stderr: "" };
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test("Quark create: the pod's spec in the sandbox bundle", async () => {
  await withBackend(async ({ dir, backend }) => {
    const rec = quarkRecord("qp1");
    await backend.create(rec);
    const bundle = join(dir, "qp1", "sandbox");
    assert.deepEqual(
      JSON.parse(await Deno.readTextFile(join(bundle, "config.json"))),
      JSON.parse(JSON.stringify(podSpec(rec))),
    );
    const spec = podSpec(rec);
    assert.equal(spec.linux?.cgroupsPath, "/kubepods/pod-u1/qp1");
    assert.deepEqual(spec.linux?.namespaces?.at(-1), {
      type: "network",
      path: "/var/run/netns/cni-qp1",
    });
    assert.ok((await Deno.stat(join(bundle, "rootfs", "dev"))).isDirectory);
    assert.equal(backend.ownTaskAddress(rec), `unix://${join(dir, "qp1", "quark-task.sock")}`);
  });
});

Deno.test("Quark start: quark sandbox runs detached in the bundle; its pid comes from the pid file", async () => {
  await withBackend(async ({ dir, sup, backend, exited }) => {
    const rec = quarkRecord("qp1");
    await backend.create(rec);
    const p = quarkPaths(dir, "qp1");
    // A pid file of an earlier run is not this run's.
    await Deno.writeTextFile(p.pidFile, "1\n");
    const quark = fakeQuarkProcess();
    let staleGone = false;
    const writes = quarkWrites(`${quark.pid}\n`);
    sup.answer = async (argv: readonly string[], _opts: RunOptions) => {
      staleGone = !await Deno.stat(p.pidFile).then(() => true, () => false);
      return await writes(argv);
    };
    try {
      const r = await backend.start(rec);
      assert.deepEqual(r, { pid: quark.pid });
      assert.ok(staleGone, "the old pid file was removed first");
      assert.deepEqual(sup.runs.map((x) => x.argv), [[
        QUARK,
        "-r",
        p.bundle,
        "sandbox",
        "--task-socket",
        p.taskSocket,
        "--id",
        "qp1",
        "--pid-file",
        p.pidFile,
      ]]);
      assert.deepEqual(sup.runs[0].opts, { cwd: p.bundle, timeoutMs: 60_000, detached: true });
      rec.pid = r.pid;
      rec.state = "running";
      // Watched while it runs: nothing reported.
      await sleep(POLL_MS * 3);
      assert.equal(exited.length, 0);
      // Stop kills it (Quark has no graceful stop) and stops watching.
      const exit = await backend.stop(rec);
      assert.equal(exit.status, 137);
      assert.equal((await quark.status).signal, "SIGKILL");
      await sleep(POLL_MS * 3);
      assert.equal(exited.length, 0, "a stopped Quark is not reported as having died");
    } finally {
      try {
        quark.kill("SIGKILL");
      } catch { /* stopped already */ }
      await quark.status;
    }
  });
});

Deno.test("Quark start: a Quark that dies is reported once, and its watch ends", async () => {
  await withBackend(async ({ sup, backend, exited }) => {
    const rec = quarkRecord("qp2");
    await backend.create(rec);
    const quark = fakeQuarkProcess();
    sup.answer = quarkWrites(String(quark.pid));
    try {
      rec.pid = (await backend.start(rec)).pid;
    } finally {
      quark.kill("SIGKILL");
      await quark.status;
    }
    for (let i = 0; i < 100 && !exited.length; i++) await sleep(POLL_MS);
    assert.equal(exited.length, 1);
    assert.equal(exited[0][0], "qp2");
    assert.equal(exited[0][1].status, 255);
    await sleep(POLL_MS * 3);
    assert.equal(exited.length, 1, "reported once");
  });
});

Deno.test("Quark start: a failing quark is INTERNAL with what quark said", async () => {
  await withBackend(async ({ sup, backend }) => {
    const rec = quarkRecord("qp3");
    await backend.create(rec);
    sup.answer = () => ({ code: 2, stdout: "ignored", stderr: "quark: cannot open /dev/kvm\n" });
    await assert.rejects(
      backend.start(rec),
      (e: Error) =>
        e instanceof InternalError &&
        e.message === "quark sandbox failed (exit 2): quark: cannot open /dev/kvm",
    );
    sup.answer = () => ({ code: 1, stdout: "usage: quark ...\n", stderr: "" });
    await assert.rejects(backend.start(rec), /\(exit 1\): usage: quark \.\.\.$/);
    sup.answer = () => ({ code: 1, stdout: "", stderr: "" });
    await assert.rejects(backend.start(rec), /\(exit 1\): no output$/);
  });
});

Deno.test("Quark start: a pid file that is absent or names no live process is INTERNAL", async () => {
  await withBackend(async ({ dir, sup, backend }) => {
    const rec = quarkRecord("qp4");
    await backend.create(rec);
    const why = `${quarkPaths(dir, "qp4").pidFile} names no running process`;
    const check = (e: Error) => e instanceof InternalError && e.message.endsWith(why);
    // Quark returned 0 but wrote nothing.
    await assert.rejects(backend.start(rec), check);
    for (const text of ["", "garbage", "-5", "0", "4200000", "1.5"]) {
      sup.answer = quarkWrites(text);
      await assert.rejects(backend.start(rec), check, JSON.stringify(text));
    }
    // A process that has ended (and was reaped).
    const ended = new Deno.Command("true").spawn();
    await ended.status;
    sup.answer = quarkWrites(String(ended.pid));
    await assert.rejects(backend.start(rec), check);
  });
});

Deno.test("Quark cleanup: kills Quark and clears its watch", async () => {
  await withBackend(async ({ sup, backend, exited }) => {
    const rec = quarkRecord("qp5");
    await backend.create(rec);
    const quark = fakeQuarkProcess();
    sup.answer = quarkWrites(String(quark.pid));
    try {
      rec.pid = (await backend.start(rec)).pid;
      await backend.cleanup(rec);
      assert.equal((await quark.status).signal, "SIGKILL");
    } finally {
      try {
        quark.kill("SIGKILL");
      } catch { /* gone */ }
      await quark.status;
    }
    await sleep(POLL_MS * 3);
    assert.equal(exited.length, 0);
  });
});

Deno.test("Quark recovery: a live Quark is watched again; a gone one ended", async () => {
  await withBackend(async ({ backend, exited }) => {
    const quark = fakeQuarkProcess();
    try {
      const rec = { ...quarkRecord("qp6"), state: "running" as const, pid: quark.pid };
      assert.deepEqual(await backend.recover(rec), { alive: true });
      quark.kill("SIGKILL");
      await quark.status;
      for (let i = 0; i < 100 && !exited.length; i++) await sleep(POLL_MS);
      assert.deepEqual(exited.map(([id, e]) => [id, e.status]), [["qp6", 255]]);
    } finally {
      try {
        quark.kill("SIGKILL");
      } catch { /* gone */ }
      await quark.status;
    }
    const gone = { ...quarkRecord("qp7"), state: "running" as const, pid: 4_200_000 };
    const r = await backend.recover(gone);
    assert.equal(r.alive, false);
    assert.equal(!r.alive && r.exit.status, 255);
    const stopped = {
      ...quarkRecord("qp8"),
      state: "stopped" as const,
      exit: { status: 0, at: now() },
    };
    assert.deepEqual(await backend.recover(stopped), { alive: false, exit: stopped.exit });
  });
});

Deno.test("Quark: a recorded pid now used by another process is neither adopted nor killed", async () => {
  await withBackend(async ({ sup, backend }) => {
    const rec = quarkRecord("qp9");
    await backend.create(rec);
    const quark = fakeQuarkProcess();
    await sleep(30); // start times count in clock ticks (10 ms)
    const other = fakeQuarkProcess();
    try {
      sup.answer = quarkWrites(String(quark.pid));
      rec.pid = (await backend.start(rec)).pid;
      rec.state = "running";
      // After a reboot (or a long downtime), the pid names a process that started at another time.
      const reused = { ...rec, pid: other.pid };
      const r = await backend.recover(reused);
      assert.equal(r.alive, false);
      await backend.stop(reused);
      assert.equal(await Promise.race([other.status.then(() => "ended"), sleep(50)]), undefined);
      await backend.stop(rec);
      assert.equal((await quark.status).signal, "SIGKILL");
    } finally {
      for (const p of [quark, other]) {
        try {
          p.kill("SIGKILL");
        } catch { /* gone */ }
        await p.status;
      }
    }
  });
});
