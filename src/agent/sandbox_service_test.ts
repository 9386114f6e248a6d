import assert from "node:assert/strict";
import { isMountPoint } from "../adapters/os/mounts.ts";
import { join } from "node:path";
import { InternalError, NotFoundError } from "../domain/errors.ts";
import { sandboxService } from "./sandbox_service.ts";
import type { CallContext } from "../adapters/ttrpc/server.ts";

const ctx = {} as CallContext;
const json = (x: unknown) => new TextEncoder().encode(JSON.stringify(x));

Deno.test("agent SandboxService: ExecVMProcess runs a shell command, a failure names its exit code", async () => {
  const s = sandboxService();
  assert.deepEqual(await s.execVMProcess!({ command: "echo hi", stdin: new Uint8Array() }, ctx), {
    out: "hi\n",
  });
  assert.deepEqual(
    await s.execVMProcess!({ command: "tr a-z A-Z", stdin: new TextEncoder().encode("x") }, ctx),
    { out: "X" },
  );
  await assert.rejects(
    s.execVMProcess!({ command: "echo bad >&2; exit 3", stdin: new Uint8Array() }, ctx),
    /exited with 3: bad/,
  );
});

Deno.test("agent SandboxService: SyncClock's first step stamps the guest's times", async () => {
  const s = sandboxService();
  const before = BigInt(Date.now()) * 1_000_000n;
  const p = {
    ClientSendTime: 1n,
    ClientArriveTime: 0n,
    ServerSendTime: 0n,
    ServerArriveTime: 0n,
    Delta: 0n,
  };
  const r = await s.syncClock!(p, ctx);
  assert.ok(r.ClientArriveTime >= before && r.ServerSendTime >= r.ClientArriveTime);
  assert.equal(r.ClientSendTime, 1n);
});

Deno.test("agent SandboxService: SetupSandbox writes sysctls, hostname and DNS; other configs are NOT_FOUND", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const procSys = join(dir, "sys");
    for (const d of ["kernel", "net/ipv4"]) await Deno.mkdir(join(procSys, d), { recursive: true });
    const podDir = join(dir, "pod");
    const s = sandboxService({ procSys, resolvConf: join(dir, "resolv.conf"), podDir });
    const pod = {
      hostname: "vm-pod",
      dns_config: { servers: ["10.0.0.10"], searches: ["svc.local"], options: ["ndots:5"] },
      linux: { sysctls: { "net.ipv4.ip_forward": "1" } },
    };
    await s.setupSandbox!({
      config: { typeUrl: "PodSandboxConfig", value: json(pod) },
      interfaces: [],
      routes: [],
    }, ctx);
    assert.equal(await Deno.readTextFile(join(procSys, "kernel/hostname")), "vm-pod");
    assert.equal(await Deno.readTextFile(join(procSys, "net/ipv4/ip_forward")), "1");
    assert.equal(
      await Deno.readTextFile(join(dir, "resolv.conf")),
      "search svc.local\nnameserver 10.0.0.10\noptions ndots:5\n",
    );
    // The files the pod's containers get (the guest's runtime mounts them), and its /dev/shm.
    const files = join(podDir, "files");
    try {
      assert.equal(await Deno.readTextFile(join(files, "hostname")), "vm-pod\n");
      assert.equal(
        await Deno.readTextFile(join(files, "resolv.conf")),
        "search svc.local\nnameserver 10.0.0.10\noptions ndots:5\n",
      );
      assert.match(await Deno.readTextFile(join(files, "hosts")), /localhost/);
      assert.ok(await isMountPoint(join(files, "shm")), "a tmpfs for the pod's /dev/shm");
    } finally {
      await new Deno.Command("umount", { args: [join(files, "shm")] }).output();
    }
    await assert.rejects(
      s.setupSandbox!(
        { config: { typeUrl: "Other", value: json({}) }, interfaces: [], routes: [] },
        ctx,
      ),
      NotFoundError,
    );
    await assert.rejects(
      s.setupSandbox!({
        config: {
          typeUrl: "PodSandboxConfig",
          value: json({ linux: { sysctls: { "../x": "1" } } }),
        },
        interfaces: [],
        routes: [],
      }, ctx),
      /Invalid sysctl/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("agent SandboxService: UpdateRoutes passes over a route that exists, and fails on other errors", async () => {
  // A fake `ip` first in PATH: it fails with the stderr the test puts beside it.
  const dir = await Deno.makeTempDir();
  const path = Deno.env.get("PATH") ?? "";
  try {
    await Deno.writeTextFile(
      join(dir, "ip"),
      `#!/bin/sh\necho "$@" >> ${dir}/calls\ncat ${dir}/stderr >&2\nexit 2\n`,
    );
    await Deno.chmod(join(dir, "ip"), 0o755);
    Deno.env.set("PATH", `${dir}:${path}`);
    const s = sandboxService();
    const route = {
      dest: "10.0.0.0/24",
      gateway: "",
      device: "exists0",
      source: "",
      scope: 0,
      family: 0,
      flags: 0,
    };

    await Deno.writeTextFile(join(dir, "stderr"), "RTNETLINK answers: File exists\n");
    assert.deepEqual(await s.updateRoutes!({ routes: [route] }, ctx), {});
    assert.equal(
      await Deno.readTextFile(join(dir, "calls")),
      "route add 10.0.0.0/24 dev exists0\n",
    );

    // Other failures fail the call, even when a name in them says "exists".
    await Deno.writeTextFile(join(dir, "stderr"), 'Cannot find device "exists0"\n');
    await assert.rejects(
      s.updateRoutes!({ routes: [route] }, ctx),
      (e) => e instanceof InternalError && /ip exited with 2: Cannot find device/.test(e.message),
    );
  } finally {
    Deno.env.set("PATH", path);
    await Deno.remove(dir, { recursive: true });
  }
});
