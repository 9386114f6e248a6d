import assert from "node:assert/strict";
import { join } from "node:path";
import { emptyPodConfig } from "../../domain/pod_config.ts";
import type { SandboxRecord } from "../../domain/sandbox.ts";
import { podFilesDir, preparePodFiles } from "./pod_files.ts";
import { sandboxRecord } from "../../../tests/fakes/records.ts";

function record(): SandboxRecord {
  return sandboxRecord("sb1", {
    kind: "runc",
    state: "created",
    pid: 0,
    // Host IPC: no shm tmpfs to mount (and unmount) in a unit test.
    pod: { ...emptyPodConfig(), hostname: "web-0", ipc: "node" },
  });
}

Deno.test("pod files get 0644 (directory 0755) whatever the daemon's umask", async () => {
  const old = Deno.umask(0);
  const dir = await Deno.makeTempDir();
  try {
    for (const umask of [0o000, 0o077, 0o022]) {
      Deno.umask(umask);
      await preparePodFiles(join(dir, `u${umask}`), record().pod);
      const files = podFilesDir(join(dir, `u${umask}`));
      assert.equal((await Deno.stat(files)).mode! & 0o7777, 0o755, `umask ${umask.toString(8)}`);
      for (const f of ["hostname", "hosts", "resolv.conf"]) {
        assert.equal(
          (await Deno.stat(join(files, f))).mode! & 0o7777,
          0o644,
          `${f}, umask ${umask.toString(8)}`,
        );
      }
      assert.equal(await Deno.readTextFile(join(files, "hostname")), "web-0\n");
    }
  } finally {
    Deno.umask(old);
    await Deno.remove(dir, { recursive: true });
  }
});
