/**
 * iSulad's exact call sequence against the runC, Wasm and vmm sandboxers
 * (tests/support/isulad.ts replays it): a pod with a container's output
 * through FIFOs, its exit code and Stats read as lib-shim-v2 reads them;
 * exec with FIFOs and with a tty, ended by the Update that withdraws it; an
 * engine restart in the middle (every connection dropped, pods and
 * containers found live again); a pod removed while a container runs,
 * leaving nothing behind. For Quark (no binary here) the Controller half of
 * the sequence runs against its contract fake.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import * as cgroup1 from "../../src/gen/cgroups/cgroup1/stats/metrics.ts";
import { Code } from "../../src/domain/errors.ts";
import { mkfifo, readFifo, startVmmDaemon, TestDaemon, withDaemon } from "../support/daemon.ts";
import { runcUnavailable, skipUnless, vmUnavailable } from "../support/env.ts";
import { type ContainerSpec, IsuladClient, type IsuladPod, type Stdio } from "../support/isulad.ts";
import { leftovers } from "../support/leaks.ts";
import { processSpec, writeBundle } from "../support/oci.ts";
import { buildWasmModules, wasmToolsUnavailable } from "../support/wasm.ts";

const RUNNING = 2;

/** What differs between the kinds under the same sequence. */
interface Kind {
  readonly name: string;
  readonly unavailable: string | undefined;
  start(): Promise<TestDaemon>;
  /** A container that writes to stdout and stderr and exits with `exit.status`. */
  printer(d: TestDaemon, pod: IsuladPod, stdio: Stdio): Promise<ContainerSpec>;
  readonly printed: { status: number; out: RegExp; err: string };
  /** A container that runs until killed; `polite` ones end on SIGTERM. */
  runner(d: TestDaemon, pod: IsuladPod, polite: boolean): Promise<ContainerSpec>;
  /** Exit status of an impolite runner after the stop sequence. */
  readonly stoppedStatus: number;
  /** Exec and Stats are UNIMPLEMENTED (Wasm), with this message. */
  readonly noExec?: RegExp;
}

function ociSpec(d: TestDaemon, pod: IsuladPod, args: string[]) {
  return ociSpecFor(d, pod.id, args, pod.pid);
}

async function ociSpecFor(d: TestDaemon, podId: string, args: string[], podPid = 0) {
  const dir = await Deno.makeTempDir({ dir: d.base, prefix: "spec-" });
  await writeBundle(dir, "", {
    args,
    sandboxPid: podPid,
    sandboxId: podId,
    cgroupParent: d.cgroupParent,
  });
  const spec = JSON.parse(await Deno.readTextFile(join(dir, "config.json")));
  await Deno.remove(dir, { recursive: true });
  // iSulad names each container's cgroup after it; the id is not known yet, so the spec's is unique.
  spec.linux.cgroupsPath = `${d.cgroupParent}/${crypto.randomUUID()}`;
  return spec;
}

const native = (name: string, unavailable: string | undefined, start: () => Promise<TestDaemon>) =>
  ({
    name,
    unavailable,
    start,
    printer: async (d, pod, stdio) => ({
      spec: await ociSpec(d, pod, ["sh", "-c", "echo out-line; echo err-line >&2; exit 3"]),
      stdio,
    }),
    printed: { status: 3, out: /^out-line\n$/, err: "err-line\n" },
    runner: async (d, pod, polite) => ({
      spec: await ociSpec(
        d,
        pod,
        // PID 1 ignores SIGTERM without a handler: the stop sequence must SIGKILL it.
        polite ? ["sh", "-c", "trap 'exit 0' TERM; sleep 1000 & wait"] : ["sleep", "1000"],
      ),
    }),
    stoppedStatus: 137,
  }) satisfies Kind;

/** The Wasm kind's images: a layer with the module as /app.wasm. */
async function wasmImage(d: TestDaemon, module: string): Promise<string> {
  const dir = join(d.base, "images", module);
  await Deno.mkdir(join(dir, "etc"), { recursive: true });
  const modules = await buildWasmModules();
  await Deno.copyFile(modules[module as keyof typeof modules], join(dir, "app.wasm"));
  return dir;
}

function wasmSpec(pod: IsuladPod, args: string[]) {
  return {
    ociVersion: "1.1.0",
    process: { args: ["/app.wasm", ...args], env: ["PATH=/"], cwd: "/", user: { uid: 0, gid: 0 } },
    mounts: [{ destination: "/proc", type: "proc", source: "proc", options: ["nosuid"] }],
    annotations: {
      "io.kubernetes.cri.container-type": "container",
      "io.kubernetes.cri.sandbox-id": pod.id,
    },
    linux: { resources: {}, namespaces: [{ type: "pid" }, { type: "mount" }] },
  };
}

const KINDS: Kind[] = [
  native("runc", runcUnavailable(), () => TestDaemon.start()),
  {
    name: "wasm",
    unavailable: Deno.uid() !== 0 ? "needs root (overlay mounts)" : wasmToolsUnavailable(),
    start: () => TestDaemon.start({ kind: "wasm" }),
    printer: async (d, pod, stdio) => ({
      spec: wasmSpec(pod, ["fail"]),
      image: await wasmImage(d, "echo"),
      stdio,
    }),
    printed: { status: 7, out: /^arg\[0\]=\/app\.wasm\narg\[1\]=fail\n$/, err: "to stderr\n" },
    runner: async (d, pod) => ({ spec: wasmSpec(pod, []), image: await wasmImage(d, "loop") }),
    stoppedStatus: 143,
    noExec: /not (supported|available)|Wasm/i,
  },
  native(
    "vmm",
    Deno.uid() !== 0 ? "needs root" : runcUnavailable() ?? vmUnavailable(),
    () => startVmmDaemon(),
  ),
];

/** FIFOs made and read as iSulad's console does; `text` resolves at EOF. */
async function fifos(d: TestDaemon, ...names: string[]) {
  const tag = crypto.randomUUID().slice(0, 8);
  const paths = names.map((n) => join(d.base, `${n}-${tag}`));
  for (const p of paths) await mkfifo(p);
  return { paths, texts: paths.map((p) => readFifo(p).text) };
}

/** True if `p` has not settled within `ms`. */
async function pending(p: Promise<unknown>, ms = 300): Promise<boolean> {
  return await Promise.race([
    p.then(() => false),
    new Promise<boolean>((r) => setTimeout(() => r(true), ms)),
  ]);
}

async function withNetns(fn: (path: string) => Promise<void>): Promise<void> {
  const name = `kuasar-isulad-${crypto.randomUUID().slice(0, 8)}`;
  const add = await new Deno.Command("ip", { args: ["netns", "add", name] }).output();
  assert.ok(add.success, "ip netns add");
  try {
    await fn(`/var/run/netns/${name}`);
  } finally {
    await new Deno.Command("ip", { args: ["netns", "delete", name] }).output();
  }
}

for (const kind of KINDS) {
  Deno.test({
    name: `isulad/${kind.name}: iSulad's call sequence: output, exit codes, stats, exec, ` +
      `engine restart, pod removed with a running container`,
    ...skipUnless(kind.unavailable, `iSulad replay on ${kind.name}`),
    fn: (t) =>
      withNetns(async (netns) => {
        const d = await kind.start();
        const isulad = new IsuladClient(d);
        try {
          const pod = await isulad.runPod({ netnsPath: netns });
          assert.ok(pod.pid > 0 && pod.address, "Start gives the pid and the task address");
          assert.ok(await pending(pod.wait), "the pod's Wait stays open while it runs");

          const runner = await isulad.createContainer(pod, await kind.runner(d, pod, false));
          await isulad.startContainer(runner);

          await t.step(
            "a container's output through FIFOs, its exit code, Stats as v1",
            async () => {
              const io = await fifos(d, "out", "err");
              const c = await isulad.createContainer(
                pod,
                await kind.printer(d, pod, { stdout: io.paths[0], stderr: io.paths[1] }),
              );
              await isulad.startContainer(c);
              assert.deepEqual(await c.exit, { kind: "exit", status: kind.printed.status });
              const [out, err] = await Promise.all(io.texts);
              assert.match(out, kind.printed.out);
              assert.equal(err, kind.printed.err);
              assert.deepEqual(await isulad.removeContainer(c), {
                exitStatus: kind.printed.status,
              });

              assert.deepEqual(await isulad.state(runner), { status: RUNNING });
              if (kind.noExec) {
                await assert.rejects(isulad.stats(runner), { code: Code.UNIMPLEMENTED });
                return;
              }
              // lib-shim-v2 decodes the value as cgroup v1 Metrics whatever the type URL says.
              const stats = await isulad.stats(runner);
              assert.equal(stats?.typeUrl, "io.containerd.cgroups.v1.Metrics");
              const m = cgroup1.Metrics.decode(stats!.value);
              assert.ok(m.memory!.usage!.usage > 0n, "memory usage");
              assert.ok(m.pids!.current >= 1n, `pids ${m.pids?.current}`);
            },
          );

          await t.step("exec through FIFOs and with a tty; withdrawn by Update", async () => {
            const io = await fifos(d, "eout", "eerr");
            const piped = processSpec(["sh", "-c", "echo exec-out; echo exec-err >&2; exit 5"]);
            if (kind.noExec) {
              await assert.rejects(
                isulad.exec(runner, piped, { stdout: io.paths[0] }),
                (e: { code?: number; message?: string }) =>
                  e.code === Code.UNIMPLEMENTED && kind.noExec!.test(e.message ?? ""),
              );
              // Nobody opens the FIFOs' write ends: end the readers.
              for (const p of io.paths) (await Deno.open(p, { write: true })).close();
              await Promise.all(io.texts);
              assert.deepEqual(await isulad.state(runner), { status: RUNNING });
              return;
            }
            const e1 = await isulad.exec(runner, piped, {
              stdout: io.paths[0],
              stderr: io.paths[1],
            });
            assert.equal(e1.status, 5);
            assert.deepEqual(await Promise.all(io.texts), ["exec-out\n", "exec-err\n"]);
            assert.deepEqual(await isulad.state(runner, e1.execId), { code: Code.NOT_FOUND });

            const tty = await fifos(d, "tty");
            const e2 = await isulad.exec(
              runner,
              processSpec(["sh", "-c", "tty; exit 6"], true),
              { stdout: tty.paths[0] },
            );
            assert.equal(e2.status, 6);
            assert.match(await tty.texts[0], /\/dev\/pts\/\d+/);
            assert.deepEqual(await isulad.state(runner, e2.execId), { code: Code.NOT_FOUND });
            assert.deepEqual(await isulad.state(runner), { status: RUNNING });
          });

          await t.step(
            "engine restart: pods and containers found live on new connections",
            async () => {
              const before = runner.exit;
              const r = await isulad.restart();
              assert.deepEqual(await before, { kind: "abandoned" }, "the old run's wait went");
              assert.deepEqual(r.status, { [pod.id]: "SANDBOX_READY" });
              assert.deepEqual(r.state, { [runner.id]: { status: RUNNING } });
              assert.deepEqual(r.probe, { [runner.id]: Code.OK }, "Kill(0) of a live container");
              assert.ok(await pending(pod.wait), "the pod's new Wait stays open");
              assert.ok(await pending(runner.exit, 50), "the container's new Wait stays open");
            },
          );

          await t.step(
            "sandboxer restart: the pod's Wait probes Platform, then waits again",
            async () => {
              await d.kill9();
              await d.spawn();
              const deadline = Date.now() + 20_000;
              while (pod.platformProbes === 0 && Date.now() < deadline) {
                await new Promise((r) => setTimeout(r, 100));
              }
              assert.equal(pod.platformProbes, 1, "one Platform probe, answered");
              assert.ok(await pending(pod.wait), "the pod's Wait is open again");
              assert.deepEqual(await isulad.state(runner), { status: RUNNING });
              assert.ok(await pending(runner.exit, 50), "the container's Wait survives");
            },
          );

          await t.step("stop: stop signal, SIGKILL, Kill(0); removed", async () => {
            const s = await isulad.stopContainer(runner);
            assert.deepEqual(s.exit, { kind: "exit", status: kind.stoppedStatus });
            assert.ok(
              s.probe === Code.NOT_FOUND || s.probe === Code.OK,
              `Kill(0) after the exit answers NOT_FOUND or OK, not code ${s.probe}`,
            );
            assert.ok(
              s.sigkill === Code.OK || s.sigkill === Code.NOT_FOUND,
              `SIGKILL ${s.sigkill}`,
            );
            assert.deepEqual(await isulad.removeContainer(runner), {
              exitStatus: kind.stoppedStatus,
            });
          });

          await t.step("a pod removed while a container runs leaves nothing", async () => {
            const c = await isulad.createContainer(pod, await kind.runner(d, pod, true));
            await isulad.startContainer(c);
            assert.deepEqual(await isulad.state(c), { status: RUNNING });
            const w = await isulad.removePod(pod);
            assert.equal(w.kind, "exit", JSON.stringify(w));
            assert.deepEqual(await leftovers(d, [pod.id]), []);
          });
        } catch (e) {
          console.error((await d.logs()).split("\n").slice(-60).join("\n"));
          throw e;
        } finally {
          await isulad.close();
          await d.cleanup();
        }
      }),
  });
}

/** Kuasar's Quark contract fake: it plays `quark sandbox` but serves no Task API. */
const FAKE_QUARK = new URL("../quark/fake-quark.sh", import.meta.url).pathname;

Deno.test({
  name: "isulad/quark contract: the Controller half of iSulad's sequence against the Quark fake",
  ...skipUnless(runcUnavailable(), "iSulad replay on the Quark contract (needs root for mounts)"),
  fn: () =>
    withDaemon(async (d) => {
      const isulad = new IsuladClient(d);
      try {
        const pod = await isulad.runPod({ hostname: "isulad-quark" });
        assert.ok(await pending(pod.wait), "the pod's Wait stays open while it runs");
        const podBundle = join(d.dir, pod.id, "sandbox");
        const spec = JSON.parse(await Deno.readTextFile(join(podBundle, "config.json")));
        assert.equal(spec.hostname, "isulad-quark", "the untyped options were read");

        // The container iSulad announces: its bind rootfs mounted into the bundle Quark reads.
        const out = join(d.base, "c-stdout");
        await mkfifo(out);
        const c = await isulad.announceContainer(pod, {
          spec: await ociSpecFor(d, pod.id, ["sh"]),
          stdio: { stdout: out },
        });
        const bundle = join(podBundle, c.id);
        assert.ok((await Deno.stat(join(bundle, "rootfs", "bin", "sh"))).isFile, "rootfs bound");
        const written = JSON.parse(await Deno.readTextFile(join(bundle, "config.json")));
        assert.equal(written.root.path, "rootfs");
        assert.equal((await Deno.stat(join(bundle, "stdout"))).ino, (await Deno.stat(out)).ino);

        // An exec announced and withdrawn by Update, as iSulad ends every exec.
        const eout = join(d.base, "e-stdout");
        await mkfifo(eout);
        const e = await isulad.announceExec(pod, c.id, processSpec(["true"]), { stdout: eout });
        const ebind = join(bundle, `${e.exec_id}-stdout`);
        assert.equal((await Deno.stat(ebind)).ino, (await Deno.stat(eout)).ino);
        await isulad.withdrawExec(pod, c.id, e.exec_id);
        assert.notEqual(
          (await Deno.stat(ebind).catch(() => undefined))?.ino,
          (await Deno.stat(eout)).ino,
        );

        // The engine restarts: the pod is found ready and waited on again.
        const r = await isulad.restart();
        assert.deepEqual(r.status, { [pod.id]: "SANDBOX_READY" });
        assert.ok(await pending(pod.wait));

        // Removed with the container still announced: nothing left.
        const w = await isulad.removePod(pod);
        assert.equal(w.kind, "exit", JSON.stringify(w));
        assert.deepEqual(await leftovers(d, [pod.id]), []);
      } finally {
        await isulad.close();
      }
    }, async () => {
      const base = await Deno.makeTempDir({ prefix: "k-" });
      const config = join(base, "quark.toml");
      await Deno.writeTextFile(config, `[quark]\nbinary = "${FAKE_QUARK}"\n`);
      return await TestDaemon.start({ base, kind: "quark", extraArgs: ["--config", config] });
    }),
});
