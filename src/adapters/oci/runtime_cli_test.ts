import assert from "node:assert/strict";
import { join } from "node:path";
import { FailedPreconditionError, InternalError, NotFoundError } from "../../domain/errors.ts";
import { RecordingSupervisor } from "../../../tests/fakes/recording_supervisor.ts";
import { jsonRecords, lastRuntimeError, OciRuntimeCli, runtimeError } from "./runtime_cli.ts";

function cli(extra: Partial<ConstructorParameters<typeof OciRuntimeCli>[0]> = {}) {
  const sup = new RecordingSupervisor();
  const c = new OciRuntimeCli({ binary: "runc", root: "/r", systemdCgroup: false, ...extra }, sup);
  return { sup, cli: c };
}

const fail = (stderr: string) => () => ({ code: 1, stdout: "", stderr });

Deno.test("runtime CLI: global flags, create and exec argv", () => {
  const { cli: c } = cli({ systemdCgroup: true, globalFlags: ["--platform=ptrace"] });
  assert.deepEqual(c.global(), ["runc", "--root", "/r", "--systemd-cgroup", "--platform=ptrace"]);
  assert.deepEqual(c.global("/l.json").slice(3, 7), ["--log", "/l.json", "--log-format", "json"]);
  const { cli: guest } = cli({ createFlags: ["--no-pivot"] });
  assert.deepEqual(guest.createArgv("c1", "/b", "/p", "/l", "/console.sock"), [
    "runc",
    "--root",
    "/r",
    "--log",
    "/l",
    "--log-format",
    "json",
    "create",
    "--bundle",
    "/b",
    "--pid-file",
    "/p",
    "--console-socket",
    "/console.sock",
    "--no-pivot",
    "c1",
  ]);
  assert.deepEqual(c.execArgv("c1", "/proc.json", "/p", "/l", undefined, ["--x"]).slice(-8), [
    "exec",
    "--detach",
    "--process",
    "/proc.json",
    "--pid-file",
    "/p",
    "--x",
    "c1",
  ]);
});

Deno.test("runtime CLI: verbs go through the supervisor, detached when configured", async () => {
  const { sup, cli: c } = cli({ detached: true });
  await c.start("c1");
  await c.pause("c1");
  await c.update("c1", { memory: { limit: 1024 } });
  assert.deepEqual(sup.runs.map((r) => r.argv.slice(3)), [
    ["start", "c1"],
    ["pause", "c1"],
    ["update", "--resources", "-", "c1"],
  ]);
  assert.ok(sup.runs.every((r) => r.opts.detached === true && r.opts.timeoutMs === 60_000));
  // Update's resources go on stdin, as JSON.
  assert.deepEqual(JSON.parse(new TextDecoder().decode(sup.runs[2].opts.stdin)), {
    memory: { limit: 1024 },
  });
  const plain = cli();
  await plain.cli.resume("c1");
  assert.equal(plain.sup.runs[0].opts.detached, undefined);
});

Deno.test("runtime CLI: ps and state parse the runtime's JSON; an unknown container is no state", async () => {
  const { sup, cli: c } = cli();
  sup.answer = (argv) =>
    argv.includes("ps")
      ? { code: 0, stdout: '[12, 13, "x"]', stderr: "" }
      : { code: 0, stdout: '{"status":"running","pid":12,"id":"c1"}', stderr: "" };
  assert.deepEqual(await c.ps("c1"), [12, 13]);
  assert.deepEqual(await c.state("c1"), { status: "running", pid: 12 });
  sup.answer = fail('time="2026" level=error msg="container does not exist"');
  assert.equal(await c.state("c1"), undefined);
});

Deno.test("runtime CLI: kill of an exited container is NOT_FOUND; delete of an unknown one succeeds", async () => {
  const { sup, cli: c } = cli();
  sup.answer = fail("container not running");
  await assert.rejects(c.kill("c1", 15, false), NotFoundError);
  sup.answer = fail("process already finished");
  await assert.rejects(c.kill("c1", 9, true), NotFoundError);
  assert.deepEqual(sup.runs[1].argv.slice(3), ["kill", "--all", "c1", "9"]);
  sup.answer = fail("container is paused");
  await assert.rejects(c.kill("c1", 9, false), FailedPreconditionError);
  sup.answer = fail("container c1 does not exist");
  await c.delete("c1", true);
  sup.answer = fail("cannot open directory '/run/k/runc/c1': No such file or directory");
  await c.delete("c1", false);
  sup.answer = fail("permission denied");
  await assert.rejects(c.delete("c1", false), InternalError);
});

Deno.test("runtime CLI: failures are classified from the runtime's message", () => {
  const cases: [string, new (m: string) => Error][] = [
    ["container does not exist", NotFoundError],
    ['time="2026-01-01" level=error msg="container c1 not found"', NotFoundError],
    ["cannot start a container that has stopped", FailedPreconditionError],
    ["container not paused", FailedPreconditionError],
    ["container not running", FailedPreconditionError],
    ["container is running", FailedPreconditionError],
    // crun's wording.
    ["error opening file `/run/k/runc/c1/status`: No such file or directory", NotFoundError],
    ["cannot open directory '/run/k/runc/c1': No such file or directory", NotFoundError],
    ["the container `c1` is not running", FailedPreconditionError],
    ["the container `c1` is not paused", FailedPreconditionError],
    ["container `c1` is not in created state", FailedPreconditionError],
    ["open `/bundle/config.json`: No such file or directory", InternalError],
    ["exec failed: permission denied", InternalError],
    ["", InternalError],
  ];
  for (const [msg, cls] of cases) {
    const e = runtimeError('start container "c1"', msg);
    assert.ok(e instanceof cls, `${JSON.stringify(msg)} → ${e.constructor.name}, not ${cls.name}`);
    assert.match(e.message, /^Cannot start container "c1": /);
  }
  // The last line counts (runc prints a usage text before its error).
  assert.ok(runtimeError("x", "usage: ...\ncontainer does not exist") instanceof NotFoundError);
});

Deno.test("runtime CLI: a detached create that fails reports the runtime's logged error", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kuasar-cli-" });
  try {
    const log = join(dir, "log.json");
    const { sup, cli: c } = cli({ detached: true });
    sup.answer = async (_argv, opts) => {
      assert.equal(opts.discardOutput, true, "its stdio is kept by what it leaves behind");
      await Deno.writeTextFile(
        log,
        '{"level":"info","msg":"starting"}\nnot json\n' +
          '{"level":"error","msg":"cannot allocate memory"}\n',
      );
      return { code: 1, stdout: "", stderr: "" };
    };
    await assert.rejects(
      c.createDetached("c1", "/b", "/p", log, ["--network=none"]),
      /Cannot create container "c1": cannot allocate memory/,
    );
    assert.deepEqual(
      sup.runs[0].argv.slice(-7),
      [
        "--network=none",
        "create",
        "--bundle",
        "/b",
        "--pid-file",
        "/p",
        "c1",
      ],
    );
    assert.equal(await lastRuntimeError(join(dir, "absent.json")), undefined);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("runtime CLI: log records are found one per line or back to back (runsc)", () => {
  // runsc since 2023 writes its JSON records without a newline between them.
  const runsc = '{"msg":"error executing umounter: x","level":"error"}' +
    '{"msg":"creating container: a } { b \\"q\\"","level":"error"}';
  assert.deepEqual(jsonRecords(runsc).map((r) => JSON.parse(r).msg), [
    "error executing umounter: x",
    'creating container: a } { b "q"',
  ]);
  // A record cut short by a kill does not swallow the next line.
  assert.deepEqual(jsonRecords('{"msg":"cut {\n{"msg":"next"}\ntrailing'), ['{"msg":"next"}']);
  assert.deepEqual(jsonRecords(""), []);
});
