/**
 * The runc front end against the real runc: how its failures are classified.
 * containerd's StopPodSandbox only tolerates NOT_FOUND from a kill, so a
 * container whose init just exited must not come back as FAILED_PRECONDITION.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { OciRuntimeCli } from "../../src/adapters/oci/runtime_cli.ts";
import { runCommand } from "../../src/adapters/os/command.ts";
import { NotFoundError } from "../../src/domain/errors.ts";
import { runcUnavailable, skipUnless } from "../support/env.ts";
import { removeCgroupParent } from "../support/daemon.ts";
import { writeBundle } from "../support/oci.ts";
import { ensureBusyboxRootfs } from "../support/rootfs.ts";

const name = "runc kill of an exited container, or an unknown one, is NOT_FOUND";
Deno.test({ name, ...skipUnless(runcUnavailable(), name) }, async () => {
  const dir = await Deno.makeTempDir({ prefix: "kuasar-runc-cli-" });
  const runc = new OciRuntimeCli(
    { binary: "runc", root: join(dir, "root"), systemdCgroup: false },
    { run: runCommand },
  );
  const id = `cli-${crypto.randomUUID().slice(0, 8)}`;
  try {
    const bundle = await writeBundle(join(dir, "bundle"), id, {
      args: ["/bin/true"],
      sandboxPid: Deno.pid,
      sandboxId: id,
      cgroupParent: "/kuasar-test-cli",
    });
    // The shared read-only rootfs serves: the container writes nothing.
    const cfgPath = join(bundle, "config.json");
    const cfg = JSON.parse(await Deno.readTextFile(cfgPath));
    cfg.root = { path: await ensureBusyboxRootfs(), readonly: true };
    await Deno.writeTextFile(cfgPath, JSON.stringify(cfg));
    const run = await new Deno.Command("runc", {
      args: [...runc.global().slice(1), "run", "--detach", "--bundle", bundle, id],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).output();
    if (!run.success) throw new Error(new TextDecoder().decode(run.stderr));
    for (let i = 0; i < 100 && (await runc.state(id))?.status !== "stopped"; i++) {
      await new Promise((r) => setTimeout(r, 20));
    }
    await assert.rejects(() => runc.kill(id, 15, false), NotFoundError);
    await runc.delete(id, true);
    await assert.rejects(() => runc.kill(id, 15, false), NotFoundError);
  } finally {
    await runc.delete(id, true).catch(() => {});
    await Deno.remove(dir, { recursive: true });
    await removeCgroupParent("/kuasar-test-cli");
  }
});
