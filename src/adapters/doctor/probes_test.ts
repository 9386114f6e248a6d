import assert from "node:assert/strict";
import { cgroupCheck, cpuHasVirtualization, mountOptionsOf } from "./probes.ts";

const line = (id: number, point: string, fstype: string, superOpts: string) =>
  `${id} 1 0:${id} / ${point} rw,relatime - ${fstype} ${fstype} ${superOpts}`;

const files = (map: Record<string, string>) => (p: string) =>
  p in map ? Promise.resolve(map[p]) : Promise.reject(new Deno.errors.NotFound(p));

Deno.test("cgroups: v2 with every controller is ok; without memory it fails", async () => {
  const info = line(30, "/sys/fs/cgroup", "cgroup2", "rw,nsdelegate");
  let c = await cgroupCheck(
    info,
    files({
      "/sys/fs/cgroup/cgroup.controllers": "cpuset cpu io memory hugetlb pids rdma\n",
    }),
  );
  assert.equal(c.status, "ok");
  assert.match(c.detail, /cgroup v2/);
  c = await cgroupCheck(info, files({ "/sys/fs/cgroup/cgroup.controllers": "cpu io pids\n" }));
  assert.equal(c.status, "fail");
  assert.match(c.detail, /missing memory/);
});

Deno.test("cgroups: hybrid v1 counts the controllers on the cgroup2 mount", async () => {
  const info = [
    line(31, "/sys/fs/cgroup", "tmpfs", "rw"),
    ...["cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids"]
      .map((c, i) => line(40 + i, `/sys/fs/cgroup/${c}`, "cgroup", `rw,${c}`)),
    line(50, "/sys/fs/cgroup/unified", "cgroup2", "rw"),
  ].join("\n");
  let c = await cgroupCheck(
    info,
    files({ "/sys/fs/cgroup/unified/cgroup.controllers": "hugetlb" }),
  );
  assert.equal(c.status, "ok", c.detail);
  c = await cgroupCheck(info, files({}));
  assert.equal(c.status, "warn");
  assert.match(c.detail, /without hugetlb/);
});

Deno.test("cpu flags: vmx or svm, on the flags line only", () => {
  assert.ok(cpuHasVirtualization("processor : 0\nflags : fpu vmx sse\n"));
  assert.ok(cpuHasVirtualization("flags\t\t: fpu svm\n"));
  assert.ok(!cpuHasVirtualization("flags : fpu sse\nmodel name : vmx-like\n"));
});

Deno.test("mount options: the longest mount point holding the path", async () => {
  const info = [
    "20 1 0:1 / / rw,relatime - ext4 /dev/vda rw",
    "21 20 0:2 / /run rw,nosuid,nodev,noexec - tmpfs tmpfs rw",
    "22 21 0:3 / /run/user rw,nosuid - tmpfs tmpfs rw",
  ].join("\n");
  assert.ok((await mountOptionsOf("/run/kuasar", info)).includes("noexec"));
  assert.ok(!(await mountOptionsOf("/run/user/0", info)).includes("noexec"));
  assert.ok(!(await mountOptionsOf("/runner", info)).includes("noexec"));
  assert.deepEqual(await mountOptionsOf("/var/lib/kuasar/bin", info), ["rw", "relatime"]);
});
