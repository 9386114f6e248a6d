import assert from "node:assert/strict";
import { PodSandboxConfig } from "../../gen/cri/api.ts";
import { InvalidArgumentError } from "../../domain/errors.ts";
import { podConfigFromOptions } from "./pod_config.ts";

const config = PodSandboxConfig.encode(PodSandboxConfig.fromPartial({
  metadata: { name: "web", namespace: "default", uid: "u1", attempt: 0 },
  hostname: "web-0",
  dnsConfig: { servers: ["10.0.0.10"], searches: ["svc.local"], options: [] },
  linux: { cgroupParent: "/kubepods/pod-u1", sysctls: { "net.ipv4.ip_forward": "1" } },
})).finish();

Deno.test("options as containerd sends them: a typed PodSandboxConfig", () => {
  const c = podConfigFromOptions({ typeUrl: "runtime.v1.PodSandboxConfig", value: config });
  assert.equal(c.hostname, "web-0");
});

Deno.test("options as iSulad sends them: a PodSandboxConfig with an empty type URL", () => {
  const c = podConfigFromOptions({ typeUrl: "", value: config });
  assert.equal(c.hostname, "web-0");
  assert.equal(c.name, "web");
  assert.deepEqual(c.dns?.servers, ["10.0.0.10"]);
  assert.equal(c.cgroupParent, "/kubepods/pod-u1");
  assert.deepEqual(c.sysctls, { "net.ipv4.ip_forward": "1" });
});

Deno.test("options of another type are ignored; untyped garbage is INVALID_ARGUMENT", () => {
  assert.equal(podConfigFromOptions({ typeUrl: "x.Other", value: config }).hostname, "");
  assert.equal(podConfigFromOptions(undefined).hostname, "");
  assert.throws(
    () => podConfigFromOptions({ typeUrl: "", value: new Uint8Array([0xff, 0xff, 0xff]) }),
    InvalidArgumentError,
  );
});
