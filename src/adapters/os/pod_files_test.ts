import assert from "node:assert/strict";
import { join } from "node:path";
import { emptyPodConfig } from "../../domain/pod_config.ts";
import type { SandboxRecord } from "../../domain/sandbox.ts";
import { addPodFileMounts, detachedShmSource, podFilesDir, preparePodFiles } from "./pod_files.ts";
import type { OciSpec } from "../../domain/oci.ts";
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

Deno.test("the pod's /dev/shm replaces a tmpfs of the spec's own, and goes before mounts beneath it", async () => {
  const shm = detachedShmSource(42);
  assert.equal(shm, "/proc/42/fd/63");
  const dests = (spec: OciSpec) => spec.mounts!.map((m) => `${m.destination} ${m.source}`);
  // A volume beneath /dev/shm, no /dev/shm of the spec's own: the pod's comes first.
  const volume = { destination: "/dev/shm/sub", type: "bind", source: "/vol", options: ["rbind"] };
  const a: OciSpec = { ociVersion: "1.1.0", mounts: [{ ...volume }] };
  assert.ok(await addPodFileMounts(a, "/nonexistent/sb1", shm));
  const order = dests(a).filter((d) => d.startsWith("/dev/shm"));
  assert.deepEqual(order, ["/dev/shm /proc/42/fd/63", "/dev/shm/sub /vol"]);
  // A tmpfs of its own (even written "/dev/shm/") becomes the pod's, in its place.
  const b: OciSpec = {
    ociVersion: "1.1.0",
    mounts: [{ destination: "/dev/shm/", type: "tmpfs", source: "shm" }, { ...volume }],
  };
  await addPodFileMounts(b, "/nonexistent/sb1", shm);
  assert.deepEqual(dests(b).filter((d) => d.startsWith("/dev/shm")), order);
  // A bind of its own stays.
  const c: OciSpec = {
    ociVersion: "1.1.0",
    mounts: [{ destination: "/dev/shm", type: "bind", source: "/mine" }],
  };
  await addPodFileMounts(c, "/nonexistent/sb1", shm);
  assert.deepEqual(dests(c).filter((d) => d.startsWith("/dev/shm")), ["/dev/shm /mine"]);
  // No shm of the pod's (host IPC, no files/shm): nothing at /dev/shm is added.
  const d: OciSpec = { ociVersion: "1.1.0", mounts: [] };
  await addPodFileMounts(d, "/nonexistent/sb1");
  assert.deepEqual(dests(d).filter((x) => x.startsWith("/dev/shm")), []);
});
