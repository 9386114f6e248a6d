// Generates TypeScript for the project's .proto files with the pinned ts-proto
// (scripts/proto/package-lock.json) and the system protoc. Output goes to
// src/gen/ and is committed; `--check` regenerates into a temporary directory
// and fails when the committed output differs (the test suite runs it);
// `--missing` prints which of its tools this machine lacks (nothing when it
// has them all), so the suite can skip the check instead of failing it.
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const out = join(root, "src/gen");
const plugin = join(root, "scripts/proto/node_modules/.bin/protoc-gen-ts_proto");
// protoc comes from PyPI's grpcio-tools (pinned in scripts/setup.sh): Debian's 3.21
// is too old for the CRI proto (it uses the `debug_redact` field option).
const venv = join(root, ".tools/protoc-venv");
const python = join(venv, "bin/python");

const options = [
  "importSuffix=.ts",
  "outputServices=generic-definitions",
  "forceLong=bigint",
  "esModuleInterop=true",
  "useDate=false",
  "outputJsonMethods=false",
  "outputPartialMethods=true",
  "oneof=unions",
  "useOptionals=none",
  "exportCommonSymbols=false",
  "outputTypeRegistry=false",
].join(",");

/** One protoc run per include root, so packages that share names stay apart. */
const groups: { name: string; includes: string[]; files: string[] }[] = [
  {
    name: "containerd",
    includes: ["proto/github.com/containerd/containerd/api"],
    files: [
      "services/sandbox/v1/sandbox.proto",
      "runtime/sandbox/v1/sandbox.proto",
      "runtime/task/v2/shim.proto",
      "runtime/task/v3/shim.proto",
      "events/task.proto",
      "events/sandbox.proto",
      "services/ttrpc/events/v1/events.proto",
      "services/streaming/v1/streaming.proto",
      "types/transfer/streaming.proto",
      "types/runc/options/oci.proto",
    ],
  },
  {
    name: "cgroups",
    includes: ["proto/github.com/containerd/cgroups"],
    files: ["cgroup1/stats/metrics.proto", "cgroup2/stats/metrics.proto"],
  },
  {
    name: "ttrpc",
    includes: ["proto/github.com/containerd/ttrpc", "proto"],
    files: ["request.proto"],
  },
  {
    name: "cri",
    includes: ["proto/k8s.io/cri-api/pkg/apis/runtime/v1"],
    files: ["api.proto"],
  },
  {
    name: "kuasar",
    includes: ["proto/github.com/kuasar-io/kuasar/vmm/common/src/protos"],
    files: ["sandbox.proto", "streaming.proto"],
  },
];

/** grpc_tools' directory of well-known .proto files, or undefined without grpcio-tools. */
async function wellKnownProtos(): Promise<string | undefined> {
  try {
    const probe = await new Deno.Command(python, {
      args: ["-c", "import grpc_tools, os; print(os.path.dirname(grpc_tools.__file__))"],
      stderr: "null",
    }).output();
    if (!probe.success) return undefined;
    return join(new TextDecoder().decode(probe.stdout).trim(), "_proto");
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined; // no venv
    throw e;
  }
}

/** Which tool this machine lacks to generate, or undefined when it has them all. */
async function missingTool(): Promise<string | undefined> {
  if (await wellKnownProtos() === undefined) {
    return `grpcio-tools is missing (${venv}): run scripts/setup.sh`;
  }
  try {
    if (((await Deno.stat(plugin)).mode ?? 0) & 0o111) return undefined;
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return `ts-proto is missing (${plugin}): run scripts/setup.sh`;
}

async function generate(dest: string): Promise<void> {
  const wellKnown = await wellKnownProtos();
  if (wellKnown === undefined) throw new Error("grpcio-tools is missing: run scripts/setup.sh");
  for (const g of groups) {
    const target = join(dest, g.name);
    await Deno.mkdir(target, { recursive: true });
    const args = [
      `--plugin=protoc-gen-ts_proto=${plugin}`,
      ...g.includes.map((i) => `-I${join(root, i)}`),
      `-I${wellKnown}`,
      `--ts_proto_out=${target}`,
      `--ts_proto_opt=${options}`,
      ...g.files,
    ];
    const r = await new Deno.Command(python, {
      args: ["-m", "grpc_tools.protoc", ...args],
      cwd: root,
    })
      .output();
    if (!r.success) {
      throw new Error(`protoc failed for group "${g.name}": ${new TextDecoder().decode(r.stderr)}`);
    }
  }
}

async function listFiles(dir: string, base = dir): Promise<string[]> {
  const files: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    const p = join(dir, e.name);
    if (e.isDirectory) files.push(...await listFiles(p, base));
    else files.push(relative(base, p));
  }
  return files.sort();
}

if (Deno.args.includes("--missing")) {
  console.log(await missingTool() ?? "");
} else if (Deno.args.includes("--check")) {
  const tmp = await Deno.makeTempDir({ prefix: "kuasar-gen-" });
  try {
    await generate(tmp);
    const want = await listFiles(tmp);
    const have: string[] = [];
    for (const g of groups) {
      have.push(
        ...(await listFiles(join(out, g.name)).catch(() => [])).map((f) => join(g.name, f)),
      );
    }
    const stale: string[] = [];
    for (const f of new Set([...want, ...have])) {
      const a = await Deno.readTextFile(join(tmp, f)).catch(() => null);
      const b = await Deno.readTextFile(join(out, f)).catch(() => null);
      if (a !== b) stale.push(f);
    }
    if (stale.length) {
      console.error(`src/gen is stale; run "deno task gen:proto". Differs: ${stale.join(", ")}`);
      Deno.exit(1);
    }
    console.log(`src/gen is up to date (${want.length} files)`);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
} else {
  for (const g of groups) await Deno.remove(join(out, g.name), { recursive: true }).catch(() => {});
  await generate(out);
  console.log(`generated protobuf code under src/gen for ${groups.map((g) => g.name).join(", ")}`);
}
