/**
 * Command line: `kuasar <kind> [flags]` runs a sandboxer (Kuasar's flags and
 * defaults), `kuasar ctl …` inspects and drives one, and the binary answers
 * to Kuasar's names (`runc-sandboxer`, `kuasar-ctl`…) through symlinks.
 *
 * Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error.
 *
 * @module
 */
import { Command, CommanderError, Option } from "commander";
import { Code, codeOf, messageOf } from "../domain/errors.ts";
import { log, Logger, type LogLevel, parseLogLevel } from "../lib/log.ts";
import { type Daemon, startDaemon } from "../daemon/daemon.ts";
import { loadConfig } from "../daemon/config.ts";
import type { HostKind } from "../adapters/kind_host.ts";
import { kindForBinaryName, KINDS } from "../daemon/kinds.ts";
import { BUILD_TIME, VERSION } from "../lib/version.ts";
import { serveWasmHost } from "../adapters/wasm/host/host.ts";
import { addCtlCommand } from "./ctl.ts";
import { addDoctorCommand, DoctorUsageError, ExitStatus } from "./doctor.ts";
import { addInstallCommands } from "./install.ts";

/** Thrown for bad flags or config; exits 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

function versionText(): string {
  return `Version: ${VERSION}\nBuild Time: ${BUILD_TIME}\n`;
}

interface DaemonFlags {
  listen: string;
  dir: string;
  config?: string;
  logLevel?: string;
  helper?: string;
  helperDir?: string;
  containerdAddress?: string;
  taskApiVersion?: string;
  version?: boolean;
}

async function runKind(kind: HostKind, flags: DaemonFlags): Promise<void> {
  if (flags.version) {
    await Deno.stdout.write(new TextEncoder().encode(versionText()));
    return;
  }
  let config;
  try {
    config = await loadConfig(
      flags.config ?? kind.defaultConfig,
      kind.configTable ?? kind.name,
      kind.settingsSchema,
      !!flags.config,
    );
  } catch (e) {
    throw new UsageError(messageOf(e));
  }
  const s = config.sandbox;
  let level: LogLevel = "info";
  try {
    level = parseLogLevel(flags.logLevel ?? s.log_level ?? "info");
  } catch (e) {
    throw new UsageError(messageOf(e));
  }
  Logger.setLevel(level);
  const apiVersion = Number(flags.taskApiVersion ?? s.task_api_version ?? 3);
  if (apiVersion !== 2 && apiVersion !== 3) {
    throw new UsageError(`Invalid --task-api-version "${flags.taskApiVersion}": expected 2 or 3`);
  }
  // A daemon must not die of one forgotten promise: log it and keep serving.
  globalThis.addEventListener("unhandledrejection", (ev) => {
    ev.preventDefault();
    log.error("unhandled rejection", {
      error: ev.reason instanceof Error ? ev.reason.stack ?? ev.reason.message : String(ev.reason),
    });
  });
  // Signals are handled from the start: one arriving during recovery or right
  // after READY=1 must still mean a clean stop.
  const running: { daemon?: Daemon; stopRequested: boolean } = { stopRequested: false };
  for (const sig of ["SIGTERM", "SIGINT"] as const) {
    Deno.addSignalListener(sig, () => {
      running.stopRequested = true;
      running.daemon?.stop();
    });
  }
  const daemon = running.daemon = await startDaemon(kind, {
    listen: flags.listen,
    dir: flags.dir,
    helper: flags.helper ?? s.helper,
    helperDir: flags.helperDir ?? s.helper_dir ?? "/var/lib/kuasar/bin",
    containerdAddress: flags.containerdAddress ?? s.containerd_address ??
      "/run/containerd/containerd.sock.ttrpc",
    taskApiVersion: apiVersion,
    stopTimeoutMs: (s.stop_timeout_secs ?? 10) * 1000,
    createdSandboxTimeoutMs: (s.created_sandbox_timeout_secs ?? 300) * 1000,
    enableTracing: s.enable_tracing ?? false,
    settings: config.kind,
  });
  if (running.stopRequested) daemon.stop();
  await daemon.finished;
}

interface WasmHostFlags {
  control: string;
  warm: string;
  wasmtimeLib?: string;
  wasmtime?: string;
  wasmedge?: string;
  logLevel: string;
}

/** Builds the command tree. */
export function buildProgram(): Command {
  const program = new Command("kuasar")
    .description(
      "Multi-sandbox container runtime: one sandboxer daemon per node for containerd's Sandbox API",
    )
    .addOption(new Option("-v, --version", "print version and build time"))
    // Root options only before the subcommand, so `kuasar runc --version` is runc's flag.
    .enablePositionalOptions()
    .exitOverride()
    .action(async (opts: { version?: boolean }) => {
      if (opts.version) await Deno.stdout.write(new TextEncoder().encode(versionText()));
      else program.help();
    });
  for (const kind of KINDS) {
    program.command(kind.name)
      .description(
        `run the ${kind.name} sandboxer: ${kind.description} (also "${kind.binaryName}")`,
      )
      .option(
        "-l, --listen <path>",
        "unix socket of the Sandbox Controller (gRPC)",
        kind.defaultListen,
      )
      .option(
        "-d, --dir <path>",
        "working directory, one sub-directory per sandbox",
        kind.defaultDir,
      )
      .option(
        "-c, --config <file>",
        `TOML config${kind.defaultConfig ? ` (default ${kind.defaultConfig})` : ""}`,
      )
      .option("--log-level <level>", "trace, debug, info, warn or error")
      .option("--helper <path>", "use this kuasar-helper binary instead of the embedded one")
      .option(
        "--helper-dir <path>",
        "where the embedded helper is installed (default /var/lib/kuasar/bin)",
      )
      .option("--containerd-address <path>", "containerd ttrpc socket for task events")
      .option("--task-api-version <n>", "Task API version Start reports: 3 (containerd 2.1+) or 2")
      .addOption(new Option("-v, --version", "print version and build time"))
      .action((flags: DaemonFlags) => runKind(kind, flags));
  }
  addCtlCommand(program);
  addDoctorCommand(program);
  addInstallCommands(program);
  // Internal: the Wasm sandboxer starts this process itself (src/adapters/wasm/host/host.ts).
  program.command("wasm-host", { hidden: true })
    .requiredOption("--control <path>", "control socket")
    .option("--warm <n>", "embedded-engine workers kept ready", "2")
    .option("--wasmtime-lib <path>", "libwasmtime.so for the Wasmtime engine")
    .option("--wasmtime <path>", "wasmtime CLI, when the library is not installed")
    .option("--wasmedge <path>", "wasmedge CLI")
    .option("--log-level <level>", "trace, debug, info, warn or error", "info")
    .action(async (o: WasmHostFlags) => {
      Logger.setLevel(parseLogLevel(o.logLevel));
      await serveWasmHost({
        control: o.control,
        warm: Number(o.warm) || 0,
        wasmtimeLib: o.wasmtimeLib,
        wasmtimeCli: o.wasmtime,
        wasmedge: o.wasmedge,
      });
    });
  return program;
}

/**
 * The arguments as the user meant them: called through a symlink named like
 * one of Kuasar's binaries, the kind (or `ctl`) is implied.
 */
export function effectiveArgs(argv0: string, args: string[]): string[] {
  const name = argv0.slice(argv0.lastIndexOf("/") + 1);
  const kind = kindForBinaryName(name);
  if (kind) return [kind.name, ...args];
  if (name === "kuasar-ctl") return ["ctl", ...args];
  return args;
}

/** argv[0] as invoked (Deno resolves symlinks in execPath, /proc/self/cmdline does not). */
export function invokedName(): string {
  // The installed launcher (src/daemon/install.ts) runs the bundle on Deno and passes the name
  // it was called by; not inherited by what this process starts.
  const passed = Deno.env.get("KUASAR_ARGV0");
  if (passed !== undefined) {
    Deno.env.delete("KUASAR_ARGV0");
    return passed;
  }
  try {
    const cmd = Deno.readTextFileSync("/proc/self/cmdline").split("\0");
    // From source, argv is "deno run … main.ts": only a compiled binary has a meaningful argv[0].
    return cmd[0] ?? "";
  } catch {
    return "";
  }
}

/** Runs the CLI; resolves with the process exit code. */
export async function main(args: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(effectiveArgs(invokedName(), args), { from: "user" });
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      return e.exitCode === 0 ? 0 : 2;
    }
    if (e instanceof ExitStatus) return e.code;
    const usage = e instanceof UsageError || e instanceof DoctorUsageError ||
      codeOf(e) === Code.INVALID_ARGUMENT;
    console.error(`kuasar: ${messageOf(e)}`);
    return usage ? 2 : 1;
  }
}
