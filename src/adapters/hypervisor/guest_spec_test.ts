import assert from "node:assert/strict";
import { ephemeralName, guestSpec } from "./guest_spec.ts";
import type { OciSpec } from "../../domain/oci.ts";
import { DISKS_ANNOTATION, GUEST_EPHEMERAL_DIR, POD_PID_NS } from "../../ports/agent_protocol.ts";

Deno.test("guestSpec: VM namespaces dropped, others new, a shared pid namespace the pod's", () => {
  const { spec } = guestSpec(
    {
      linux: {
        namespaces: [
          { type: "network", path: "/proc/77/ns/net" },
          { type: "ipc", path: "/proc/77/ns/ipc" },
          { type: "uts" },
          { type: "pid", path: "/proc/77/ns/pid" },
          { type: "mount" },
        ],
        cgroupsPath: "kubepods-besteffort.slice:cri-containerd:c1",
      },
    },
    "c1",
    "/run/kuasar/shared/c1",
  );
  assert.deepEqual(spec.linux?.namespaces, [
    { type: "pid", path: POD_PID_NS },
    { type: "mount" },
  ]);
  assert.deepEqual(spec.linux?.cgroupsPath, "/kuasar/c1");
  const own = guestSpec({ linux: { namespaces: [{ type: "pid" }] } }, "c2", "/g/c2");
  assert.deepEqual(own.spec.linux?.namespaces, [{ type: "pid" }]);
});

Deno.test("guestSpec: host bind mounts become shares, the rest pass through", () => {
  const input = {
    root: { path: "/var/lib/containerd/x/rootfs", readonly: true },
    mounts: [
      { destination: "/proc", type: "proc", source: "proc" },
      { destination: "/etc/hosts", type: "bind", source: "/var/lib/c/hosts", options: ["rbind"] },
      { destination: "/data", source: "/srv/vol", options: ["rbind", "rw"] },
      { destination: "/dev/shm", type: "tmpfs", source: "shm" },
    ],
    hooks: { prestart: [{ path: "/usr/bin/host-hook" }] },
  };
  const { spec, shares } = guestSpec(input, "c1", "/g/c1");
  assert.deepEqual(spec.root, { path: "rootfs", readonly: true });
  assert.deepEqual(shares, [
    { source: "/var/lib/c/hosts", name: "m0" },
    { source: "/srv/vol", name: "m1" },
  ]);
  assert.deepEqual(spec.mounts?.map((m) => m.source), ["proc", "/g/c1/m0", "/g/c1/m1", "shm"]);
  // Hooks go to the guest, whose agent keeps the ones it can run (oci/guest_hooks.ts).
  assert.deepEqual(spec.hooks, { prestart: [{ path: "/usr/bin/host-hook" }] });
  // The input is left alone.
  assert.deepEqual(input.mounts[1].source, "/var/lib/c/hosts");
});

Deno.test("guest spec: the host's cpusets go (a guest has its own CPUs); the CPU shares stay", () => {
  const input: OciSpec = {
    root: { path: "rootfs" },
    linux: {
      resources: {
        cpu: { shares: 512, quota: 50_000, period: 100_000, cpus: "12-15", mems: "1" },
        memory: { limit: 67108864 },
      },
    },
  };
  const { spec } = guestSpec(input, "c1", "/g/c1");
  assert.deepEqual(spec.linux?.resources, {
    cpu: { shares: 512, quota: 50_000, period: 100_000 },
    memory: { limit: 67108864 },
  });
  assert.equal((input.linux?.resources?.cpu as { cpus: string }).cpus, "12-15", "input untouched");
});

Deno.test("guest spec: a memory volume becomes the pod's guest tmpfs, the same for every container", () => {
  const vol = "/var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/cache";
  const spec = (): OciSpec => ({
    root: { path: "rootfs" },
    mounts: [
      { destination: "/cache", type: "bind", source: vol, options: ["rbind", "rw"] },
      { destination: "/data", type: "bind", source: "/srv/vol", options: ["rbind"] },
    ],
  });
  const inMemory = (p: string) => p === vol;
  const a = guestSpec(spec(), "c1", "/g/c1", inMemory);
  const b = guestSpec(spec(), "c2", "/g/c2", inMemory);
  assert.equal(a.spec.mounts?.[0].source, `${GUEST_EPHEMERAL_DIR}/${ephemeralName(vol)}`);
  assert.equal(a.spec.mounts?.[0].source, b.spec.mounts?.[0].source);
  assert.match(ephemeralName(vol), /^cache-[0-9a-f]{8}$/);
  assert.deepEqual(a.shares, [{ source: "/srv/vol", name: "m0" }], "not shared from the host");
  assert.notEqual(ephemeralName("/a/x"), ephemeralName("/b/x"));
});

Deno.test("guestSpec: disks are named where the guest has them and listed for the agent", () => {
  const vol = { serial: "kuasar-0", fstype: "ext4", options: [] };
  const raw = { serial: "kuasar-1", hostDevice: "7:3", options: [] };
  const root = { serial: "kuasar-2", fstype: "xfs", options: ["ro"] };
  const { spec, shares } = guestSpec(
    {
      root: { path: "rootfs" },
      mounts: [
        { destination: "/data", type: "bind", source: "/dev/loop0", options: ["rbind", "rw"] },
        {
          destination: "/img",
          type: "ext4",
          source: "/x.img",
          options: ["loop", "ro", "data=ordered"],
        },
        { destination: "/etc/hosts", type: "bind", source: "/h/hosts", options: ["rbind"] },
      ],
      linux: { devices: [{ path: "/dev/xvdb", type: "b", major: 7, minor: 3 }] },
    },
    "c1",
    "/run/kuasar/shared/c1",
    () => false,
    { mounts: new Map([[0, vol], [1, vol]]), devices: new Map([[0, raw]]), rootfs: root },
  );
  assert.equal(spec.root?.path, "/run/kuasar/disks/kuasar-2");
  assert.deepEqual(spec.mounts?.slice(0, 2), [
    {
      destination: "/data",
      type: "bind",
      source: "/run/kuasar/disks/kuasar-0",
      options: ["rbind", "rw"],
    },
    {
      destination: "/img",
      type: "bind",
      source: "/run/kuasar/disks/kuasar-0",
      options: ["rbind", "ro"],
    },
  ]);
  assert.deepEqual(shares, [{ source: "/h/hosts", name: "m0" }], "only the file is shared");
  // Each disk once; the device keeps the host's numbers for the agent to renumber.
  assert.deepEqual(JSON.parse(spec.annotations?.[DISKS_ANNOTATION] ?? ""), [vol, raw, root]);
  assert.deepEqual(spec.linux?.devices, [{ path: "/dev/xvdb", type: "b", major: 7, minor: 3 }]);
  const none = guestSpec({ mounts: [] }, "c2", "/g/c2");
  assert.equal(none.spec.annotations?.[DISKS_ANNOTATION], undefined);
});

Deno.test("guestSpec: a disks annotation in the container's own spec never reaches the agent", () => {
  const forged = JSON.stringify([{ serial: "kuasar-0", fstype: "ext4", options: ["rw"] }]);
  const g = guestSpec(
    { mounts: [], annotations: { [DISKS_ANNOTATION]: forged, keep: "me" } },
    "c3",
    "/g/c3",
  );
  assert.deepEqual(g.spec.annotations, { keep: "me" });
  const vol = { serial: "kuasar-1", fstype: "ext4", options: [] };
  const withDisk = guestSpec(
    {
      mounts: [{ destination: "/d", type: "bind", source: "/dev/loop0", options: ["rbind"] }],
      annotations: { [DISKS_ANNOTATION]: forged },
    },
    "c4",
    "/g/c4",
    () => false,
    { mounts: new Map([[0, vol]]), devices: new Map() },
  );
  assert.deepEqual(JSON.parse(withDisk.spec.annotations?.[DISKS_ANNOTATION] ?? ""), [vol]);
});

Deno.test("guest spec: a 1.x ociVersion names 1.0.2 for the guest's crun; others kept", () => {
  const version = (v?: string) => guestSpec({ ociVersion: v }, "c", "/g/c").spec.ociVersion;
  assert.equal(version("1.2.1"), "1.0.2");
  assert.equal(version("1.1.1"), "1.0.2");
  assert.equal(version("1.0.2-dev"), "1.0.2-dev");
  assert.equal(version("1.0.0"), "1.0.0");
  // Not a 1.x spec: left for the runtime to refuse.
  assert.equal(version("2.0.0"), "2.0.0");
  assert.equal(version(undefined), undefined);
});
