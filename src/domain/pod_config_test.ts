import assert from "node:assert/strict";
import fc from "fast-check";
import { InvalidArgumentError } from "./errors.ts";
import {
  type DnsConfig,
  dnsOfResolvConf,
  emptyPodConfig,
  hostnameProblem,
  namespaceModeFromNumber,
  resolvConf,
  validatePodConfig,
} from "./pod_config.ts";

Deno.test("namespaceModeFromNumber maps CRI's NamespaceMode enum and defaults to pod", () => {
  assert.equal(namespaceModeFromNumber(0), "pod");
  assert.equal(namespaceModeFromNumber(1), "container");
  assert.equal(namespaceModeFromNumber(2), "node");
  assert.equal(namespaceModeFromNumber(3), "target");
  for (const n of [4, 99, -1, 1.5, NaN]) assert.equal(namespaceModeFromNumber(n), "pod");
});

Deno.test("emptyPodConfig has CRI's defaults and fresh maps each time", () => {
  const a = emptyPodConfig();
  assert.deepEqual(a, {
    name: "",
    namespace: "",
    uid: "",
    hostname: "",
    logDirectory: "",
    labels: {},
    annotations: {},
    cgroupParent: "",
    sysctls: {},
    network: "pod",
    pid: "container",
    ipc: "pod",
    privileged: false,
  });
  assert.equal(a.dns, undefined);
  assert.notEqual(emptyPodConfig().labels, a.labels);
});

Deno.test("resolvConf is undefined when the pod configures no DNS", () => {
  assert.equal(resolvConf(undefined), undefined);
  assert.equal(resolvConf({ servers: [], searches: [], options: [] }), undefined);
});

Deno.test("resolvConf writes search, then nameservers, then options, one per line", () => {
  const dns: DnsConfig = {
    servers: ["10.96.0.10", "8.8.8.8"],
    searches: ["default.svc.cluster.local", "svc.cluster.local", "cluster.local"],
    options: ["ndots:5", "edns0"],
  };
  assert.equal(
    resolvConf(dns),
    "search default.svc.cluster.local svc.cluster.local cluster.local\n" +
      "nameserver 10.96.0.10\n" +
      "nameserver 8.8.8.8\n" +
      "options ndots:5 edns0\n",
  );
});

Deno.test("resolvConf omits the parts that are empty", () => {
  assert.equal(
    resolvConf({ servers: ["1.1.1.1"], searches: [], options: [] }),
    "nameserver 1.1.1.1\n",
  );
  assert.equal(resolvConf({ servers: [], searches: ["a", "b"], options: [] }), "search a b\n");
  assert.equal(
    resolvConf({ servers: [], searches: [], options: ["ndots:2"] }),
    "options ndots:2\n",
  );
  assert.equal(
    resolvConf({ servers: [], searches: ["x"], options: ["rotate"] }),
    "search x\noptions rotate\n",
  );
});

const word = fc.stringMatching(/^[a-z0-9][a-z0-9.:-]{0,15}$/);

Deno.test("resolvConf output has one line per part in Kuasar's order (property)", () => {
  fc.assert(
    fc.property(
      fc.record({
        servers: fc.array(word, { maxLength: 4 }),
        searches: fc.array(word, { maxLength: 4 }),
        options: fc.array(word, { maxLength: 4 }),
      }),
      (dns) => {
        const out = resolvConf(dns);
        if (!dns.servers.length && !dns.searches.length && !dns.options.length) {
          assert.equal(out, undefined);
          return;
        }
        assert.ok(out !== undefined && out.endsWith("\n"));
        const lines = out.slice(0, -1).split("\n");
        const expected = [
          ...(dns.searches.length ? [`search ${dns.searches.join(" ")}`] : []),
          ...dns.servers.map((s) => `nameserver ${s}`),
          ...(dns.options.length ? [`options ${dns.options.join(" ")}`] : []),
        ];
        assert.deepEqual(lines, expected);
      },
    ),
  );
});

Deno.test("hostnameProblem: at most 64 bytes of dot-separated labels; empty is the default", () => {
  for (const ok of ["", "web-0", "a".repeat(64), "node_1.example.com", "A1", "x.y-z"]) {
    assert.equal(hostnameProblem(ok), undefined, ok);
  }
  assert.match(hostnameProblem("h".repeat(10_000)) ?? "", /longer than 64 bytes/);
  assert.match(hostnameProblem("é".repeat(33)) ?? "", /longer than 64 bytes \(66\)/);
  for (const bad of ["a b", "-a", "a-", ".a", "a.", "a..b", "a/b", "a\0", "é", "a\nb"]) {
    assert.ok(hostnameProblem(bad), JSON.stringify(bad));
  }
});

Deno.test("validatePodConfig throws INVALID_ARGUMENT with a shortened hostname", () => {
  assert.throws(
    () => validatePodConfig({ ...emptyPodConfig(), hostname: "h".repeat(10_000) }),
    (e: Error) => e instanceof InvalidArgumentError && e.message.length < 200,
  );
  validatePodConfig({ ...emptyPodConfig(), hostname: "web-0" });
});

Deno.test("dnsOfResolvConf: a node's resolv.conf as a pod's DNS settings", () => {
  assert.deepEqual(
    dnsOfResolvConf(
      "# generated\nnameserver 10.0.0.2\nnameserver 10.0.0.3 # second\ndomain old.example\n" +
        "search corp.example example\noptions ndots:2 timeout:1\n; comment\n",
    ),
    {
      servers: ["10.0.0.2", "10.0.0.3"],
      searches: ["corp.example", "example"],
      options: ["ndots:2", "timeout:1"],
    },
  );
  assert.equal(dnsOfResolvConf(""), undefined);
  assert.equal(dnsOfResolvConf("# nothing\n\n"), undefined);
});
