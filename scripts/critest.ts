// `deno run -A scripts/critest.ts [--handler H] [--focus RE]… [--skip RE]… [--out FILE]
//   [--logs DIR] [--compare FILE] [-- critest flags…]`
//
// Runs critest, the CRI validation suite (cri-tools), against a private containerd 2.4 and
// summarises the result. The CRI runtime handler under test is one of:
//
//   kuasar-runc         our runC sandboxer through containerd's sandbox API, FIFO IO
//   kuasar-runc-stream  the same, `io_type = "streaming"`
//   runc                containerd's own runc shim (io.containerd.runc.v2): the reference
//
// For the kuasar handlers a sandboxer daemon (from source) and containerd are started with
// `startE2E` (tests/support/e2e.ts); for `runc` only a `TestContainerd`. Both get the local test
// images (no registry is reachable), critest gets the images file and the offline skip list
// (`CRITEST_OFFLINE_SKIP`, tests/support/images.ts) and writes Ginkgo's JSON report, which is
// parsed into pass/fail/skip counts and the failed specs with their messages. The summary is
// printed and written as JSON to --out (default /tmp/critest-<handler>.json); containerd's log,
// the sandboxer's log, critest's output and the raw reports are kept in --logs (default
// <out without .json>.logs/). `--compare OTHER.json` also lists the specs that fail here but
// pass in OTHER (e.g. the `runc` run).
//
// Everything is removed at the end — pods (through CRI), containerd, its shims, the sandboxer,
// mounts, the CNI bridge, temp dirs — also on Ctrl-C or SIGTERM: the script re-runs itself as a
// worker in a new session, so a terminal's SIGINT does not also hit containerd and the daemon
// (then cleanup could not go through CRI). The first signal interrupts critest (Ginkgo runs its
// cleanup nodes and writes its report), a second kills it; cleanup follows either way.
//
// Needs root and the tools of scripts/install_go_tools.sh. One run takes several minutes; run
// one at a time (each starts its own containerd, but the suite is timing sensitive).
import { basename, join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { containerdUnavailable, TestContainerd, TOOLS_BIN } from "../tests/support/containerd.ts";
import { startE2E } from "../tests/support/e2e.ts";
import { runcUnavailable } from "../tests/support/env.ts";
import { CRITEST_OFFLINE_SKIP, writeCritestImagesFile } from "../tests/support/images.ts";

const HANDLERS = ["kuasar-runc", "kuasar-runc-stream", "runc"] as const;
type Handler = typeof HANDLERS[number];
const WORKER_ENV = "KUASAR_CRITEST_WORKER";
const CRITEST = join(TOOLS_BIN, "critest");
const ROOT = resolve(new URL("..", import.meta.url).pathname);

const USAGE = `usage: deno run -A scripts/critest.ts [options] [-- critest flags…]
  --handler H     ${HANDLERS.join(" | ")} (default kuasar-runc)
  --focus RE      only specs matching RE (--ginkgo.focus; repeatable, ORed)
  --skip RE       also skip specs matching RE (added to the offline skip list; repeatable)
  --no-default-skip  do not pass the offline skip list
  --out FILE      summary JSON (default /tmp/critest-<handler>.json)
  --logs DIR      containerd/sandboxer/critest logs and raw reports (default <out>.logs/)
  --compare FILE  a summary of another run: list specs failing here but passing there
  --timeout MIN   critest's --ginkgo.timeout in minutes (default 60)`;

// ---------------------------------------------------------------------------------------------
// Ginkgo's JSON report (github.com/onsi/ginkgo/v2/types: Report, SpecReport), the parts we read

interface CodeLocation {
  FileName?: string;
  LineNumber?: number;
}
interface GinkgoFailure {
  Message?: string;
  Location?: CodeLocation;
  FailureNodeType?: string;
  FailureNodeLocation?: CodeLocation;
  ForwardedPanic?: string;
}
interface SpecReport {
  ContainerHierarchyTexts?: string[] | null;
  LeafNodeType: string;
  LeafNodeLocation?: CodeLocation;
  LeafNodeText?: string;
  State: string;
  RunTime?: number; // ns
  Failure?: GinkgoFailure;
  AdditionalFailures?: { State: string; Failure: GinkgoFailure }[];
}
interface SuiteReport {
  SuiteDescription?: string;
  SuiteConfig?: { RandomSeed?: number };
  SuiteSucceeded?: boolean;
  RunTime?: number;
  PreRunStats?: { TotalSpecs: number; SpecsThatWillRun: number };
  SpecReports?: SpecReport[] | null;
}

/** One failed (or errored) spec. */
export interface FailedSpec {
  name: string;
  state: string;
  location: string;
  failureLocation: string;
  failureNode: string;
  message: string;
  seconds: number;
}

/** What the summary JSON holds. */
export interface CritestSummary {
  handler: string;
  ioType: string;
  startedAt: string;
  seconds: number;
  versions: Record<string, string>;
  command: string[];
  skip: string[];
  focus: string[];
  counts: {
    total: number;
    passed: number;
    failed: number;
    skipped: number;
    skippedByFilter: number;
    skippedAtRuntime: number;
    pending: number;
  };
  suiteSucceeded: boolean;
  /** Ginkgo's seed (spec order); rerun the same order with `-- --ginkgo.seed=N`. */
  seed?: number;
  critestExitCode: number | null;
  interrupted: boolean;
  failed: FailedSpec[];
  suiteFailures: FailedSpec[];
  skippedAtRuntime: { name: string; reason: string }[];
  passed: string[];
  logs: Record<string, string>;
  leftovers: string[];
  /** Kernel messages (dmesg) of the run that name a segfault or the kuasar helper. */
  kernel: string[];
  error?: string;
}

const loc = (l?: CodeLocation) =>
  l?.FileName
    ? `${l.FileName.replace(/^.*\/pkg\/validate\//, "pkg/validate/")}:${l.LineNumber}`
    : "";

/** Spec counts before any spec ran. */
function noCounts() {
  return {
    total: 0,
    passed: 0,
    failed: 0,
    skipped: 0,
    skippedByFilter: 0,
    skippedAtRuntime: 0,
    pending: 0,
  };
}

/** Turns Ginkgo's JSON report into counts and spec lists. */
export function summarise(reports: SuiteReport[]): Pick<
  CritestSummary,
  "counts" | "failed" | "suiteFailures" | "skippedAtRuntime" | "passed" | "suiteSucceeded" | "seed"
> {
  const counts = noCounts();
  const failed: FailedSpec[] = [], suiteFailures: FailedSpec[] = [], passed: string[] = [];
  const skippedAtRuntime: { name: string; reason: string }[] = [];
  let suiteSucceeded = reports.length > 0;
  let seed: number | undefined;
  for (const r of reports) {
    if (r.SuiteSucceeded === false) suiteSucceeded = false;
    seed ??= r.SuiteConfig?.RandomSeed;
    for (const s of r.SpecReports ?? []) {
      const name = [...(s.ContainerHierarchyTexts ?? []), s.LeafNodeText ?? ""]
        .filter((x) => x).join(" ");
      const failure = (): FailedSpec => ({
        name: name || s.LeafNodeType,
        state: s.State,
        location: loc(s.LeafNodeLocation),
        failureLocation: loc(s.Failure?.Location),
        failureNode: s.Failure?.FailureNodeType ?? "",
        message: [
          s.Failure?.Message ?? "",
          s.Failure?.ForwardedPanic ? `panic: ${s.Failure.ForwardedPanic}` : "",
          ...(s.AdditionalFailures ?? []).map((a) =>
            `[additional ${a.State} in ${a.Failure.FailureNodeType}] ${a.Failure.Message}`
          ),
        ].filter((x) => x).join("\n").trim(),
        seconds: Math.round((s.RunTime ?? 0) / 1e7) / 100,
      });
      if (s.LeafNodeType !== "It") {
        // BeforeSuite, AfterSuite, ReportAfterSuite…: only their failures matter
        if (s.State !== "passed" && s.State !== "skipped") suiteFailures.push(failure());
        continue;
      }
      counts.total++;
      switch (s.State) {
        case "passed":
          counts.passed++;
          passed.push(name);
          break;
        case "skipped":
          counts.skipped++;
          if (s.Failure?.Message) {
            counts.skippedAtRuntime++;
            skippedAtRuntime.push({ name, reason: s.Failure.Message.trim() });
          } else {
            counts.skippedByFilter++;
          }
          break;
        case "pending":
          counts.pending++;
          break;
        default: // failed, panicked, timedout, interrupted, aborted
          counts.failed++;
          failed.push(failure());
      }
    }
  }
  return { counts, failed, suiteFailures, skippedAtRuntime, passed, suiteSucceeded, seed };
}

// ---------------------------------------------------------------------------------------------
// The wrapper: re-run as a worker in its own session and forward signals to it

async function wrapper(): Promise<number> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(import.meta.url).pathname, ...Deno.args],
    env: { [WORKER_ENV]: "1" },
    stdin: "null",
    stdout: "inherit",
    stderr: "inherit",
    detached: true, // setsid: a terminal's Ctrl-C reaches only us, and we forward it once
  }).spawn();
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    Deno.addSignalListener(sig, () => {
      try {
        child.kill(sig === "SIGHUP" ? "SIGTERM" : sig);
      } catch { /* exited */ }
    });
  }
  return (await child.status).code;
}

// ---------------------------------------------------------------------------------------------
// The worker

const dec = new TextDecoder();

async function output(cmd: string, args: string[]): Promise<string> {
  try {
    const o = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
    return (dec.decode(o.stdout) + dec.decode(o.stderr)).trim();
  } catch (e) {
    return `(${e instanceof Error ? e.message : e})`;
  }
}

async function versions(): Promise<Record<string, string>> {
  const git = (await output("git", ["-C", ROOT, "describe", "--always", "--dirty"])).split("\n")[0];
  return {
    kuasar: git,
    containerd: (await output(join(TOOLS_BIN, "containerd"), ["--version"])).split("\n")[0],
    critest: "v1.37.0 (sigs.k8s.io/cri-tools; binary reports 'unknown')",
    runc: (await output("runc", ["--version"])).split("\n")[0],
    deno: Deno.version.deno,
    kernel: (await output("uname", ["-r"])).split("\n")[0],
  };
}

/** Copies a stream to our stdout (or stderr) and to a file, line-buffered by the source. */
async function tee(
  stream: ReadableStream<Uint8Array>,
  file: Deno.FsFile,
  to: typeof Deno.stdout | typeof Deno.stderr,
): Promise<void> {
  for await (const chunk of stream) {
    await file.write(chunk).catch(() => 0);
    await to.write(chunk).catch(() => 0);
  }
}

/** Processes whose command line names one of `dirs`, and mounts under them. */
async function leftoversUnder(dirs: string[]): Promise<string[]> {
  const found: string[] = [];
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name) || Number(e.name) === Deno.pid) continue;
    try {
      const cmd = (await Deno.readTextFile(`/proc/${e.name}/cmdline`)).replaceAll("\0", " ");
      if (dirs.some((d) => cmd.includes(d))) found.push(`process ${e.name}: ${cmd.trim()}`);
    } catch { /* gone */ }
  }
  for (const line of (await Deno.readTextFile("/proc/self/mountinfo")).split("\n")) {
    const mp = line.split(" ")[4];
    if (mp && dirs.some((d) => mp === d || mp.startsWith(d + "/"))) found.push(`mount ${mp}`);
  }
  for (const d of dirs) {
    if (await Deno.stat(d).then(() => true, () => false)) found.push(`dir ${d}`);
  }
  return found;
}

/** Seconds since boot, as dmesg stamps its lines. */
async function uptime(): Promise<number> {
  return Number((await Deno.readTextFile("/proc/uptime")).split(" ")[0]);
}

/** dmesg lines after `since` (seconds since boot) about segfaults or the kuasar helper. */
async function kernelMessages(since: number): Promise<string[]> {
  const text = await output("dmesg", []);
  return text.split("\n").filter((l) => {
    const m = /^\[\s*(\d+\.\d+)\]/.exec(l);
    return m && Number(m[1]) >= since && /segfault|kuasar|general protection|oom-kill/i.test(l);
  });
}

function printSummary(s: CritestSummary, compare?: CritestSummary): void {
  const c = s.counts;
  console.log(`\n==== critest summary: handler ${s.handler} (${s.ioType}) ====`);
  console.log(
    `ran ${c.passed + c.failed} of ${c.total} specs in ${s.seconds} s${
      s.seed === undefined ? "" : ` (seed ${s.seed})`
    }: ` +
      `${c.passed} passed, ` +
      `${c.failed} failed, ${c.skipped} skipped (${c.skippedByFilter} by filter, ` +
      `${c.skippedAtRuntime} by the spec itself)` + (c.pending ? `, ${c.pending} pending` : ""),
  );
  if (s.interrupted) console.log("INTERRUPTED: the counts are partial");
  if (s.error) console.log(`ERROR: ${s.error}`);
  for (const f of s.suiteFailures) {
    console.log(`\n[suite ${f.state}] ${f.name} (${f.failureLocation})\n  ${indent(f.message)}`);
  }
  for (const f of s.failed) {
    console.log(`\n[${f.state}] ${f.name}\n  at ${f.location}, failed at ${f.failureLocation}`);
    console.log(`  ${indent(f.message)}`);
  }
  if (s.skippedAtRuntime.length) {
    console.log("\nskipped by the spec itself:");
    for (const k of s.skippedAtRuntime) console.log(`  - ${k.name}: ${k.reason.split("\n")[0]}`);
  }
  if (compare) {
    const passedThere = new Set(compare.passed);
    const failedThere = new Set(compare.failed.map((f) => f.name));
    const ours = s.failed.filter((f) => passedThere.has(f.name));
    const both = s.failed.filter((f) => failedThere.has(f.name));
    const theirs = compare.failed.filter((f) => s.passed.includes(f.name));
    console.log(`\ncompared with ${compare.handler}:`);
    console.log(`  failing here, passing with ${compare.handler} (${ours.length}):`);
    for (const f of ours) console.log(`    - ${f.name}`);
    console.log(`  failing with both (${both.length}):`);
    for (const f of both) console.log(`    - ${f.name}`);
    console.log(`  passing here, failing with ${compare.handler} (${theirs.length}):`);
    for (const f of theirs) console.log(`    - ${f.name}`);
  }
  if (s.kernel.length) {
    console.log(`\nkernel messages during the run (${s.kernel.length}):`);
    for (const l of s.kernel) console.log(`  ${l}`);
  }
  if (s.leftovers.length) {
    console.log(`\nLEFTOVERS after cleanup (${s.leftovers.length}):`);
    for (const l of s.leftovers) console.log(`  ${l}`);
  }
  console.log(`\nlogs: ${s.logs.dir}`);
}

const indent = (t: string) => t.split("\n").slice(0, 40).join("\n  ");

async function worker(): Promise<number> {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    options: {
      handler: { type: "string", default: "kuasar-runc" },
      focus: { type: "string", multiple: true, default: [] },
      skip: { type: "string", multiple: true, default: [] },
      "no-default-skip": { type: "boolean", default: false },
      out: { type: "string" },
      logs: { type: "string" },
      compare: { type: "string" },
      timeout: { type: "string", default: "60" },
      help: { type: "boolean", short: "h", default: false },
    },
    allowPositionals: true,
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const handler = values.handler as Handler;
  if (!HANDLERS.includes(handler)) {
    console.error(`unknown handler "${values.handler}"\n${USAGE}`);
    return 2;
  }
  const unavailable = containerdUnavailable() ??
    (handler === "runc" ? undefined : runcUnavailable()) ??
    (await Deno.stat(CRITEST).then(() => undefined, () => `${CRITEST} is missing`));
  if (unavailable) {
    console.error(`cannot run critest here: ${unavailable}`);
    return 2;
  }
  const out = resolve(values.out ?? `/tmp/critest-${handler}.json`);
  const logDir = resolve(values.logs ?? out.replace(/\.json$/, "") + ".logs");
  await Deno.mkdir(logDir, { recursive: true });
  const compare = values.compare
    ? JSON.parse(await Deno.readTextFile(values.compare)) as CritestSummary
    : undefined;

  // Signals: the first interrupts critest (Ginkgo cleans up and reports), the second kills it.
  let interrupted = false;
  let critest: Deno.ChildProcess | undefined;
  let killTimer: ReturnType<typeof setTimeout> | undefined;
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    Deno.addSignalListener(sig, () => {
      if (!interrupted) {
        interrupted = true;
        console.error(`\n[critest.ts] ${sig}: stopping critest, then cleaning up (again: kill)`);
        try {
          critest?.kill("SIGINT");
        } catch { /* exited */ }
        killTimer = setTimeout(() => {
          try {
            critest?.kill("SIGKILL");
          } catch { /* exited */ }
        }, 60_000);
      } else {
        try {
          critest?.kill("SIGKILL");
        } catch { /* exited */ }
      }
    });
  }

  const started = new Date();
  const skip = [...(values["no-default-skip"] ? [] : [CRITEST_OFFLINE_SKIP]), ...values.skip];
  const summary: CritestSummary = {
    handler,
    ioType: handler === "kuasar-runc-stream" ? "streaming" : "fifo",
    startedAt: started.toISOString(),
    seconds: 0,
    versions: await versions(),
    command: [],
    skip,
    focus: values.focus,
    counts: noCounts(),
    suiteSucceeded: false,
    critestExitCode: null,
    interrupted: false,
    failed: [],
    suiteFailures: [],
    skippedAtRuntime: [],
    passed: [],
    logs: { dir: logDir },
    leftovers: [],
    kernel: [],
  };
  const bootSecondsAtStart = await uptime();

  let ctd: TestContainerd | undefined;
  let cleanup: () => Promise<void> = async () => {};
  let sandboxerLog: string | undefined;
  let sandboxerDir: string | undefined;
  const dirs: string[] = [];
  try {
    console.error(`[critest.ts] starting containerd${handler === "runc" ? "" : " and sandboxer"}…`);
    if (handler === "runc") {
      const c = await TestContainerd.start();
      ctd = c;
      cleanup = () => c.cleanup();
    } else {
      const e = await startE2E("runc");
      ctd = e.ctd;
      sandboxerLog = e.d.logFile;
      sandboxerDir = e.d.dir;
      dirs.push(e.d.base);
      cleanup = () => e.cleanup();
    }
    dirs.push(ctd.base);
    console.error(`[critest.ts] containerd ${ctd.base}, log ${ctd.logFile}`);
    if (sandboxerLog) console.error(`[critest.ts] sandboxer log ${sandboxerLog}`);
    if (interrupted) throw new Error("interrupted before critest started");

    const images = join(ctd.base, "critest-images.yaml");
    await writeCritestImagesFile(images);
    await Deno.copyFile(images, join(logDir, "critest-images.yaml"));
    const jsonReport = join(logDir, "ginkgo-report.json");
    const junitReport = join(logDir, "junit.xml");
    await Deno.remove(jsonReport).catch(() => {});
    const endpoint = `unix://${ctd.address}`;
    const args = [
      "-config",
      ctd.crictlConfig,
      "-runtime-endpoint",
      endpoint,
      "-image-endpoint",
      endpoint,
      "-runtime-handler",
      handler,
      "-test-images-file",
      images,
      ...skip.map((s) => `--ginkgo.skip=${s}`),
      ...values.focus.map((f) => `--ginkgo.focus=${f}`),
      "--ginkgo.v",
      "--ginkgo.no-color",
      `--ginkgo.timeout=${Number(values.timeout)}m`,
      `--ginkgo.json-report=${jsonReport}`,
      `--ginkgo.junit-report=${junitReport}`,
      ...positionals,
    ];
    summary.command = [CRITEST, ...args];
    await Deno.writeTextFile(join(logDir, "containerd-config.toml"), await ctd.config());
    const critestLog = join(logDir, "critest.log");
    const logFile = await Deno.open(critestLog, { write: true, create: true, truncate: true });
    console.error(`[critest.ts] ${summary.command.join(" ")}`);
    try {
      critest = new Deno.Command(CRITEST, {
        args,
        cwd: ctd.base,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const copies = [
        tee(critest.stdout, logFile, Deno.stdout),
        tee(critest.stderr, logFile, Deno.stderr),
      ];
      const st = await critest.status;
      await Promise.all(copies);
      summary.critestExitCode = st.code;
    } finally {
      logFile.close();
      clearTimeout(killTimer);
    }
    summary.logs.critest = critestLog;
    try {
      const reports = JSON.parse(await Deno.readTextFile(jsonReport)) as SuiteReport[];
      Object.assign(summary, summarise(reports));
      summary.logs.report = jsonReport;
      summary.logs.junit = junitReport;
    } catch (e) {
      summary.error = `no Ginkgo report (${e instanceof Error ? e.message : e}); see critest.log`;
    }
  } catch (e) {
    summary.error = e instanceof Error ? e.message : String(e);
  } finally {
    summary.interrupted = interrupted;
    if (ctd) {
      await Deno.copyFile(ctd.logFile, join(logDir, "containerd.log")).catch(() => {});
      summary.logs.containerd = join(logDir, "containerd.log");
    }
    if (sandboxerLog) {
      await Deno.copyFile(sandboxerLog, join(logDir, "sandboxer.log")).catch(() => {});
      summary.logs.sandboxer = join(logDir, "sandboxer.log");
    }
    if (sandboxerDir) {
      // the task relay's log (native/relay.c); per-container monitor logs are too many to keep
      await Deno.copyFile(join(sandboxerDir, ".relay.log"), join(logDir, "relay.log"))
        .then(() => summary.logs.relay = join(logDir, "relay.log"), () => {});
    }
    console.error("[critest.ts] cleaning up (pods, containerd, sandboxer)…");
    await cleanup().catch((e) => console.error(`[critest.ts] cleanup: ${e}`));
    summary.leftovers = await leftoversUnder(dirs);
    summary.kernel = await kernelMessages(bootSecondsAtStart);
    summary.seconds = Math.round((Date.now() - started.getTime()) / 1000);
    await Deno.writeTextFile(out, JSON.stringify(summary, null, 2) + "\n");
  }
  printSummary(summary, compare);
  console.log(`summary: ${out}`);
  if (summary.error || summary.interrupted) return 1;
  return summary.counts.failed || summary.suiteFailures.length ? 1 : 0;
}

if (import.meta.main) {
  if (Deno.uid() !== 0) {
    console.error(`${basename(import.meta.url)} runs containerd and real pods: run it as root`);
    Deno.exit(2);
  }
  Deno.exit(Deno.env.get(WORKER_ENV) ? await worker() : await wrapper());
}
