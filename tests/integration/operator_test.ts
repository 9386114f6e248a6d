/**
 * The README's "Installing on a node", on a staging root: `deno task kuasar
 * install --root R`; a private mount namespace shows R's /usr/local,
 * /etc/containerd and /var/lib/kuasar at the node's paths; there containerd
 * 2.4 starts and imports the installed drop-ins by default, each sandboxer
 * runs its installed unit's ExecStart, `kuasar doctor` finds only this
 * machine's real gaps, and crictl runs a pod of each kind; then `kuasar
 * uninstall --root R` leaves R empty.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { NodeCheck } from "../../src/domain/doctor.ts";
import { KINDS } from "../../src/daemon/kinds.ts";
import { containerdUnavailable, TestContainerd, TOOLS_BIN } from "../support/containerd.ts";
import { removeCgroupParent, type TestDaemon } from "../support/daemon.ts";
import { type E2E, logsOf, runContainer, waitState } from "../support/e2e.ts";
import {
  GVISOR_CRI_CONFIG,
  has,
  runcUnavailable,
  runscUnavailable,
  skipUnless,
  vmUnavailable,
} from "../support/env.ts";
import { WASM_IMAGE } from "../support/images.ts";
import { wasmToolsUnavailable } from "../support/wasm.ts";

const REPO = fileURLToPath(new URL("../..", import.meta.url));
/** What the namespace shows from the staging root. */
const OVERLAID = ["/usr/local", "/etc/containerd", "/var/lib/kuasar"];

/** The commands of the README's "Installing on a node" block, comments dropped. */
async function readmeSteps(): Promise<string[]> {
  const readme = await Deno.readTextFile(join(REPO, "README.md"));
  const section = readme.slice(readme.indexOf("## Installing on a node"));
  const block = section.match(/```sh\n([\s\S]*?)```/)?.[1] ?? "";
  return block.split("\n").map((l) => l.replace(/\s+#.*$/, "").trim()).filter(Boolean);
}

function unavailable(): string | undefined {
  if (!has("unshare") || !has("nsenter")) return "unshare/nsenter (util-linux) are missing";
  for (const dir of OVERLAID) {
    try {
      Deno.statSync(dir);
    } catch {
      return `${dir} does not exist to mount the staging root's over it`;
    }
  }
  for (const k of KINDS) {
    try {
      Deno.lstatSync(k.defaultListen);
      return `${k.defaultListen} exists: a sandboxer of this node may be running`;
    } catch { /* free */ }
  }
  return runcUnavailable() ?? containerdUnavailable();
}

async function run(
  argv: string[],
  cwd = REPO,
): Promise<{ code: number; out: string; stdout: string }> {
  const r = await new Deno.Command(argv[0], { args: argv.slice(1), cwd, stdin: "null" }).output();
  const td = new TextDecoder();
  const stdout = td.decode(r.stdout);
  return { code: r.code, out: stdout + td.decode(r.stderr), stdout };
}

async function mountNs(pid: number): Promise<string> {
  return await Deno.readLink(`/proc/${pid}/ns/mnt`);
}

/** Pids whose mount namespace is `ns`. */
async function processesIn(ns: string): Promise<number[]> {
  const pids: number[] = [];
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    if (await Deno.readLink(`/proc/${e.name}/ns/mnt`).catch(() => "") === ns) {
      pids.push(Number(e.name));
    }
  }
  return pids;
}

async function until(probe: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** The kinds this machine can run a pod of, each with a container and what its log shows. */
function podsHere(): { kind: string; image?: string; command: string[]; log: RegExp }[] {
  const pods = [];
  pods.push({
    kind: "runc",
    command: ["sh", "-c", "echo hello from runc"],
    log: /hello from runc/,
  });
  if (!wasmToolsUnavailable()) {
    pods.push({ kind: "wasm", image: WASM_IMAGE, command: [], log: /arg\[0\]=\/app.wasm/ });
  }
  if (!runscUnavailable()) {
    pods.push({ kind: "gvisor", command: ["sh", "-c", "echo hello from gvisor"], log: /gvisor/ });
  }
  if (!vmUnavailable()) {
    pods.push({ kind: "vmm", command: ["sh", "-c", "echo hello from a vm"], log: /from a vm/ });
  }
  return pods;
}

Deno.test({
  name: "operator path: install on a staging root, containerd 2.4, a pod of each kind, uninstall",
  ...skipUnless(unavailable(), "the operator path"),
  async fn() {
    const steps = await readmeSteps();
    const installStep = steps.find((s) => / task kuasar install$/.test(s));
    assert.ok(installStep, `the README installs with "deno task kuasar install": ${steps}`);
    assert.ok(steps.includes("sudo kuasar uninstall"));
    assert.ok(steps.some((s) => s === "sudo kuasar doctor"));

    const root = await Deno.makeTempDir({ prefix: "k-root-" });
    const logs = await Deno.makeTempDir({ prefix: "k-logs-" });
    const cgroupParent = `/kuasar-it/${root.slice(root.lastIndexOf("/") + 1)}`;
    const stateDirs = KINDS.map((k) => k.defaultDir).filter((d) => {
      try {
        Deno.statSync(d);
        return false;
      } catch {
        return true;
      }
    });
    const pods = podsHere();
    let holder: Deno.ChildProcess | undefined;
    let ctd: TestContainerd | undefined;
    const sandboxers: Deno.ChildProcess[] = [];
    try {
      // 1. install, as the README says, into the staging root
      const inst = await run([Deno.execPath(), "task", "kuasar", "install", "--root", root]);
      assert.equal(inst.code, 0, inst.out);
      const again = await run([Deno.execPath(), "task", "kuasar", "install", "--root", root]);
      assert.equal(again.code, 0, again.out);
      assert.doesNotMatch(again.out, /^installed /m, "a second install changes nothing");

      // The operator's one edit: gVisor as this machine's runsc needs it (see GVISOR_CRI_CONFIG).
      const gvisorConfig = join(root, "var/lib/kuasar/config_gvisor.toml");
      await Deno.writeTextFile(gvisorConfig, GVISOR_CRI_CONFIG.replace("[gvisor]\n", ""), {
        append: true,
      });

      // 2. a mount namespace where the staging root is the node
      holder = new Deno.Command("unshare", {
        args: ["--mount", "--propagation", "private", "--", "sleep", "infinity"],
        stdin: "null",
      }).spawn();
      const self = await mountNs(Deno.pid);
      await until(async () => await mountNs(holder!.pid).catch(() => self) !== self, 10_000, "ns");
      const ns = ["nsenter", "-t", String(holder.pid), "-m", "--"];
      for (const dir of OVERLAID) {
        const m = await run([...ns, "mount", "--bind", join(root, dir), dir]);
        assert.equal(m.code, 0, m.out);
      }

      // 3. containerd 2.4 whose config imports /etc/containerd/conf.d, as `containerd config
      // default` writes it: no kuasar line of its own
      ctd = await TestContainerd.start({ exec: ns, imports: ["/etc/containerd/conf.d/*.toml"] });

      // 4. each sandboxer as its unit runs it (events to this containerd, not the node's)
      for (const { kind } of pods) {
        const unit = await Deno.readTextFile(
          join(root, "etc/systemd/system", `kuasar-${kind}.service`),
        );
        const execStart = unit.match(/^ExecStart=(.*)$/m)![1].split(" ");
        const child = new Deno.Command(ns[0], {
          args: [...ns.slice(1), ...execStart, "--containerd-address", ctd.ttrpcAddress],
          stdin: "null",
          stdout: "piped",
          stderr: "piped",
        }).spawn();
        sandboxers.push(child);
        for (const [stream, name] of [[child.stdout, "out"], [child.stderr, "err"]] as const) {
          const f = await Deno.open(join(logs, `${kind}.${name}`), { write: true, create: true });
          stream.pipeTo(f.writable).catch(() => {});
        }
        const listen = KINDS.find((k) => k.name === kind)!.defaultListen;
        await until(
          () => Deno.lstat(listen).then((s) => s.isSocket === true, () => false),
          60_000,
          `${kind} sandboxer listening`,
        );
      }

      // 5. kuasar doctor from the installed executable: only this machine's gaps fail
      const doc = await run([
        ...ns,
        "/usr/local/bin/kuasar",
        "doctor",
        "--json",
        "--containerd",
        join(TOOLS_BIN, "containerd"),
        "--containerd-config",
        ctd.configPath,
      ]);
      const checks = JSON.parse(doc.stdout).checks as NodeCheck[];
      for (const { kind } of pods) {
        const of = (id: string) =>
          checks.filter((c) => c.kind === kind && c.id === id).map((c) => c.status);
        assert.deepEqual(of("engine"), ["ok"], `${kind} engine`);
        assert.deepEqual(of("socket"), ["ok"], `${kind} socket`);
        assert.deepEqual(of("containerd.proxy-plugin"), ["ok"], `${kind}: ${doc.out}`);
        assert.deepEqual(of("containerd.handler"), ["ok", "ok"], `${kind}: ${doc.out}`);
      }
      const failed = checks.filter((c) => c.status === "fail").map((c) => `${c.kind}:${c.id}`);
      assert.ok(
        failed.every((f) => f === "vmm:kvm" || !pods.some((p) => f.startsWith(p.kind))),
        doc.out,
      );

      // 6. a pod of each kind through crictl, with the handlers the drop-ins define
      const e = {
        ctd,
        d: { cgroupParent, logs: () => Promise.resolve("") } as unknown as TestDaemon,
      } as E2E;
      for (const p of pods) {
        const { cid } = await runContainer(e, `kuasar-${p.kind}`, p.command, { image: p.image });
        assert.deepEqual(await waitState(e, cid, "CONTAINER_EXITED", 180_000), {
          state: "CONTAINER_EXITED",
          exitCode: 0,
        }, p.kind);
        assert.match(await logsOf(e, cid, p.log), p.log);
      }
      const rm = await ctd.crictl(["rmp", "--all", "--force"], { timeoutMs: 120_000 });
      assert.equal(rm.code, 0, rm.stderr);

      // 7. the sandboxers stop (systemctl stop); nothing of a pod is left in the namespace
      for (const s of sandboxers) {
        s.kill("SIGTERM");
        assert.equal((await s.status).code, 0);
      }
      const mounts = await Deno.readTextFile(`/proc/${holder.pid}/mountinfo`);
      assert.deepEqual(
        mounts.split("\n").map((l) => l.split(" ")[4]).filter((m) =>
          m && KINDS.some((k) => m.startsWith(`${k.defaultDir}/`)) && !/null-netns$/.test(m)
        ),
        [],
      );

      // 8. uninstall, as the README says: the staging root is empty again but for the config the
      // operator edited
      const un = await run([join(root, "usr/local/bin/kuasar"), "uninstall", "--root", root]);
      assert.equal(un.code, 0, un.out);
      assert.match(un.out, /kept .*config_gvisor\.toml: changed since install/);
      await Deno.remove(gvisorConfig);
      for (const d of ["var/lib/kuasar", "var/lib", "var"]) await Deno.remove(join(root, d));
      assert.deepEqual([...Deno.readDirSync(root)].map((e) => e.name), []);
    } catch (err) {
      for await (const f of Deno.readDir(logs)) {
        const text = await Deno.readTextFile(join(logs, f.name));
        console.error(`--- ${f.name} ---\n${text.split("\n").slice(-40).join("\n")}`);
      }
      if (ctd) console.error((await ctd.logs()).split("\n").slice(-40).join("\n"));
      throw err;
    } finally {
      // Pods go while their sandboxers still answer (after a failure half-way).
      await ctd?.crictl(["rmp", "--all", "--force"], { timeoutMs: 120_000 }).catch(() => {});
      for (const s of sandboxers) {
        try {
          s.kill("SIGKILL");
        } catch { /* exited */ }
        await s.status;
      }
      await ctd?.cleanup();
      if (holder) {
        // What outlives a sandboxer by design (relays, the Wasm host), and the namespace itself.
        const ns = await mountNs(holder.pid).catch(() => "");
        for (const pid of ns ? await processesIn(ns) : []) {
          try {
            Deno.kill(pid, "SIGKILL");
          } catch { /* gone */ }
        }
        await holder.status;
      }
      for (const k of KINDS) await Deno.remove(k.defaultListen).catch(() => {});
      for (const d of stateDirs) await Deno.remove(d, { recursive: true }).catch(() => {});
      await removeCgroupParent(cgroupParent).catch(() => {});
      await Deno.remove(root, { recursive: true }).catch(() => {});
      await Deno.remove(logs, { recursive: true }).catch(() => {});
    }
  },
});
