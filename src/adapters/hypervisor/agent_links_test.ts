import assert from "node:assert/strict";
import { join } from "node:path";
import { SandboxServiceDefinition } from "../../gen/kuasar/sandbox.ts";
import { TtrpcServer } from "../ttrpc/server.ts";
import { unaryMethods } from "../ttrpc/typed.ts";
import { AgentLinks } from "./agent_links.ts";
import { BOOT_ID, BOOT_SERVICE } from "../../ports/agent_protocol.ts";

/** An agent stand-in answering Check on a unix socket. */
function fakeAgent(path: string) {
  let checks = 0;
  const server = new TtrpcServer();
  server.register(
    SandboxServiceDefinition.fullName,
    unaryMethods(SandboxServiceDefinition, { check: () => (checks++, Promise.resolve({})) }),
  );
  const serving = server.serve(Deno.listen({ transport: "unix", path }));
  return {
    checks: () => checks,
    close: async () => {
      server.close();
      await serving;
    },
  };
}

Deno.test("AgentLinks: an unreachable vsock address falls back to the serial socket; one shared connection", async () => {
  const dir = await Deno.makeTempDir();
  const path = join(dir, "agent.sock");
  const agent = fakeAgent(path);
  // A vsock peer that does not exist (and no vhost-vsock at all on hosts like this one).
  const links = new AgentLinks(() =>
    Promise.resolve([
      { transport: "vsock" as const, cid: 0x7ffffff0, port: 1024 },
      { transport: "unix" as const, path },
    ])
  );
  try {
    const a = await links.get("pod");
    const b = await links.get("pod");
    assert.equal(a, b, "the pod's connection is shared");
    assert.equal(agent.checks(), 1);
    await links.drop("pod");
    assert.ok(a.client.closed);
    const c = await links.get("pod");
    assert.notEqual(c, a, "a dropped connection is made again");
    await links.drop("pod");
  } finally {
    await agent.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("AgentLinks: no agent before the deadline is a clear error", async () => {
  const dir = await Deno.makeTempDir();
  const links = new AgentLinks(() =>
    Promise.resolve([{ transport: "unix" as const, path: join(dir, "none.sock") }])
  );
  try {
    await assert.rejects(
      links.connect("pod", performance.now() + 300),
      /agent is not reachable/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("AgentLinks: every new connection is verified first; the guest's boot id is asked", async () => {
  const dir = await Deno.makeTempDir();
  const path = join(dir, "agent.sock");
  let boot = "boot-1";
  const server = new TtrpcServer();
  server.register(
    SandboxServiceDefinition.fullName,
    unaryMethods(SandboxServiceDefinition, { check: () => Promise.resolve({}) }),
  );
  server.register(BOOT_SERVICE, {
    [BOOT_ID]: { kind: "unary", handle: () => Promise.resolve(new TextEncoder().encode(boot)) },
  });
  const serving = server.serve(Deno.listen({ transport: "unix", path }));
  const seen: (string | undefined)[] = [];
  const links = new AgentLinks(
    () => Promise.resolve([{ transport: "unix" as const, path }]),
    async (_id, client) => {
      const id = await AgentLinks.bootId(client);
      seen.push(id);
      if (seen[0] !== id) throw new Error(`a new guest: ${id}`);
    },
  );
  try {
    const a = await links.get("pod");
    assert.deepEqual(seen, ["boot-1"], "the first connection is verified too");
    a.client.close(); // the VM's side went away
    const b = await links.get("pod");
    assert.notEqual(a, b);
    b.client.close();
    boot = "boot-2"; // the VMM booted the guest again
    await assert.rejects(links.get("pod"), /a new guest: boot-2/);
    assert.deepEqual(seen, ["boot-1", "boot-1", "boot-2"]);
  } finally {
    await links.drop("pod");
    server.close();
    await serving;
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("AgentLinks: an agent that has no boot id (an older guest image) says none", async () => {
  const dir = await Deno.makeTempDir();
  const path = join(dir, "agent.sock");
  const agent = fakeAgent(path);
  const links = new AgentLinks(() => Promise.resolve([{ transport: "unix" as const, path }]));
  try {
    const link = await links.get("pod");
    assert.equal(await AgentLinks.bootId(link.client), undefined);
  } finally {
    await links.drop("pod");
    await agent.close();
    await Deno.remove(dir, { recursive: true });
  }
});
