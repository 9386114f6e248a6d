/**
 * `kuasar doctor [--kind …] [--json]`: what each kind needs of this node,
 * found ok or not, with what to do about each failure. Exit code 1 when a
 * required check fails, 0 otherwise (warnings included), 2 on bad flags.
 *
 * @module
 */
import { type Command, Option } from "commander";
import { doctorVerdict, type NodeCheck } from "../domain/doctor.ts";
import { runDoctor } from "../daemon/doctor.ts";
import { KINDS } from "../daemon/kinds.ts";
import { Logger } from "../lib/log.ts";

/** Ends the CLI with this exit code and nothing more printed. */
export class ExitStatus extends Error {
  constructor(readonly code: number) {
    super(`exit ${code}`);
    this.name = "ExitStatus";
  }
}

interface DoctorFlags {
  kind?: string[];
  json?: boolean;
  listen?: string;
  dir?: string;
  config?: string;
  helper?: string;
  helperDir?: string;
  containerd?: string;
  containerdConfig?: string;
}

const LABEL = { ok: "ok", warn: "WARN", fail: "FAIL", skip: "skip" } as const;

/** The checks as a table for people: one line each, the fix indented under it. */
export function formatChecks(checks: readonly NodeCheck[]): string {
  const idWidth = Math.max(...checks.map((c) => c.id.length), 2);
  const kindWidth = Math.max(...checks.map((c) => (c.kind ?? "node").length));
  const lines = checks.flatMap((c) => {
    const head = `${(c.kind ?? "node").padEnd(kindWidth)}  ${LABEL[c.status].padEnd(4)}  ` +
      `${c.id.padEnd(idWidth)}  `;
    const out = [head + c.detail];
    if (c.fix && c.status !== "ok") out.push(`${" ".repeat(head.length)}fix: ${c.fix}`);
    return out;
  });
  const v = doctorVerdict(checks);
  lines.push(`${v.ok} ok, ${v.warn} warnings, ${v.fail} failed, ${v.skip} skipped`);
  return lines.join("\n") + "\n";
}

/** Adds `doctor` to the command tree. */
export function addDoctorCommand(program: Command): void {
  const names = KINDS.map((k) => k.name);
  program.command("doctor")
    .description("check what the sandbox kinds need of this node, and say what to fix")
    .addOption(
      new Option(
        "-k, --kind <kind...>",
        "kinds to check (default: every kind, a kind whose " +
          "engine is not installed only noted)",
      ).choices(names),
    )
    .option("--json", "print JSON")
    .option("-l, --listen <path>", "the sandboxer's socket (one --kind; default: the kind's)")
    .option("-d, --dir <path>", "the sandboxer's --dir (one --kind; default: the kind's)")
    .option("-c, --config <file>", "the sandboxer's TOML config (one --kind)")
    .option("--helper <path>", "a kuasar-helper binary instead of the embedded one")
    .option(
      "--helper-dir <path>",
      "the sandboxer's --helper-dir (default: config or /var/lib/kuasar/bin)",
    )
    .option("--containerd <path>", "containerd binary (default: containerd on PATH)")
    .option(
      "--containerd-config <file>",
      "containerd's config (default /etc/containerd/config.toml)",
    )
    .action(async (f: DoctorFlags) => {
      // Its findings are the output: the log's info lines (a helper copy in a temp dir) are not.
      Logger.setLevel("warn");
      const kinds = f.kind ? KINDS.filter((k) => f.kind!.includes(k.name)) : KINDS;
      if ((f.listen || f.dir || f.config) && kinds.length !== 1) {
        throw new DoctorUsageError("--listen, --dir and --config need exactly one --kind");
      }
      const checks = await runDoctor({
        kinds,
        explicit: !!f.kind,
        listen: f.listen,
        dir: f.dir,
        config: f.config,
        helper: f.helper,
        helperDir: f.helperDir,
        containerd: f.containerd,
        containerdConfig: f.containerdConfig,
      });
      const verdict = doctorVerdict(checks);
      const text = f.json
        ? JSON.stringify({ ok: verdict.exitCode === 0, checks }, null, 2) + "\n"
        : formatChecks(checks);
      await Deno.stdout.write(new TextEncoder().encode(text));
      if (verdict.exitCode) throw new ExitStatus(verdict.exitCode);
    });
}

/** Bad flag combinations: exit 2, as every usage error. */
export class DoctorUsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}
