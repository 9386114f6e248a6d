import assert from "node:assert/strict";
import { join } from "node:path";
import { PodDisks } from "./pod_disks.ts";
import type { DiskAttachment } from "../../ports/hypervisor.ts";

function fakeHost(slots: number) {
  const attached = new Map<string, DiskAttachment>();
  const detached: string[] = [];
  /** Serials the "VMM" gives by path instead of the one asked (Firecracker's). */
  const serials = new Map<string, string>();
  let failNext = false;
  let failDetach = false;
  return {
    attached,
    serials,
    failDetach: () => (failDetach = true),
    detached,
    failAttach: () => (failNext = true),
    host: {
      slots,
      attach: (_pod: string, d: DiskAttachment) => {
        if (failNext) {
          failNext = false;
          return Promise.reject(new Error("QMP device_add failed"));
        }
        attached.set(d.id, d);
        return Promise.resolve(serials.get(d.path) ?? d.serial);
      },
      detach: (_pod: string, { id }: { id: string }) => {
        if (failDetach) {
          failDetach = false;
          return Promise.reject(new Error("PATCH /drives refused"));
        }
        detached.push(id);
        attached.delete(id);
        return Promise.resolve();
      },
    },
  };
}

async function settled(dir: string, pod: string, n: number) {
  for (let i = 0; i < 100; i++) {
    const f = JSON.parse(await Deno.readTextFile(join(dir, pod, "disks.json")));
    if (f.disks.length === n) return f;
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.fail(`disks.json never had ${n} disks`);
}

Deno.test("PodDisks: one disk per source, shared, detached after its last user, slots bounded", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.mkdir(join(dir, "p1"));
  const f = fakeHost(2);
  const disks = new PodDisks(dir, f.host);
  try {
    const a = await disks.acquire("p1", "c1", "/dev/loop0", false);
    assert.equal(await disks.acquire("p1", "c2", "/dev/loop0", false), a, "shared by c2");
    await assert.rejects(disks.acquire("p1", "c3", "/dev/loop0", true), /read-write already/);
    const b = await disks.acquire("p1", "c1", "/dev/loop1", true);
    assert.notEqual(a, b);
    assert.deepEqual([...f.attached.values()].map((d) => [d.path, d.slot, d.readOnly]), [
      ["/dev/loop0", 0, false],
      ["/dev/loop1", 1, true],
    ]);
    await assert.rejects(disks.acquire("p1", "c1", "/dev/loop2", false), /2 disk slots/);
    // A failed attach leaves nothing recorded.
    await disks.release("p1", "c1");
    await settled(dir, "p1", 1);
    assert.deepEqual(f.detached, ["kdisk1"], "loop1 went; loop0 is still c2's");
    f.failAttach();
    await assert.rejects(disks.acquire("p1", "c4", "/dev/loop3", false), /device_add failed/);
    await settled(dir, "p1", 1);
    await disks.release("p1", "c2");
    await settled(dir, "p1", 0);
    assert.deepEqual(f.detached, ["kdisk1", "kdisk0"]);
    // The record is the daemon's alone.
    assert.equal((await Deno.stat(join(dir, "p1", "disks.json"))).mode! & 0o777, 0o600);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("PodDisks: a detach a previous daemon began is finished by the next", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.mkdir(join(dir, "p1"));
  await Deno.writeTextFile(
    join(dir, "p1", "disks.json"),
    JSON.stringify({
      next: 3,
      disks: [{
        id: "kdisk2",
        source: "/dev/loop0",
        readOnly: false,
        serial: "kuasar-2",
        slot: 0,
        users: [],
        leaving: true,
      }],
    }),
  );
  const f = fakeHost(1);
  const disks = new PodDisks(dir, f.host);
  try {
    // The slot frees once the old detach ends; the same source gets a new disk.
    await disks.release("p1", "nobody");
    await settled(dir, "p1", 0);
    assert.deepEqual(f.detached, ["kdisk2"]);
    assert.equal(await disks.acquire("p1", "c1", "/dev/loop0", false), "kuasar-3");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("PodDisks: the serial a VMM gives (Firecracker's) is the one recorded and shared", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.mkdir(join(dir, "p1"));
  const f = fakeHost(2);
  f.serials.set("/img/a.img", "2049012345");
  const disks = new PodDisks(dir, f.host);
  try {
    assert.equal(await disks.acquire("p1", "c1", "/img/a.img", false), "2049012345");
    assert.equal(await disks.acquire("p1", "c2", "/img/a.img", false), "2049012345");
    const rec = JSON.parse(await Deno.readTextFile(join(dir, "p1", "disks.json")));
    assert.deepEqual(rec.disks.map((d: { serial: string }) => d.serial), ["2049012345"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("PodDisks: a slot whose detach failed is not reused until a retry frees it; a serial the pod has is refused", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.mkdir(join(dir, "p1"));
  const f = fakeHost(1);
  const disks = new PodDisks(dir, f.host);
  try {
    await disks.acquire("p1", "c1", "/img/a.img", false);
    f.failDetach();
    await disks.release("p1", "c1");
    for (let i = 0; i < 100; i++) {
      const rec = JSON.parse(await Deno.readTextFile(join(dir, "p1", "disks.json")));
      if (rec.disks[0]?.stuck) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    // The retry (at the next operation) succeeds, but only after this acquire looked.
    await assert.rejects(disks.acquire("p1", "c2", "/img/b.img", false), /1 disk slots/);
    await settled(dir, "p1", 0);
    assert.deepEqual(f.detached, ["kdisk0"]);
    // Two files the VMM would give the same serial: the second is refused and let go.
    f.serials.set("/img/b.img", "same").set("/img/c.img", "same");
    assert.equal(await disks.acquire("p1", "c2", "/img/b.img", false), "same");
    const two = new PodDisks(dir, { ...f.host, slots: 3 });
    await assert.rejects(two.acquire("p1", "c3", "/img/c.img", false), /serial same/);
    await settled(dir, "p1", 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
