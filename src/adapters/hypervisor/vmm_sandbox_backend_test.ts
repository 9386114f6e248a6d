import assert from "node:assert/strict";
import { emptyPodConfig } from "../../domain/pod_config.ts";
import { podSandboxJson, type VmmPodState } from "./vmm_sandbox_backend.ts";
import { sandboxRecord } from "../../../tests/fakes/records.ts";
import type { SandboxRecord } from "../../domain/sandbox.ts";

const decode = (b: Uint8Array) => JSON.parse(new TextDecoder().decode(b));

Deno.test("podSandboxJson: the pod's DNS for the guest, else the node's, as containerd gives its own", () => {
  const node = () => "nameserver 192.0.2.53\nsearch lan\n";
  const rec = (dns?: { servers: string[]; searches: string[]; options: string[] }) =>
    sandboxRecord("p1", {
      kind: "vm",
      state: "created",
      pid: 0,
      pod: { ...emptyPodConfig(), hostname: "vm-0", dns },
    }) as SandboxRecord<VmmPodState>;
  const own = { servers: ["10.96.0.10"], searches: ["svc"], options: ["ndots:5"] };
  assert.deepEqual(decode(podSandboxJson(rec(own), node)).dns_config, own);
  assert.deepEqual(decode(podSandboxJson(rec(), node)).dns_config, {
    servers: ["192.0.2.53"],
    searches: ["lan"],
    options: [],
  });
  const empty = { servers: [], searches: [], options: [] };
  assert.deepEqual(decode(podSandboxJson(rec(empty), node)).dns_config.servers, ["192.0.2.53"]);
  const none = () => {
    throw new Deno.errors.NotFound("/etc/resolv.conf");
  };
  assert.equal(decode(podSandboxJson(rec(), none)).dns_config, undefined);
  assert.equal(decode(podSandboxJson(rec(), node)).hostname, "vm-0");
});
