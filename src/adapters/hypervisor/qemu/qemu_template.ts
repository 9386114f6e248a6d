/**
 * QEMU's side of VM templates: the template's RAM is a file (memory-backend-file), saved by
 * migration with `x-ignore-shared`, so the stream carries only device state (~350 KB); a
 * clone maps the same file copy-on-write (`share=off`), starts with `-incoming defer` and
 * loads that state. Migration goes over a unix socket next to the QMP one: the host writes
 * the stream to the state file, and reads it back into the clone.
 *
 * @module
 */
import { DeadlineExceededError, InternalError } from "../../../domain/errors.ts";
import type { VmDescription } from "../../../ports/hypervisor.ts";
import { QmpClient } from "../qmp.ts";

const IGNORE_SHARED = { capabilities: [{ capability: "x-ignore-shared", state: true }] };

/** The migration socket of a VM: beside its QMP socket. */
function migrationSocket(vm: VmDescription): string {
  return `${vm.controlSocket}.m`;
}

function msLeft(deadline: number): number {
  return Math.max(1000, deadline - performance.now());
}

/** Polls `query-migrate` until it completed; a failed migration is an error with QEMU's reason. */
async function migrated(qmp: QmpClient, deadline: number): Promise<void> {
  for (;;) {
    const m = await qmp.execute("query-migrate") as { status?: string; "error-desc"?: string };
    if (m.status === "completed") return;
    if (m.status === "failed" || m.status === "cancelled") {
      throw new InternalError(`QEMU's migration ${m.status}: ${m["error-desc"] ?? "no reason"}`);
    }
    if (performance.now() > deadline) {
      throw new DeadlineExceededError(`QEMU's migration is still ${m.status ?? "not started"}`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Stops the running template VM and writes its state to `stateFile`. */
export async function saveQemuState(
  vm: VmDescription,
  stateFile: string,
  deadline: number,
): Promise<void> {
  const sock = migrationSocket(vm);
  await Deno.remove(sock).catch(() => {});
  const listener = Deno.listen({ transport: "unix", path: sock });
  await Deno.chmod(sock, 0o600);
  const qmp = await QmpClient.connect(vm.controlSocket, msLeft(deadline));
  try {
    await qmp.execute("stop");
    await qmp.execute("migrate-set-capabilities", IGNORE_SHARED);
    await qmp.execute("migrate", { uri: `unix:${sock}` });
    const conn = await withDeadline(listener.accept(), deadline, () => listener.close());
    const out = await Deno.open(stateFile, {
      write: true,
      create: true,
      truncate: true,
      mode: 0o600,
    });
    await conn.readable.pipeTo(out.writable);
    await migrated(qmp, deadline);
  } finally {
    qmp.close();
    try {
      listener.close();
    } catch { /* closed */ }
    await Deno.remove(sock).catch(() => {});
  }
}

/** Loads `stateFile` into a clone waiting with `-incoming defer`, then lets it run. */
export async function restoreQemuState(
  vm: VmDescription,
  stateFile: string,
  deadline: number,
): Promise<void> {
  const sock = migrationSocket(vm);
  await Deno.remove(sock).catch(() => {});
  const qmp = await QmpClient.connect(vm.controlSocket, msLeft(deadline));
  try {
    await qmp.execute("migrate-set-capabilities", IGNORE_SHARED);
    await qmp.execute("migrate-incoming", { uri: `unix:${sock}` });
    const conn = await Deno.connect({ transport: "unix", path: sock });
    await (await Deno.open(stateFile)).readable.pipeTo(conn.writable);
    await migrated(qmp, deadline);
    // The template was paused when saved, and a clone starts as its source was.
    await qmp.execute("cont");
    const status = await qmp.status();
    if (status !== "running") throw new InternalError(`The restored VM is ${status}, not running`);
  } finally {
    qmp.close();
    await Deno.remove(sock).catch(() => {});
  }
}

/** `p`, or a DeadlineExceededError at `deadline` (`performance.now()`), after `onLate`. */
async function withDeadline<T>(p: Promise<T>, deadline: number, onLate: () => void): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      onLate();
      reject(new DeadlineExceededError("QEMU did not connect its migration stream in time"));
    }, Math.max(0, deadline - performance.now()));
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** QEMU's version and build (size and time of its binary): a saved state is only QEMU's. */
export async function qemuIdentity(binary: string): Promise<string> {
  const st = await Deno.stat(binary);
  const file = `${binary} ${st.size} ${st.mtime?.getTime()}`;
  // Asked at every pod start: the version is run again only when the binary changed.
  let version = versions.get(file);
  if (version === undefined) {
    const out = await new Deno.Command(binary, {
      args: ["--version"],
      stdout: "piped",
      stderr: "null",
    })
      .output();
    version = new TextDecoder().decode(out.stdout).split("\n")[0];
    versions.set(file, version);
  }
  return `${version} ${st.size} ${st.mtime?.getTime()}`;
}

const versions = new Map<string, string>();
