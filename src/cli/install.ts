/**
 * `kuasar install [--root DIR] [--prefix DIR] [--kind …]` and
 * `kuasar uninstall [--root DIR]` (src/daemon/install.ts does the work).
 * From a checkout (`deno task kuasar install`), the bundle is built first.
 *
 * @module
 */
import { type Command, Option } from "commander";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { KINDS } from "../daemon/kinds.ts";
import {
  type ChangeReport,
  install,
  MANIFEST,
  type ProgramSource,
  reportLines,
  uninstall,
} from "../daemon/install.ts";
import { UnavailableError } from "../domain/errors.ts";
import { ExitStatus } from "./doctor.ts";

interface InstallFlags {
  root: string;
  prefix: string;
  kind?: string[];
  guestImage?: string;
  force?: boolean;
}

/** This program as it runs: compiled, a bundle, or the source tree (bundled into `scratch`). */
async function currentProgram(scratch: string): Promise<ProgramSource> {
  const exe = Deno.execPath();
  if (basename(exe) !== "deno") return { form: "compiled", binary: exe };
  const main = fileURLToPath(Deno.mainModule);
  if (basename(main) === "kuasar.js") return { form: "bundle", dir: dirname(main), deno: exe };
  const bundler = join(dirname(dirname(main)), "scripts", "bundle.ts");
  const r = await new Deno.Command(exe, {
    args: ["run", "-A", bundler, scratch],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!r.success) {
    throw new UnavailableError(
      `cannot bundle this checkout (${bundler}): ${new TextDecoder().decode(r.stderr).trim()}`,
    );
  }
  return { form: "bundle", dir: scratch, deno: exe };
}

/** systemd as the running init of this node (not of a staging root). */
function systemdRuns(root: string): boolean {
  if (root !== "/") return false;
  try {
    return Deno.statSync("/run/systemd/system").isDirectory;
  } catch {
    return false;
  }
}

async function systemctl(args: string[]): Promise<void> {
  await new Deno.Command("systemctl", { args, stdout: "null", stderr: "inherit" }).output()
    .catch(() => {});
}

async function print(lines: string[]): Promise<void> {
  await Deno.stdout.write(new TextEncoder().encode(lines.map((l) => l + "\n").join("")));
}

async function embeddedHelper(): Promise<{ bytes: Uint8Array; sha256: string }> {
  const mod = await import("../gen/helper/kuasar_helper_x86_64.ts");
  return {
    bytes: Uint8Array.from(atob(mod.HELPER_BASE64), (c) => c.charCodeAt(0)),
    sha256: mod.HELPER_SHA256,
  };
}

/** Adds `install` and `uninstall` to the command tree. */
export function addInstallCommands(program: Command): void {
  const names = KINDS.map((k) => k.name);
  program.command("install")
    .description("install the sandboxers on this node (or a staging root); idempotent")
    .option("--root <dir>", "staging root: files go under it, naming the node's paths", "/")
    .option("--prefix <dir>", "where bin/kuasar and lib/kuasar go", "/usr/local")
    .addOption(new Option("-k, --kind <kind...>", "kinds to install (default: all)").choices(names))
    .option("--guest-image <dir>", "the vmm guest image to install (default /var/lib/kuasar/guest)")
    .option("--force", "replace files that kuasar install did not put there")
    .action(async (f: InstallFlags) => {
      const kinds = f.kind ? KINDS.filter((k) => f.kind!.includes(k.name)) : KINDS;
      const scratch = await Deno.makeTempDir({ prefix: "kuasar-install-" });
      let report: ChangeReport;
      try {
        report = await install({
          root: f.root,
          prefix: f.prefix,
          kinds,
          program: await currentProgram(scratch),
          helper: await embeddedHelper(),
          guestImage: f.guestImage,
          force: f.force,
        });
      } finally {
        await Deno.remove(scratch, { recursive: true }).catch(() => {});
      }
      if (systemdRuns(f.root)) await systemctl(["daemon-reload"]);
      const bin = join(f.prefix, "bin", "kuasar");
      await print(reportLines(report, f.root));
      // Someone else's file where ours belongs: the install is not what the next steps assume.
      if (report.kept.some((k) => k.why.startsWith("not installed by kuasar install"))) {
        throw new ExitStatus(1);
      }
      await print([
        "next:",
        `  systemctl enable --now ${kinds.map((k) => `kuasar-${k.name}`).join(" ")}`,
        "  systemctl restart containerd",
        `  ${bin} doctor`,
      ]);
    });
  program.command("uninstall")
    .description(`remove what kuasar install put there (listed in ${MANIFEST}); pods are kept`)
    .option("--root <dir>", "the staging root given to install", "/")
    .action(async (f: { root: string }) => {
      if (systemdRuns(f.root)) {
        const units = KINDS.map((k) => `kuasar-${k.name}.service`);
        await systemctl(["disable", "--now", ...units]);
      }
      const report = await uninstall(f.root);
      if (systemdRuns(f.root)) await systemctl(["daemon-reload"]);
      await print(reportLines(report, f.root));
    });
}
