/**
 * `kuasar ctl`: list, inspect and drive the sandboxes of a running
 * sandboxer through its Controller socket (and, for `list`, its --dir,
 * since the Controller API has no List); `exec` runs a command in a VM
 * pod's guest through the pod's task socket, as Kuasar's kuasar-ctl does.
 *
 * @module
 */
import { join } from "node:path";
import { type Command, Option } from "commander";
import { ControllerClient } from "../adapters/grpc/controller_client.ts";
import { fromTimestamp } from "../adapters/convert.ts";
import { KINDS } from "../daemon/kinds.ts";
import type { Instant } from "../domain/time.ts";
import { validateId } from "../domain/ids.ts";
import { SandboxServiceDefinition } from "../gen/kuasar/sandbox.ts";
import { TtrpcClient } from "../adapters/ttrpc/client.ts";
import { SHELL_HELLO } from "../ports/agent_protocol.ts";
import { unaryClient } from "../adapters/ttrpc/typed.ts";
import { ExitStatus } from "./doctor.ts";
import { ShellOutput } from "./shell_output.ts";

interface CtlFlags {
  kind: string;
  listen?: string;
  dir?: string;
  json?: boolean;
}

function target(flags: CtlFlags): { listen: string; dir: string } {
  const k = KINDS.find((x) => x.name === flags.kind);
  if (!k) {
    throw new Error(
      `Unknown kind "${flags.kind}": expected ${KINDS.map((x) => x.name).join(", ")}`,
    );
  }
  return { listen: flags.listen ?? k.defaultListen, dir: flags.dir ?? k.defaultDir };
}

function iso(t: Instant | undefined): string {
  if (!t) return "";
  return new Date(t.seconds * 1000 + Math.floor(t.nanos / 1e6)).toISOString();
}

/** A duration as kubectl shows ages: 45s, 12m, 3h, 2d. */
function age(secs: number): string {
  if (secs < 120) return `${secs}s`;
  if (secs < 7200) return `${Math.floor(secs / 60)}m`;
  if (secs < 172800) return `${Math.floor(secs / 3600)}h`;
  return `${Math.floor(secs / 86400)}d`;
}

function out(s: string): void {
  Deno.stdout.writeSync(new TextEncoder().encode(s + "\n"));
}

async function withClient<T>(flags: CtlFlags, fn: (c: ControllerClient) => Promise<T>): Promise<T> {
  const c = new ControllerClient(target(flags).listen);
  try {
    return await fn(c);
  } finally {
    c.close();
  }
}

/** Sandbox ids found under --dir. */
async function sandboxIds(dir: string): Promise<string[]> {
  const ids: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (!e.isDirectory) continue;
    try {
      await Deno.stat(join(dir, e.name, "sandbox.json"));
      ids.push(validateId("sandbox", e.name));
    } catch { /* not a sandbox */ }
  }
  return ids.sort();
}

/** The sandbox an id or a unique id prefix names (as kuasar-ctl takes them). */
export async function resolveId(dir: string, idOrPrefix: string): Promise<string> {
  const ids = await sandboxIds(dir).catch((): string[] => []);
  if (ids.includes(idOrPrefix)) return idOrPrefix;
  const matches = ids.filter((i) => i.startsWith(idOrPrefix));
  if (matches.length === 1) return matches[0];
  if (!matches.length) throw new Error(`No sandbox id starts with "${idOrPrefix}" in ${dir}`);
  throw new Error(`"${idOrPrefix}" names ${matches.length} sandboxes: give more of the id`);
}

/**
 * The guest's ExecVMProcess (Kuasar's protocol) answers only output, and
 * fails a command that exits non-zero: the command runs with its stderr
 * merged and its exit code printed after a marker line, so both come back.
 */
const EXIT_MARK = "\u0000kuasar-exit=";
export function withExitTrailer(command: string): string {
  // A subshell, so that the command's own `exit` ends it, not the trailer.
  return `( ${command}\n) 2>&1; printf '\\n\\000kuasar-exit=%d\\n' "$?"`;
}

/** The output and exit code from a trailer-marked result. */
export function splitExitTrailer(out: string): { output: string; code: number } {
  const at = out.lastIndexOf(EXIT_MARK);
  if (at < 0) return { output: out, code: 0 };
  const code = Number(out.slice(at + EXIT_MARK.length).trim());
  // The trailer starts on a line of its own: the newline before it is ours.
  return { output: out.slice(0, at).replace(/\n$/, ""), code: Number.isInteger(code) ? code : 1 };
}

/** Adds `ctl` and its subcommands to the program. */
export function addCtlCommand(program: Command): void {
  const ctl = program.command("ctl")
    .description('inspect and drive the sandboxes of a running sandboxer (also "kuasar-ctl")')
    .addOption(new Option("-k, --kind <kind>", "sandboxer kind, for default paths").default("runc"))
    .option("-l, --listen <path>", "Controller socket (default: the kind's)")
    .option("-d, --dir <path>", "sandboxer --dir (default: the kind's)")
    .option("--json", "print JSON");
  const flags = () => ctl.opts<CtlFlags>();

  ctl.command("list").description("list sandboxes with their state").action(async () => {
    const f = flags();
    const ids = await sandboxIds(target(f).dir);
    const rows = await withClient(f, (c) =>
      Promise.all(ids.map(async (id) => {
        try {
          const s = await c.status(id, true);
          const created = fromTimestamp(s.createdAt);
          return {
            id,
            state: s.state,
            pid: s.pid,
            containers: Number(s.info.containers ?? 0),
            created: iso(created),
            ageSecs: created ? Math.max(0, Math.floor(Date.now() / 1000 - created.seconds)) : 0,
            // created / running / stopped (READY/NOTREADY does not tell created from stopped).
            lifecycle: s.info.lifecycle ?? "",
            // A sandbox never started goes at this time (the daemon's created_sandbox_timeout_secs).
            shutdownUnlessStartedAt: s.info.shutdownUnlessStartedAt ?? "",
            address: s.address,
          };
        } catch (e) {
          return {
            id,
            state: `unknown (${(e as Error).message})`,
            pid: 0,
            containers: 0,
            created: "",
            ageSecs: 0,
            lifecycle: "",
            shutdownUnlessStartedAt: "",
            address: "",
          };
        }
      })));
    if (f.json) return out(JSON.stringify(rows, null, 2));
    out(["SANDBOX", "STATE", "PID", "CONTAINERS", "CREATED", "AGE", "LIFECYCLE"].join("\t"));
    for (const r of rows) {
      const lifecycle = r.shutdownUnlessStartedAt
        ? `${r.lifecycle} (shut down at ${r.shutdownUnlessStartedAt} unless started)`
        : r.lifecycle;
      out([r.id, r.state, r.pid, r.containers, r.created, age(r.ageSecs), lifecycle].join("\t"));
    }
  });

  ctl.command("status <id>").description("print a sandbox's status").option(
    "--verbose",
    "include details",
  )
    .action(async (id: string, o: { verbose?: boolean }) => {
      const s = await withClient(flags(), (c) => c.status(id, !!o.verbose));
      out(JSON.stringify(
        {
          id: s.sandboxId,
          state: s.state,
          pid: s.pid,
          created: iso(fromTimestamp(s.createdAt)),
          exited: iso(fromTimestamp(s.exitedAt)),
          address: s.address,
          version: s.version,
          info: s.info,
        },
        null,
        2,
      ));
    });

  ctl.command("stop <id>").description("stop a sandbox (SIGTERM, then SIGKILL after the timeout)")
    .option("-t, --timeout <secs>", "grace period in seconds", "10")
    .action(async (id: string, o: { timeout: string }) => {
      await withClient(flags(), (c) => c.stop(id, Number(o.timeout)));
    });

  ctl.command("shutdown <id>").description("delete a sandbox and everything it holds")
    .action(async (id: string) => {
      await withClient(flags(), (c) => c.shutdown(id));
    });

  ctl.command("exec <id> <command...>")
    .description(
      "run a command in a VM pod's guest (vmm); prints its output (stderr merged) and exits " +
        "with its exit code, e.g. `exec 3f2a -- uname -r`",
    )
    .option("-t, --timeout <secs>", "give up after this long (exit 124, as timeout(1))")
    .option("-i, --stdin", "send this command's stdin to the command (read to its end first)")
    .action(
      async (idOrPrefix: string, command: string[], o: { timeout?: string; stdin?: boolean }) => {
        const f = flags();
        const id = await resolveId(target(f).dir, idOrPrefix);
        const s = await withClient(f, (c) => c.status(id, false));
        if (!s.address.startsWith("ttrpc+unix://")) {
          throw new Error(`Sandbox "${id}" has no task address (state ${s.state})`);
        }
        const timeoutMs = o.timeout ? Number(o.timeout) * 1000 : undefined;
        if (timeoutMs !== undefined && !(timeoutMs > 0)) {
          throw new Error(`--timeout "${o.timeout}": expected a positive number of seconds`);
        }
        const stdin = o.stdin
          ? new Uint8Array(await new Response(Deno.stdin.readable).arrayBuffer())
          : new Uint8Array();
        const client = await TtrpcClient.connectUnix(s.address.slice("ttrpc+unix://".length));
        let r;
        try {
          r = await unaryClient(client, SandboxServiceDefinition).execVMProcess({
            command: withExitTrailer(command.join(" ")),
            stdin,
          }, { timeoutMs });
        } catch (e) {
          if (timeoutMs !== undefined && /deadline|timed out|timeout/i.test(String(e))) {
            throw new ExitStatus(124);
          }
          throw e;
        } finally {
          client.close();
        }
        const { output, code } = splitExitTrailer(r.out);
        const bytes = new TextEncoder().encode(output);
        for (let off = 0; off < bytes.length;) off += await Deno.stdout.write(bytes.subarray(off));
        if (code !== 0) throw new ExitStatus(code);
      },
    );

  ctl.command("shell <id>")
    .description(
      "open a VM pod's debug console (vmm with [hypervisor.task] debug = true): a shell on a " +
        "pty in the guest; exits with the shell's status; Ctrl-] leaves",
    )
    .action(async (idOrPrefix: string) => {
      const f = flags();
      const id = await resolveId(target(f).dir, idOrPrefix);
      const s = await withClient(f, (c) => c.status(id, true));
      const path = s.info.debugConsole;
      if (!path) {
        throw new Error(
          `Sandbox "${id}" has no debug console: set [hypervisor.task] debug = true in the ` +
            "sandboxer's config (pods started after that have one)",
        );
      }
      throw new ExitStatus(await debugShell(path));
    });

  ctl.command("wait <id>").description("wait until a sandbox stops; print its exit status")
    .action(async (id: string) => {
      const w = await withClient(flags(), (c) => c.wait(id));
      out(`${w.exitStatus}\t${iso(fromTimestamp(w.exitedAt))}`);
    });
}

/** Ctrl-]: leaves the console (as telnet's escape). */
const LEAVE = 0x1d;

/**
 * Relays this terminal (raw, when it is one) to the guest's debug console until the shell
 * exits (its status, from the console's trailer) or Ctrl-] (0).
 */
async function debugShell(path: string): Promise<number> {
  const conn = await Deno.connect({ transport: "unix", path });
  await conn.write(new TextEncoder().encode(SHELL_HELLO));
  const tty = Deno.stdin.isTerminal();
  if (tty) Deno.stdin.setRaw(true);
  const left = Promise.withResolvers<number>();
  const write = async (b: Uint8Array) => {
    for (let off = 0; off < b.length;) off += await Deno.stdout.write(b.subarray(off));
  };
  (async () => {
    const buf = new Uint8Array(4096);
    for (;;) {
      const n = await Deno.stdin.read(buf).catch(() => null);
      if (n === null) return; // piped input ended: the shell goes on until it exits
      const chunk = buf.subarray(0, n);
      const leave = tty ? chunk.indexOf(LEAVE) : -1;
      await conn.write(leave >= 0 ? chunk.subarray(0, leave) : chunk).catch(() => {});
      if (leave >= 0) return left.resolve(0);
    }
  })();
  const output = (async () => {
    const shell = new ShellOutput();
    for await (const chunk of conn.readable) {
      const r = shell.push(chunk);
      await write(r.out);
      if (r.code !== undefined) return r.code;
    }
    console.error("\r\nThe debug console closed (the VM stopped?)");
    return 1;
  })();
  try {
    return await Promise.race([output, left.promise]);
  } finally {
    if (tty) Deno.stdin.setRaw(false);
    try {
      conn.close();
    } catch { /* closed */ }
  }
}
