/**
 * VM templates (`[hypervisor] template = true`): one VM per shape booted to where its agent
 * waits for the host, then saved by the VMM (its RAM stays in a file, the device state goes
 * to another). A pod of that shape starts from the saved state instead of booting: its VM
 * maps the RAM file copy-on-write, so the pages no clone has written are one copy in the
 * host for all of them.
 *
 * A template is `<dir>/<key>/`: `memory` (the RAM), `state` (the device state) and
 * `template.json`, written last (a template without it is unfinished and rebuilt). The key
 * is a hash of everything the saved state depends on: the VMM's build, the VM's argv with its
 * own paths left out (shape, devices, kernel command line) and the kernel and initramfs
 * (path, size, time). Templates of one **lineage** (the same key but for the shape) are kept
 * side by side, up to `shapes` of them; a new lineage (a new guest image, another QEMU, another
 * config) makes the older ones go when its first template is built, and beyond `shapes` the
 * least recently used goes (never a pinned one, the config's shape). Clones running from a
 * removed template keep their mapping.
 *
 * The template never reads anything random that clones must not share: its agent is asked
 * Check only (never the boot id, drawn by the kernel on first read), and each clone is
 * reseeded before anything else (the backend's part).
 *
 * @module
 */
import { join } from "node:path";
import { DeadlineExceededError, FailedPreconditionError } from "../../domain/errors.ts";
import { log } from "../../lib/log.ts";
import type { VmDescription, VmTemplating } from "../../ports/hypervisor.ts";
import { qmpQuit } from "./qmp.ts";
import { runCommand } from "../os/command.ts";

/** A template ready to start clones from. */
export interface VmTemplate {
  readonly key: string;
  readonly memory: string;
  readonly state: string;
  /** Which build of the key it is (its `template.json`'s `built`): a rebuild is another. */
  readonly built?: string;
}

export interface VmTemplatesOptions {
  /** Where templates live (on tmpfs, their RAM files are page cache shared by the clones). */
  readonly dir: string;
  /** The VMM's templating. */
  readonly templating: VmTemplating;
  readonly bootTimeoutMs: number;
  /**
   * Resolves once the agent behind the VM's agent socket has answered the calls every clone
   * makes first, several times (and is let go): the saved agent has then compiled their code,
   * which each clone would otherwise do anew, under emulation slowly.
   */
  readonly agentAnswers: (vm: VmDescription, deadline: number) => Promise<void>;
  /**
   * The argv that runs `argv` without the daemon's descriptors (its runtime leaves some
   * inheritable, its listening socket among them: a template VM outliving a crashed daemon
   * must not keep it).
   */
  readonly withoutDaemonFds: (argv: readonly string[]) => string[];
  /** Who builds here (the sandboxer's state directory): others' templates are left alone. */
  readonly owner: string;
  /** How many templates of one lineage (shapes) are kept; default 1. */
  readonly shapes?: number;
}

/** What makes a template's directory or file unfit: not ours, or writable by others. */
function unsafe(st: Deno.FileInfo, what: string): string | undefined {
  if (st.isSymlink) return `${what} is a symbolic link`;
  if (st.uid !== Deno.uid()) return `${what} is owned by uid ${st.uid}, not the sandboxer's`;
  if ((st.mode ?? 0) & 0o022) return `${what} is writable by others`;
  return undefined;
}

/** Room left in the template directory besides a template's RAM file (others use it too). */
export const FREE_MARGIN_MIB = 64;

/**
 * Free space of the file system holding `dir`, MiB; undefined when `df` cannot tell, or the
 * file system has no size (a tmpfs with `size=0` has no limit).
 */
async function freeMiB(dir: string): Promise<number | undefined> {
  const r = await runCommand(["df", "-Pk", dir], { timeoutMs: 10_000 }).catch(() => undefined);
  const f = r?.stdout.trim().split("\n").at(-1)?.split(/\s+/) ?? [];
  const [total, kib] = [Number(f[1]), Number(f[3])];
  if (r?.code !== 0 || !Number.isFinite(kib) || !(total > 0)) return undefined;
  return Math.floor(kib / 1024);
}

/** Throws when `free` MiB leave no room for a template of `memoryMiB` and the margin. */
function noRoom(dir: string, memoryMiB: number, free: number | undefined): void {
  if (free === undefined || free >= memoryMiB + FREE_MARGIN_MIB) return;
  throw new FailedPreconditionError(
    `no room for a ${memoryMiB} MiB VM template in ${dir}: ${free} MiB free ` +
      `(${FREE_MARGIN_MIB} MiB more are left to others)`,
  );
}

/** The host's available memory, MiB (`MemAvailable`); undefined when unknown. */
async function memAvailableMiB(): Promise<number | undefined> {
  const m = /^MemAvailable:\s+(\d+) kB/m.exec(
    await Deno.readTextFile("/proc/meminfo").catch(() => ""),
  );
  return m ? Math.floor(Number(m[1]) / 1024) : undefined;
}

/** Whether a process maps `file` (a clone's QEMU its template's RAM). */
async function mapped(file: string): Promise<boolean> {
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    const maps = await Deno.readTextFile(`/proc/${e.name}/maps`).catch(() => "");
    if (maps.includes(file)) return true;
  }
  return false;
}

/**
 * Removes the templates sandboxer `owner` built in `dir` (templates are off now: their RAM files
 * would hold tmpfs for nothing; clones running from them keep their mapping). Nothing is
 * touched in a directory that is not the sandboxer's own. Resolves with how many went.
 */
export async function removeOwnTemplates(dir: string, owner: string): Promise<number> {
  const st = await Deno.lstat(dir).catch(() => undefined);
  if (!st?.isDirectory || unsafe(st, dir)) return 0;
  let n = 0;
  for await (const e of Deno.readDir(dir)) {
    if (!/^[0-9a-f]{32}$/.test(e.name)) continue;
    const d = join(dir, e.name);
    if (await Deno.readTextFile(join(d, "owner")).catch(() => undefined) !== owner) continue;
    await Deno.remove(d, { recursive: true }).catch(() => {});
    n++;
  }
  return n;
}

/** The paths of a VM description that are the VM's own, not its shape. */
const OWN_PATHS = [
  "consoleLog",
  "eventLog",
  "controlSocket",
  "agentSocket",
  "debugSocket",
] as const;

/** The fields of a VM description that are its shape. */
const SHAPE = ["vcpus", "memoryMiB", "maxVcpus", "maxMemoryMiB", "memorySlots"] as const;

export class VmTemplates {
  #o: VmTemplatesOptions;
  #log = log.with({ component: "vm-templates" });
  /** Builds under way, by key. */
  #building = new Map<string, Promise<VmTemplate>>();
  /** Their VMs, ended when the daemon stops. */
  #vms = new Set<Deno.ChildProcess>();
  #closed = false;
  /** The key never removed to make room for another shape's (the config's shape's). */
  #pinned: string | undefined;
  /** The builds, one after the other. */
  #queue: Promise<unknown> = Promise.resolve();

  constructor(o: VmTemplatesOptions) {
    this.#o = o;
  }

  /** The key of the template for VMs like `vm` (its paths and id do not count). */
  key(vm: VmDescription): Promise<string> {
    return this.#digest(vm, false);
  }

  /** The key with the shape left out: templates of one lineage are kept side by side. */
  lineage(vm: VmDescription): Promise<string> {
    return this.#digest(vm, true);
  }

  async #digest(vm: VmDescription, shapeless: boolean): Promise<string> {
    const canonical = { ...vm, id: "template", name: "kuasar-template" } as Record<string, unknown>;
    for (const k of OWN_PATHS) if (canonical[k] !== undefined) canonical[k] = `/${k}`;
    if (shapeless) {
      for (const k of SHAPE) if (canonical[k] !== undefined) canonical[k] = 1;
    }
    const t = this.#o.templating;
    const image = await Promise.all([vm.kernel, vm.initrd].map(async (f) => {
      const st = await Deno.stat(f);
      return `${f} ${st.size} ${st.mtime?.getTime()}`;
    }));
    const text = JSON.stringify({
      vmm: await t.identity(),
      argv: t.argv(canonical as unknown as VmDescription, "/memory", "template"),
      image,
      ...shapeless ? { shapeless } : {},
    });
    const h = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
    return Array.from(h.subarray(0, 16), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  /**
   * The template for VMs like `vm` if it is built; undefined if not (yet). A template whose
   * directory or files the sandboxer does not own alone is not used: what is in them runs in
   * every clone.
   */
  async ready(vm: VmDescription): Promise<VmTemplate | undefined> {
    const t = this.#paths(await this.key(vm));
    let built: string;
    try {
      built = JSON.parse(await Deno.readTextFile(join(this.#o.dir, t.key, "template.json"))).built;
    } catch {
      return undefined;
    }
    const d = join(this.#o.dir, t.key);
    const missing = { uid: -1 } as Deno.FileInfo;
    // template_dir itself may be an operator's link; nothing in it may be.
    const checks = [unsafe(await Deno.stat(this.#o.dir).catch(() => missing), "template_dir")];
    for (const f of [d, t.memory, t.state, join(d, "template.json")]) {
      checks.push(unsafe(await Deno.lstat(f).catch(() => missing), f));
    }
    const why = checks.find((c) => c);
    if (why) {
      this.#log.warn("vm template not used: pods boot", { template: t.key, why });
      return undefined;
    }
    // Its last use, in its directory's time: the least recently used goes first, also after
    // a restart.
    const now = new Date();
    await Deno.utime(d, now, now).catch(() => {});
    return { ...t, built };
  }

  /**
   * Builds the template for VMs like `vm` (with the template VM's own sockets) unless it is
   * there; one build per key at a time. A `pinned` one is never removed for another shape's.
   */
  async ensure(vm: VmDescription, pinned = false): Promise<VmTemplate> {
    const key = await this.key(vm);
    if (pinned) this.#pinned = key;
    const ready = await this.ready(vm);
    if (ready) return ready;
    let b = this.#building.get(key);
    if (!b) {
      // One build at a time: each checks the room left after the one before.
      b = this.#queue.then(() => this.#build(key, vm));
      this.#queue = b.catch(() => {});
      this.#building.set(key, b);
      b.finally(() => this.#building.delete(key)).catch(() => {});
    }
    return await b;
  }

  /** Ends the template VMs being built (the daemon stops): they are not pods of anyone. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const vm of this.#vms) {
      try {
        vm.kill("SIGKILL");
      } catch { /* gone */ }
      await vm.status;
    }
  }

  /**
   * Forgets a template that failed to start a clone, so that it is built again: that build of
   * it only (several clones of a broken one fail together, and the first one's rebuild stays).
   */
  async discard(t: VmTemplate): Promise<void> {
    if (this.#building.has(t.key)) return;
    const d = join(this.#o.dir, t.key);
    const built = await Deno.readTextFile(join(d, "template.json"))
      .then((j) => JSON.parse(j).built, () => undefined);
    if (built !== t.built) return;
    await Deno.remove(d, { recursive: true }).catch(() => {});
  }

  /**
   * What becomes of another key's template `d` when one of `lineage` is built: "keep" it
   * (another sandboxer's), "remove" it (this sandboxer's of another lineage or unfinished, or
   * one whose sandboxer is gone, its state directory too, or one without an owner, unfinished
   * or from an older version, that nobody touched for ten minutes), or it is a "shape" of this
   * lineage, kept while there is room.
   */
  async #fate(d: string, lineage: string): Promise<"keep" | "remove" | "shape"> {
    const owner = await Deno.readTextFile(join(d, "owner")).catch(() => undefined);
    if (owner === this.#o.owner) {
      const meta = await Deno.readTextFile(join(d, "template.json"))
        .then((j) => JSON.parse(j), () => undefined);
      return meta?.lineage === lineage ? "shape" : "remove";
    }
    if (owner !== undefined) {
      return await Deno.stat(owner).then(() => "keep", () => "remove");
    }
    const st = await Deno.stat(d).catch(() => undefined);
    return st && Date.now() - (st.mtime?.getTime() ?? 0) > 10 * 60_000 ? "remove" : "keep";
  }

  /**
   * Removes what `#fate` says goes, and of the other shapes of `lineage` the least recently
   * used beyond `shapes`, counting the pinned one and `building` (a key about to be built).
   * Templates being built stay.
   */
  async #sweep(lineage: string, building?: { key: string; memoryMiB: number }): Promise<void> {
    const o = this.#o;
    const reserved = new Set([this.#pinned, building?.key].filter((k) => k !== undefined));
    const shapes: { key: string; used: number }[] = [];
    for await (const e of Deno.readDir(o.dir)) {
      const d = join(o.dir, e.name);
      if (reserved.has(e.name) || this.#building.has(e.name)) continue;
      if (!/^[0-9a-f]{32}$/.test(e.name)) continue;
      const fate = await this.#fate(d, lineage);
      if (fate === "remove") await Deno.remove(d, { recursive: true }).catch(() => {});
      else if (fate === "shape") {
        const st = await Deno.stat(d).catch(() => undefined);
        if (st) shapes.push({ key: e.name, used: st.mtime?.getTime() ?? 0 });
      }
    }
    const room = Math.max(0, (o.shapes ?? 1) - reserved.size);
    shapes.sort((a, b) => a.used - b.used);
    const going = shapes.slice(0, Math.max(0, shapes.length - room));
    if (building) {
      // No template goes for a build that would find no room: a RAM file that a clone still maps
      // frees nothing when it is removed.
      let free = await freeMiB(o.dir);
      for (const { key } of going) {
        const memory = join(o.dir, key, "memory");
        if (free !== undefined && !(await mapped(memory))) {
          free += Math.floor(
            ((await Deno.stat(memory).catch(() => undefined))?.blocks ?? 0) / 2048,
          );
        }
      }
      noRoom(o.dir, building.memoryMiB, free);
    }
    for (const { key } of going) {
      this.#log.info("vm template removed: room for another shape's", { template: key });
      await Deno.remove(join(o.dir, key), { recursive: true }).catch(() => {});
    }
  }

  /**
   * At the sandboxer's start, with `vm` of the config's shape (pinned): this sandboxer's
   * unfinished templates and those of another lineage go, and shapes beyond `shapes` (it may
   * have been lowered).
   */
  async trim(vm: VmDescription): Promise<void> {
    this.#pinned = await this.key(vm);
    if (!(await Deno.stat(this.#o.dir).then((s) => s.isDirectory, () => false))) return;
    if (unsafe(await Deno.stat(this.#o.dir), "template_dir")) return;
    await this.#sweep(await this.lineage(vm));
  }

  #paths(key: string): VmTemplate {
    const d = join(this.#o.dir, key);
    return { key, memory: join(d, "memory"), state: join(d, "state") };
  }

  async #build(key: string, vm: VmDescription): Promise<VmTemplate> {
    const o = this.#o;
    const t0 = performance.now();
    await Deno.mkdir(o.dir, { recursive: true, mode: 0o700 });
    const unfit = unsafe(await Deno.stat(o.dir), `template_dir ${o.dir}`);
    if (unfit) throw new FailedPreconditionError(`${unfit}: no VM template is built there`);
    // Only what is named like a template and is ours goes: the directory may be an operator's,
    // and other sandboxers may keep theirs there.
    const lineage = await this.lineage(vm);
    const available = await memAvailableMiB();
    if (available !== undefined && vm.memoryMiB > available / 4) {
      throw new FailedPreconditionError(
        `a ${vm.memoryMiB} MiB VM template would hold more than a quarter of the host's ` +
          `available memory (${available} MiB): none is built for that shape`,
      );
    }
    await this.#sweep(lineage, { key, memoryMiB: vm.memoryMiB });
    const dir = join(o.dir, key);
    vm = {
      ...vm,
      id: `template-${key}`,
      consoleLog: join(dir, "console.log"),
      eventLog: join(dir, "vmm-events.log"),
    };
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    // Its RAM file is filled whole: a tmpfs filled up would fail others using it.
    noRoom(o.dir, vm.memoryMiB, await freeMiB(o.dir));
    await Deno.mkdir(dir, { mode: 0o700 });
    await Deno.writeTextFile(join(dir, "owner"), o.owner, { mode: 0o600 });
    const t = this.#paths(key);
    for (const f of [vm.controlSocket, vm.agentSocket, vm.debugSocket]) {
      if (f) await Deno.remove(f).catch(() => {});
    }
    const argv = o.withoutDaemonFds(o.templating.argv(vm, t.memory, "template"));
    if (this.#closed) throw new Error("the daemon is stopping");
    const child = new Deno.Command(argv[0], {
      args: argv.slice(1),
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    this.#vms.add(child);
    child.status.finally(() => this.#vms.delete(child));
    const stderr = new Response(child.stderr).text();
    const deadline = t0 + o.bootTimeoutMs;
    try {
      const exited = child.status.then((s) => {
        // QEMU touching RAM its file has no room for (a full tmpfs) dies of SIGBUS.
        const bus = s.signal === "SIGBUS" || s.code === 135
          ? `; SIGBUS: is there room for its ${vm.memoryMiB} MiB RAM file in ${o.dir}?`
          : "";
        throw new Error(`the template VM exited (${s.code}) while booting${bus}`);
      });
      await Promise.race([o.agentAnswers(vm, deadline), exited]);
      exited.catch(() => {});
      const booted = performance.now();
      // The agent's session ends when the host goes: let it get back to waiting for the next.
      await new Promise((r) => setTimeout(r, 200));
      await o.templating.save(vm, t.state, deadline + 30_000);
      await Deno.chmod(t.memory, 0o600);
      await Deno.writeTextFile(
        join(dir, "template.json"),
        JSON.stringify({
          key,
          lineage,
          vcpus: vm.vcpus,
          memoryMiB: vm.memoryMiB,
          bootMs: Math.round(booted - t0),
          saveMs: Math.round(performance.now() - booted),
          stateBytes: (await Deno.stat(t.state)).size,
          built: new Date().toISOString(),
        }) + "\n",
        { mode: 0o600 },
      );
      this.#log.info("vm template built", {
        key,
        dir,
        vcpus: vm.vcpus,
        memoryMiB: vm.memoryMiB,
        ms: Math.round(performance.now() - t0),
      });
      return t;
    } catch (e) {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      const why = (await Promise.race([
        stderr,
        new Promise<string>((r) => setTimeout(r, 500, "")),
      ])).trim();
      this.#log.warn("vm template not built: pods boot", {
        key,
        error: String(e),
        vmm: why.slice(-500),
      });
      throw e instanceof DeadlineExceededError ? e : new Error(`${e}${why ? `: ${why}` : ""}`);
    } finally {
      await qmpQuit(vm.controlSocket);
      const end = await Promise.race([child.status, new Promise((r) => setTimeout(r, 5000))]);
      if (!end) {
        try {
          child.kill("SIGKILL");
        } catch { /* gone */ }
        await child.status;
      }
      for (const f of [vm.controlSocket, vm.agentSocket, vm.debugSocket]) {
        if (f) await Deno.remove(f).catch(() => {});
      }
    }
  }
}
