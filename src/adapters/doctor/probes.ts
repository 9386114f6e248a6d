/**
 * What `kuasar doctor` looks at on a node, each probe turned into a finding:
 * tools and their versions, KVM (by running a vCPU, not by opening
 * /dev/kvm), vhost-vsock, files, cgroup controllers, free space, mount
 * options and the sandboxer's socket. Probes only read (and run tools with
 * their version flags); nothing is changed on the node.
 *
 * @module
 */
import { connect } from "node:net";
import { dirname } from "node:path";
import type { CheckStatus, NodeCheck } from "../../domain/doctor.ts";
import { messageOf } from "../../domain/errors.ts";
import { runCommand } from "../os/command.ts";
import { findExecutable } from "../os/executables.ts";

/** A tool found and the first line of its version output, or why not. */
export async function toolVersion(
  name: string,
  args: readonly string[],
): Promise<{ path: string; line: string } | { why: string }> {
  const path = findExecutable(name);
  if (!path) return { why: `"${name}" is not an executable on PATH or at that path` };
  try {
    const r = await runCommand([path, ...args], { timeoutMs: 10_000 });
    const line = (r.stdout || r.stderr).trim().split("\n")[0] ?? "";
    if (r.code !== 0) return { why: `${path} ${args.join(" ")} exited ${r.code}: ${line}` };
    return { path, line };
  } catch (e) {
    return { why: messageOf(e) };
  }
}

/** The engine binary a kind cannot work without: found and runs, or fail with `fix`. */
export async function requiredTool(
  kind: string,
  id: string,
  name: string,
  args: readonly string[],
  fix: string,
): Promise<NodeCheck> {
  const v = await toolVersion(name, args);
  return "why" in v
    ? { id, kind, status: "fail", detail: v.why, fix }
    : { id, kind, status: "ok", detail: `${v.path}: ${v.line}` };
}

/** A file the kind reads (a guest kernel, an initramfs). */
export function requiredFile(kind: string, id: string, path: string, fix: string): NodeCheck {
  try {
    if (Deno.statSync(path).isFile) return { id, kind, status: "ok", detail: path };
    return { id, kind, status: "fail", detail: `${path} is not a file`, fix };
  } catch (e) {
    return { id, kind, status: "fail", detail: `${path}: ${messageOf(e)}`, fix };
  }
}

/**
 * Whether KVM runs guests here: the helper runs a one-instruction guest
 * (`kuasar-helper probe-kvm`), and the CPU must show vmx/svm. Both, because
 * a host that is itself a VM without nested virtualization may still let a
 * real-mode vCPU run (this project's CI machines do) while real guests hang
 * once they leave real mode.
 */
export async function kvmUsable(
  helper: string,
  cpuinfo?: string,
): Promise<{ usable: boolean; detail: string }> {
  let probe: string;
  try {
    const r = await runCommand([helper, "probe-kvm"], { timeoutMs: 10_000 });
    probe = (r.stdout || r.stderr).trim();
    if (r.code !== 0) return { usable: false, detail: probe.replace(/^fail /, "") };
  } catch (e) {
    return { usable: false, detail: `kuasar-helper probe-kvm: ${messageOf(e)}` };
  }
  const info = cpuinfo ?? await Deno.readTextFile("/proc/cpuinfo").catch(() => "");
  if (!cpuHasVirtualization(info)) {
    return {
      usable: false,
      detail: "/dev/kvm runs a real-mode test vCPU, but the CPU shows no vmx/svm flag: " +
        "this host is a VM without nested virtualization, and guests hang after real mode",
    };
  }
  return { usable: true, detail: probe.replace(/^ok /, "") };
}

/** The `kvm` finding of a kind: ok, or `unusable` (its status, what it means, what to do). */
export async function kvmCheck(
  kind: string,
  helper: string,
  unusable: { status: CheckStatus; detail: (why: string) => string; fix: string },
): Promise<NodeCheck> {
  const k = await kvmUsable(helper);
  return k.usable ? { id: "kvm", kind, status: "ok", detail: k.detail } : {
    id: "kvm",
    kind,
    status: unusable.status,
    detail: unusable.detail(k.detail),
    fix: unusable.fix,
  };
}

/** Whether /proc/cpuinfo shows hardware virtualization (Intel VMX, AMD SVM). */
export function cpuHasVirtualization(cpuinfo: string): boolean {
  return /^flags\s*:.*\b(vmx|svm)\b/m.test(cpuinfo);
}

/** Whether QEMU can give a guest a vhost-vsock device. */
export function vhostVsockPresent(): boolean {
  try {
    Deno.openSync("/dev/vhost-vsock", { read: true, write: true }).close();
    return true;
  } catch {
    return false;
  }
}

/** Controllers a sandbox kind's pods need, and ones whose absence only limits them. */
const REQUIRED_CONTROLLERS = ["cpu", "memory", "pids"];
const USEFUL_CONTROLLERS = ["cpuset", "hugetlb"];
const USEFUL_V1 = ["cpuacct", "blkio", "devices", "freezer"];

/** cgroup version and controllers, from /proc/self/mountinfo and the cgroup files. */
export async function cgroupCheck(
  mountinfo?: string,
  readFile: (path: string) => Promise<string> = Deno.readTextFile,
): Promise<NodeCheck> {
  const mounts = (mountinfo ?? await readFile("/proc/self/mountinfo")).split("\n")
    .map((l) => l.split(" - "))
    .filter((p) => p.length === 2)
    .map(([pre, post]) => ({ point: pre.split(" ")[4], fstype: post.split(" ")[0], super: post }));
  const v2 = mounts.find((m) => m.fstype === "cgroup2" && m.point === "/sys/fs/cgroup");
  const id = "cgroups";
  if (v2) {
    const controllers = (await readFile("/sys/fs/cgroup/cgroup.controllers").catch(() => ""))
      .trim().split(/\s+/).filter(Boolean);
    const missing = REQUIRED_CONTROLLERS.filter((c) => !controllers.includes(c));
    const absent = [...USEFUL_CONTROLLERS, "io"].filter((c) => !controllers.includes(c));
    return controllerFinding(id, "cgroup v2 (unified)", controllers, missing, absent);
  }
  const v1 = new Set<string>();
  for (const m of mounts.filter((m) => m.fstype === "cgroup")) {
    for (const opt of m.super.split(" ")[2]?.split(",") ?? []) v1.add(opt);
  }
  // Hybrid: controllers bound to the cgroup2 mount beside v1 (hugetlb on some hosts).
  const unified = mounts.find((m) => m.fstype === "cgroup2");
  if (unified) {
    const text = await readFile(`${unified.point}/cgroup.controllers`).catch(() => "");
    for (const c of text.trim().split(/\s+/).filter(Boolean)) v1.add(c);
  }
  if (!v1.size) {
    return {
      id,
      status: "fail",
      detail: "no cgroup hierarchy is mounted",
      fix: "mount cgroup2 on /sys/fs/cgroup (or the v1 controllers under it)",
    };
  }
  const controllers = [...REQUIRED_CONTROLLERS, ...USEFUL_CONTROLLERS, ...USEFUL_V1]
    .filter((c) => v1.has(c));
  return controllerFinding(
    id,
    unified ? `cgroup v1 (hybrid: cgroup2 at ${unified.point})` : "cgroup v1",
    controllers,
    REQUIRED_CONTROLLERS.filter((c) => !v1.has(c)),
    [...USEFUL_CONTROLLERS, ...USEFUL_V1].filter((c) => !v1.has(c)),
  );
}

function controllerFinding(
  id: string,
  what: string,
  controllers: readonly string[],
  missing: readonly string[],
  absent: readonly string[],
): NodeCheck {
  const detail = `${what}: ${controllers.join(", ") || "no controllers"}`;
  if (missing.length) {
    return {
      id,
      status: "fail",
      detail: `${detail}; missing ${missing.join(", ")}`,
      fix: `enable the ${missing.join(", ")} controller(s) (kernel command line, ` +
        "or cgroup.subtree_control of the parent on cgroup v2)",
    };
  }
  if (absent.length) {
    return {
      id,
      status: "warn",
      detail: `${detail}; without ${absent.join(", ")}`,
      fix: `enable ${absent.join(", ")}: pods' limits and statistics of ${
        absent.length > 1 ? "those" : "that"
      } kind are not applied without it`,
    };
  }
  return { id, status: "ok", detail };
}

/** The nearest existing directory of `path` (itself when it exists). */
export function existingAncestor(path: string): string {
  let p = path;
  for (;;) {
    try {
      if (Deno.statSync(p).isDirectory) return p;
    } catch { /* go up */ }
    const up = dirname(p);
    if (up === p) return p;
    p = up;
  }
}

/** Below this much free space under --dir pods fail to start; below twice it, a warning. */
const MIN_FREE_MIB = 64;

/** Free space of the file system --dir is on (`df -Pk`: statfs is not in Deno). */
export async function freeSpaceCheck(kind: string, dir: string): Promise<NodeCheck> {
  const at = existingAncestor(dir);
  const id = "state-dir.space";
  try {
    const r = await runCommand(["df", "-Pk", at], { timeoutMs: 10_000 });
    const fields = r.stdout.trim().split("\n").at(-1)?.split(/\s+/) ?? [];
    const freeKiB = Number(fields[3]);
    if (r.code !== 0 || !Number.isFinite(freeKiB)) throw new Error(r.stderr.trim() || r.stdout);
    const mib = Math.floor(freeKiB / 1024);
    const detail = `${dir}${at === dir ? "" : ` (not created yet; ${at})`}: ${mib} MiB free on ` +
      `${fields[5] ?? "?"}`;
    let status: CheckStatus = "ok";
    if (mib < MIN_FREE_MIB) status = "fail";
    else if (mib < 2 * MIN_FREE_MIB) status = "warn";
    return status === "ok" ? { id, kind, status, detail } : {
      id,
      kind,
      status,
      detail,
      fix: `free space on ${fields[5] ?? at} or choose another --dir`,
    };
  } catch (e) {
    return { id, kind, status: "skip", detail: `df ${at}: ${messageOf(e)}` };
  }
}

/** Mount options of the file system `path` is on (longest mount point prefix). */
export async function mountOptionsOf(path: string, mountinfo?: string): Promise<string[]> {
  const text = mountinfo ?? await Deno.readTextFile("/proc/self/mountinfo");
  let best = { point: "", options: [] as string[] };
  for (const line of text.split("\n")) {
    const f = line.split(" ");
    const point = f[4]?.replace(/\\040/g, " ");
    if (!point) continue;
    const under = point === "/" || path === point || path.startsWith(`${point}/`);
    if (under && point.length >= best.point.length) best = { point, options: f[5].split(",") };
  }
  return best.options;
}

/** The helper directory must allow execution: containerd and the sandboxer run binaries there. */
export async function helperDirCheck(kind: string, helperDir: string): Promise<NodeCheck> {
  // Through its symlinks: the mount the files land on is the one that counts.
  const at = await Deno.realPath(existingAncestor(helperDir)).catch(() =>
    existingAncestor(helperDir)
  );
  const id = "helper-dir";
  const options = await mountOptionsOf(at).catch((): string[] => []);
  if (options.includes("noexec")) {
    return {
      id,
      kind,
      status: "fail",
      detail: `${helperDir} is on a noexec mount`,
      fix: "set [sandbox] helper_dir (or --helper-dir) to a directory that allows execution",
    };
  }
  return { id, kind, status: "ok", detail: `${helperDir} allows execution` };
}

/** The sandboxer's Controller socket: served, private (0600), or absent. */
export async function socketCheck(kind: string, listen: string): Promise<NodeCheck> {
  const id = "socket";
  let st: Deno.FileInfo;
  try {
    st = Deno.lstatSync(listen);
  } catch {
    return {
      id,
      kind,
      status: "warn",
      detail: `no sandboxer listens on ${listen}`,
      fix: `start it: systemctl start kuasar-${kind} (or kuasar ${kind} --listen ${listen})`,
    };
  }
  if (!st.isSocket) {
    return {
      id,
      kind,
      status: "fail",
      detail: `${listen} exists and is not a socket`,
      fix: `remove ${listen} or choose another --listen`,
    };
  }
  const mode = (st.mode ?? 0) & 0o777;
  const modeText = `0${mode.toString(8)}`;
  const served = await new Promise<boolean>((resolve) => {
    const s = connect(listen);
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
  if (!served) {
    return {
      id,
      kind,
      status: "warn",
      detail: `${listen} is a stale socket: nothing accepts on it`,
      fix: `start the sandboxer: systemctl start kuasar-${kind}`,
    };
  }
  if (mode & 0o077 || st.uid !== 0) {
    return {
      id,
      kind,
      status: "fail",
      detail: `${listen} is served with mode ${modeText}, owner uid ${st.uid}`,
      fix:
        "only root may reach a sandboxer: chmod 0600 and chown root (the sandboxer creates it so)",
    };
  }
  return { id, kind, status: "ok", detail: `a sandboxer serves ${listen} (mode ${modeText})` };
}

/** systemd as the init system, for what drives cgroups through it. */
export function systemdCheck(kind: string, why: string): NodeCheck {
  try {
    if (Deno.statSync("/run/systemd/system").isDirectory) {
      return { id: "systemd", kind, status: "ok", detail: `systemd runs this node (${why})` };
    }
  } catch { /* below */ }
  return {
    id: "systemd",
    kind,
    status: "fail",
    detail: `${why}, but systemd is not the init system here`,
    fix: "use the cgroupfs driver (remove the setting)",
  };
}
