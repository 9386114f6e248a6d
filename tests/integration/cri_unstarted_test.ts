/**
 * A pod containerd creates but never starts: when RunPodSandbox fails after
 * Controller.Create (here: the pause image cannot be pulled, as on an
 * air-gapped node), containerd never calls Shutdown. The sandboxer shuts such
 * a sandbox down itself after `[sandbox] created_sandbox_timeout_secs`, also
 * when it finds one after a restart, and `kuasar ctl list` shows it meanwhile.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { containerdUnavailable, TestContainerd } from "../support/containerd.ts";
import { TestDaemon } from "../support/daemon.ts";
import { containerdDropIn } from "../support/e2e.ts";
import { runcUnavailable, skipUnless } from "../support/env.ts";
import { leftovers } from "../support/leaks.ts";

const MAIN = fileURLToPath(new URL("../../src/main.ts", import.meta.url));
const GRACE_SECS = 3;

/** Sandbox directories (ids) under the daemon's --dir. */
async function sandboxes(d: TestDaemon): Promise<string[]> {
  const ids: string[] = [];
  for await (const e of Deno.readDir(d.dir)) {
    if (e.isDirectory && /^[0-9a-f]{64}$/.test(e.name)) ids.push(e.name);
  }
  return ids;
}

async function ctlList(d: TestDaemon): Promise<string> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, "ctl", "-l", d.listen, "-d", d.dir, "list"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(r.success, new TextDecoder().decode(r.stderr));
  return new TextDecoder().decode(r.stdout);
}

/** Waits until `probe` holds, up to `ms`. */
async function until(probe: () => Promise<boolean>, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await probe()) return true;
    await new Promise((r) => setTimeout(r, 200));
  }
  return await probe();
}

Deno.test({
  name: "containerd: a pod whose RunPodSandbox fails after Create is shut down after the grace",
  ...skipUnless(runcUnavailable() ?? containerdUnavailable(), "containerd + runC sandboxer"),
  async fn() {
    const base = await Deno.makeTempDir({ prefix: "k-" });
    const ctdBase = await Deno.makeTempDir({ prefix: "ctd-" });
    const config = join(base, "sandboxer.toml");
    await Deno.writeTextFile(config, `[sandbox]\ncreated_sandbox_timeout_secs = ${GRACE_SECS}\n`);
    const d = await TestDaemon.start({ base, extraArgs: ["--config", config] });
    let ctd: TestContainerd | undefined;
    try {
      // No test images, and CRI pulls the pause image for this runtime: the
      // pull fails (nothing reachable), after Controller.Create.
      ctd = await TestContainerd.start({
        base: ctdBase,
        images: false,
        // The documented handler, with the pause image pulled as a node without that line would.
        dropIns: [
          (await containerdDropIn("runc", d.listen, join(base, "bin")))
            .replaceAll("disable_pause_image_pull = true", "disable_pause_image_pull = false"),
        ],
      });
      const podJson = await ctd.writeJson("pod.json", {
        metadata: { name: "unstarted", namespace: "default", uid: crypto.randomUUID(), attempt: 0 },
        hostname: "unstarted",
        log_directory: join(ctdBase, "logs"),
        linux: { cgroup_parent: d.cgroupParent },
      });
      const r = await ctd.crictl(["runp", "--runtime", "kuasar-runc", podJson], {
        timeoutMs: 120_000,
      });
      assert.notEqual(r.code, 0, "RunPodSandbox fails");
      const [id] = await sandboxes(d);
      assert.ok(id, `RunPodSandbox failed after Controller.Create (${r.stderr.trim()})`);
      const listed = await ctlList(d);
      assert.match(
        listed,
        new RegExp(`${id}\\tSANDBOX_NOTREADY\\t0\\t0\\t\\S+\\t\\d+s\\tcreated \\(shut down at`),
      );
      // A restart in the grace: the sandbox found on disk gets the grace again.
      await d.kill9();
      await d.spawn();
      assert.deepEqual(await sandboxes(d), [id], "kept through the restart, within the grace");
      assert.ok(await until(async () => (await sandboxes(d)).length === 0, 30_000), "shut down");
      assert.match(await d.logs(), /shutting down a sandbox created and never started/);
      assert.deepEqual(await leftovers(d, [id]), []);
    } catch (e) {
      console.error((await d.logs()).split("\n").slice(-60).join("\n"));
      if (ctd) console.error((await ctd.logs()).split("\n").slice(-40).join("\n"));
      throw e;
    } finally {
      await ctd?.cleanup();
      await d.cleanup();
      await Deno.remove(ctdBase, { recursive: true }).catch(() => {});
    }
  },
});
