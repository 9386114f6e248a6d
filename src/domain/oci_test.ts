import assert from "node:assert/strict";
import fc from "fast-check";
import {
  hasOwnPidNamespace,
  joinPodNamespaces,
  type OciNamespace,
  type OciSpec,
  type PodNamespaces,
  propagatesToNode,
  SANDBOX_ID_ANNOTATIONS,
  sandboxIdOf,
} from "./oci.ts";

const POD: PodNamespaces = {
  network: "/run/netns/cni-1",
  ipc: "/proc/4000/ns/ipc",
  uts: "/proc/4000/ns/uts",
  pid: "/proc/4000/ns/pid",
};

function specWith(namespaces: OciNamespace[]): OciSpec {
  return { ociVersion: "1.1.0", linux: { namespaces } };
}

/** [description, input entry, expected path after the rewrite (undefined = no path)]. */
const REWRITES: [string, OciNamespace, string | undefined][] = [
  ["network without path joins the pod's", { type: "network" }, POD.network],
  ["net (alias) without path joins the pod's", { type: "net" }, POD.network],
  ["network with empty path joins the pod's", { type: "network", path: "" }, POD.network],
  ["network at /proc/0 joins the pod's", { type: "network", path: "/proc/0/ns/net" }, POD.network],
  ["ipc without path joins the pod's", { type: "ipc" }, POD.ipc],
  ["ipc at /proc/0 joins the pod's", { type: "ipc", path: "/proc/0/ns/ipc" }, POD.ipc],
  ["uts without path joins the pod's", { type: "uts" }, POD.uts],
  ["uts at /proc/0 joins the pod's", { type: "uts", path: "/proc/0/ns/uts" }, POD.uts],
  ["pid at /proc/0 joins the pod's", { type: "pid", path: "/proc/0/ns/pid" }, POD.pid],
];

const KEPT: [string, OciNamespace][] = [
  ["pid without path stays private", { type: "pid" }],
  ["network at an explicit path is kept", { type: "network", path: "/var/run/netns/other" }],
  ["network at another pid is kept", { type: "network", path: "/proc/123/ns/net" }],
  ["ipc at an explicit path is kept", { type: "ipc", path: "/proc/77/ns/ipc" }],
  ["uts at an explicit path is kept", { type: "uts", path: "/proc/77/ns/uts" }],
  ["pid at an explicit path is kept", { type: "pid", path: "/proc/55/ns/pid" }],
  ["a path merely starting with /proc/0 digits is kept", { type: "ipc", path: "/proc/01/ns/ipc" }],
  ["mount is never touched", { type: "mount" }],
  ["user is never touched", { type: "user", path: "/proc/0/ns/user" }],
  ["cgroup is never touched", { type: "cgroup" }],
  ["time is never touched", { type: "time", path: "/proc/0/ns/time" }],
];

for (const [name, entry, expected] of REWRITES) {
  Deno.test(`joinPodNamespaces: ${name}`, () => {
    const spec = specWith([{ ...entry }]);
    assert.equal(joinPodNamespaces(spec, POD), true);
    const ns = spec.linux!.namespaces![0];
    assert.equal(ns.path, expected);
    assert.equal(ns.type, entry.type, "the type is kept as written");
  });
}

for (const [name, entry] of KEPT) {
  Deno.test(`joinPodNamespaces: ${name}`, () => {
    const spec = specWith([{ ...entry }]);
    assert.equal(joinPodNamespaces(spec, POD), false);
    assert.deepEqual(spec.linux!.namespaces![0], entry);
  });
}

Deno.test("joinPodNamespaces leaves a namespace alone when the pod has no file for it", () => {
  const spec = specWith([{ type: "network" }, { type: "ipc", path: "/proc/0/ns/ipc" }]);
  assert.equal(joinPodNamespaces(spec, { uts: POD.uts }), false);
  assert.deepEqual(spec.linux!.namespaces, [{ type: "network" }, {
    type: "ipc",
    path: "/proc/0/ns/ipc",
  }]);
  assert.equal(joinPodNamespaces(spec, {}), false);
});

Deno.test("joinPodNamespaces returns false for specs without linux or namespaces", () => {
  assert.equal(joinPodNamespaces({}, POD), false);
  assert.equal(joinPodNamespaces({ linux: {} }, POD), false);
  assert.equal(joinPodNamespaces(specWith([]), POD), false);
});

Deno.test("joinPodNamespaces rewrites a typical CRI container spec and keeps everything else", () => {
  const spec: OciSpec = {
    ociVersion: "1.1.0",
    process: { args: ["sh"] },
    annotations: { "io.kubernetes.cri.sandbox-id": "sb1" },
    linux: {
      cgroupsPath: "/kubepods/pod1/c1",
      namespaces: [
        { type: "pid" },
        { type: "ipc", path: "/proc/0/ns/ipc" },
        { type: "uts", path: "/proc/0/ns/uts" },
        { type: "mount" },
        { type: "network", path: "/proc/0/ns/net" },
      ],
      seccomp: { defaultAction: "SCMP_ACT_ERRNO" },
    },
    custom: { kept: true },
  };
  const before = structuredClone(spec);
  assert.equal(joinPodNamespaces(spec, POD), true);
  assert.deepEqual(spec.linux!.namespaces, [
    { type: "pid" },
    { type: "ipc", path: POD.ipc },
    { type: "uts", path: POD.uts },
    { type: "mount" },
    { type: "network", path: POD.network },
  ]);
  assert.deepEqual({ ...spec, linux: { ...spec.linux, namespaces: undefined } }, {
    ...before,
    linux: { ...before.linux, namespaces: undefined },
  });
});

const nsTypes = fc.constantFrom("network", "net", "ipc", "uts", "pid", "mount", "user", "cgroup");
const nsPath = fc.option(
  fc.oneof(
    fc.constantFrom("", "/proc/0/ns/net", "/proc/0/ns/ipc", "/proc/0/ns/pid", "/proc/0/ns/uts"),
    fc.stringMatching(
      /^\/(proc\/[1-9][0-9]{0,4}\/ns\/[a-z]{2,6}|var\/run\/netns\/[a-z0-9-]{1,10})$/,
    ),
  ),
  { nil: undefined },
);
const nsArb: fc.Arbitrary<OciNamespace> = fc
  .record({ type: nsTypes, path: nsPath })
  .map(({ type, path }) => (path === undefined ? { type } : { type, path }));
const podArb: fc.Arbitrary<PodNamespaces> = fc.record(
  {
    network: fc.constant("/run/netns/pod"),
    ipc: fc.constant("/proc/9/ns/ipc"),
    uts: fc.constant("/proc/9/ns/uts"),
    pid: fc.constant("/proc/9/ns/pid"),
  },
  { requiredKeys: [] },
);

/** The rewrite rule, restated independently. */
function expectedPath(ns: OciNamespace, pod: PodNamespaces): string | undefined {
  const type = ns.type === "net" ? "network" : ns.type;
  if (type !== "network" && type !== "ipc" && type !== "uts" && type !== "pid") return ns.path;
  const target = pod[type];
  if (!target) return ns.path;
  const pidZero = (ns.path ?? "").startsWith("/proc/0/ns/");
  if (type === "pid") return pidZero ? target : ns.path;
  return !ns.path || pidZero ? target : ns.path;
}

Deno.test("joinPodNamespaces follows the rewrite rules and reports changes exactly (property)", () => {
  fc.assert(
    fc.property(fc.array(nsArb, { maxLength: 8 }), podArb, (list, pod) => {
      const spec = specWith(list.map((n) => ({ ...n })));
      const changed = joinPodNamespaces(spec, pod);
      const got = spec.linux!.namespaces!;
      let anyChange = false;
      list.forEach((orig, i) => {
        const want = expectedPath(orig, pod);
        assert.equal(got[i].type, orig.type);
        assert.equal(got[i].path, want);
        if (want !== orig.path) anyChange = true;
      });
      assert.equal(changed, anyChange);
    }),
  );
});

Deno.test("joinPodNamespaces is idempotent: a second call changes nothing (property)", () => {
  fc.assert(
    fc.property(fc.array(nsArb, { maxLength: 8 }), podArb, (list, pod) => {
      const spec = specWith(list.map((n) => ({ ...n })));
      joinPodNamespaces(spec, pod);
      const once = structuredClone(spec);
      assert.equal(joinPodNamespaces(spec, pod), false);
      assert.deepEqual(spec, once);
    }),
  );
});

Deno.test("joinPodNamespaces never changes an explicit path outside /proc/0 (property)", () => {
  fc.assert(
    fc.property(fc.array(nsArb, { maxLength: 8 }), podArb, (list, pod) => {
      const spec = specWith(list.map((n) => ({ ...n })));
      joinPodNamespaces(spec, pod);
      list.forEach((orig, i) => {
        if (orig.path && !orig.path.startsWith("/proc/0/ns/")) {
          assert.equal(spec.linux!.namespaces![i].path, orig.path);
        }
      });
    }),
  );
});

Deno.test("sandboxIdOf reads the CRI annotations in precedence order", () => {
  assert.equal(sandboxIdOf({}), undefined);
  assert.equal(sandboxIdOf({ annotations: {} }), undefined);
  assert.deepEqual([...SANDBOX_ID_ANNOTATIONS], [
    "io.kubernetes.cri.sandbox-id",
    "io.kubernetes.cri-o.SandboxID",
    "io.kubernetes.sandbox.id",
  ]);
  for (const k of SANDBOX_ID_ANNOTATIONS) {
    assert.equal(sandboxIdOf({ annotations: { [k]: "sb-x" } }), "sb-x");
  }
  assert.equal(
    sandboxIdOf({
      annotations: {
        "io.kubernetes.sandbox.id": "third",
        "io.kubernetes.cri-o.SandboxID": "second",
        "io.kubernetes.cri.sandbox-id": "first",
      },
    }),
    "first",
  );
  assert.equal(
    sandboxIdOf({
      annotations: { "io.kubernetes.cri.sandbox-id": "", "io.kubernetes.sandbox.id": "third" },
    }),
    "third",
    "an empty value does not count",
  );
});

Deno.test("hasOwnPidNamespace is true only for a pid namespace without a path", () => {
  assert.equal(hasOwnPidNamespace({}), false);
  assert.equal(hasOwnPidNamespace(specWith([])), false);
  assert.equal(hasOwnPidNamespace(specWith([{ type: "network" }])), false);
  assert.equal(hasOwnPidNamespace(specWith([{ type: "pid" }])), true);
  assert.equal(hasOwnPidNamespace(specWith([{ type: "pid", path: "" }])), true);
  assert.equal(hasOwnPidNamespace(specWith([{ type: "pid", path: "/proc/9/ns/pid" }])), false);
});

Deno.test("a container joining the pod's pid namespace no longer has its own", () => {
  const spec = specWith([{ type: "pid", path: "/proc/0/ns/pid" }]);
  joinPodNamespaces(spec, POD);
  assert.equal(hasOwnPidNamespace(spec), false);
  const own = specWith([{ type: "pid" }]);
  joinPodNamespaces(own, POD);
  assert.equal(hasOwnPidNamespace(own), true);
});

Deno.test("oci: a container whose mounts propagate back to the node (Bidirectional)", () => {
  assert.equal(propagatesToNode({}), false);
  const bind = (options: string[]) => ({ destination: "/v", type: "bind", source: "/v", options });
  assert.equal(propagatesToNode({ mounts: [bind(["rbind", "rslave"])] }), false);
  assert.equal(propagatesToNode({ mounts: [bind(["rbind", "rprivate"])] }), false);
  assert.equal(propagatesToNode({ mounts: [bind(["rbind", "rshared"])] }), true);
  assert.equal(propagatesToNode({ mounts: [bind(["shared"])] }), true);
  assert.equal(propagatesToNode({ linux: { rootfsPropagation: "rshared" } }), true);
  assert.equal(propagatesToNode({ linux: { rootfsPropagation: "rslave" } }), false);
});
