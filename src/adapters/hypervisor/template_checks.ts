/**
 * `kuasar doctor` on VM templates (`[hypervisor] template = true`): whether the config can have
 * them, whether their directory can hold a template's RAM, and which templates are there.
 *
 * @module
 */
import { join } from "node:path";
import type { NodeCheck } from "../../domain/doctor.ts";
import { messageOf } from "../../domain/errors.ts";
import { existingAncestor } from "../doctor/probes.ts";
import { runCommand } from "../os/command.ts";
import { FREE_MARGIN_MIB } from "./vm_templates.ts";

/** What a template's `template.json` says (`VmTemplates`). */
interface TemplateInfo {
  vcpus?: number;
  memoryMiB?: number;
  bootMs?: number;
  stateBytes?: number;
  built?: string;
}

export interface TemplateCheckOptions {
  /** Why the config cannot have templates (`templateRefusal`), if it cannot. */
  readonly refusal?: string;
  /** Where the templates live. */
  readonly dir: string;
  /** The guest's RAM, the size of a template's RAM file. */
  readonly memoryMiB: number;
  /** The guest image: a template older than either is rebuilt at the next start. */
  readonly image: readonly string[];
  /** How many templates (shapes) the sandboxer keeps there (`template_shapes`). */
  readonly shapes: number;
  /** The sandboxer's state directory and `template_pool`, when it keeps a pool of VMs. */
  readonly pool?: { readonly stateDir: string; readonly size: number };
}

/** The checks of templates; none when they are off. */
export async function templateChecks(o: TemplateCheckOptions): Promise<NodeCheck[]> {
  if (o.refusal) {
    return [{
      id: "template",
      kind: "vmm",
      status: "fail",
      detail: `${o.refusal}; the sandboxer refuses to start`,
      fix:
        'template = false (and no template_pool), or QEMU with template = true, share_fs = "None" ' +
        "and use_vsock = false",
    }];
  }
  return [await spaceCheck(o), await listCheck(o), ...o.pool ? [await poolCheck(o.pool)] : []];
}

/**
 * How many VMs the running sandboxer's pool holds ready: `ready` (its QEMU's pid, running) and
 * not `taken`.
 */
async function poolCheck(pool: { stateDir: string; size: number }): Promise<NodeCheck> {
  let ready = 0;
  try {
    for await (const e of Deno.readDir(pool.stateDir)) {
      if (!/^\.vm-pool-[0-9a-f]{12}$/.test(e.name)) continue;
      const dir = join(pool.stateDir, e.name);
      if (await Deno.stat(join(dir, "taken")).then(() => true, () => false)) continue;
      const pid = Number(await Deno.readTextFile(join(dir, "ready")).catch(() => ""));
      if (pid > 0 && await Deno.stat(`/proc/${pid}`).then(() => true, () => false)) ready++;
    }
  } catch { /* no state directory: no sandboxer ran here */ }
  return {
    id: "template.pool",
    kind: "vmm",
    status: ready ? "ok" : "warn",
    detail: `${ready} of ${pool.size} VMs ready ahead of pods (template_pool)`,
    ...(ready ? {} : {
      fix: "none while the sandboxer is stopped, or builds the template, or makes them (its log " +
        'says "vm pooled" for each); pods restore their own VM meanwhile',
    }),
  };
}

/** Why the directory is unfit for templates (what is in it runs in every clone), if it is. */
function unfit(dir: string): string | undefined {
  let st: Deno.FileInfo;
  try {
    st = Deno.statSync(dir);
  } catch {
    return undefined;
  }
  if (st.uid !== Deno.uid()) return `owned by uid ${st.uid}, not the sandboxer's`;
  if ((st.mode ?? 0) & 0o022) return "writable by others";
  return undefined;
}

/** The file system of the directory: room for one RAM file, and tmpfs for shared pages. */
async function spaceCheck(o: TemplateCheckOptions): Promise<NodeCheck> {
  const id = "template.dir";
  const at = existingAncestor(o.dir);
  try {
    const r = await runCommand(["df", "-PkT", at], { timeoutMs: 10_000 });
    // Filesystem Type 1024-blocks Used Available Capacity Mounted-on
    const f = r.stdout.trim().split("\n").at(-1)?.split(/\s+/) ?? [];
    // A tmpfs with size=0 has no limit (and says 0 of everything).
    const unlimited = Number(f[2]) === 0;
    const freeMiB = unlimited ? Infinity : Math.floor(Number(f[4]) / 1024);
    if (r.code !== 0 || Number.isNaN(freeMiB)) throw new Error(r.stderr.trim() || r.stdout);
    const room = unlimited ? "no size limit" : `${freeMiB} MiB free`;
    const detail = `${o.dir} on ${f[6] ?? "?"} (${f[1] ?? "?"}), ${room}; a ` +
      `template's RAM file takes ${o.memoryMiB} MiB (more for pods with a memory limit), ` +
      `up to ${o.shapes} template${o.shapes > 1 ? "s" : ""} (template_shapes)`;
    const why = unfit(o.dir);
    if (why) {
      return {
        id,
        kind: "vmm",
        status: "fail",
        detail: `${o.dir} is ${why}: no template is built or used there (pods boot)`,
        fix: "a template_dir of its own, owned by the sandboxer's user, mode 0700",
      };
    }
    if (freeMiB < o.memoryMiB + FREE_MARGIN_MIB) {
      return {
        id,
        kind: "vmm",
        status: "fail",
        detail,
        fix: "free space there or set [hypervisor] template_dir: pods boot without a template",
      };
    }
    if (f[1] !== "tmpfs") {
      return {
        id,
        kind: "vmm",
        status: "warn",
        detail: `${detail}; not tmpfs: clones still share its pages, which are also written back`,
        fix: "[hypervisor] template_dir on a tmpfs (e.g. under /run)",
      };
    }
    return { id, kind: "vmm", status: "ok", detail };
  } catch (e) {
    return { id, kind: "vmm", status: "skip", detail: `df ${at}: ${messageOf(e)}` };
  }
}

/** The templates built there, and whether the guest image changed since. */
async function listCheck(o: TemplateCheckOptions): Promise<NodeCheck> {
  const id = "template.built";
  const found: string[] = [];
  let stale = false;
  const imageTime = Math.max(
    ...o.image.map((f) => {
      try {
        return Deno.statSync(f).mtime?.getTime() ?? 0;
      } catch {
        return 0;
      }
    }),
  );
  try {
    for await (const e of Deno.readDir(o.dir)) {
      if (!/^[0-9a-f]{32}$/.test(e.name)) continue;
      let t: TemplateInfo;
      try {
        t = JSON.parse(await Deno.readTextFile(join(o.dir, e.name, "template.json")));
      } catch {
        found.push(`${e.name} (unfinished: being built, or removed at the next start)`);
        continue;
      }
      const old = imageTime > Date.parse(t.built ?? "") || !t.built;
      stale ||= old;
      found.push(
        `${e.name} (${t.vcpus} vCPU, ${t.memoryMiB} MiB, built ${t.built} in ${t.bootMs} ms, ` +
          `device state ${Math.round((t.stateBytes ?? 0) / 1024)} KiB` +
          `${old ? "; older than the guest image: rebuilt when the next pod starts" : ""})`,
      );
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) {
      return { id, kind: "vmm", status: "warn", detail: `${o.dir}: ${messageOf(e)}` };
    }
  }
  if (!found.length) {
    return {
      id,
      kind: "vmm",
      status: "ok",
      detail: `none in ${o.dir} yet: the sandboxer builds the config's at start (pods boot ` +
        "until it is ready)",
    };
  }
  return {
    id,
    kind: "vmm",
    status: stale ? "warn" : "ok",
    detail: `in ${o.dir}: ${found.join("; ")}`,
    ...(stale
      ? {
        fix:
          "nothing: the sandboxer rebuilds it when the next pod starts (running pods keep theirs)",
      }
      : {}),
  };
}
