/**
 * The container images the containerd end-to-end tests and critest use, built locally as an
 * OCI image-layout archive: the test machines reach no registry, and containerd (and critest)
 * only pull an image that is not already in the store. Every image is the busybox-static rootfs
 * of `rootfs.ts` as one uncompressed layer, plus a small second layer for the web server. The
 * archive is written once into a cache keyed by the image definitions and imported into each
 * test containerd with `ctr images import`.
 *
 * @module
 */
import { join } from "node:path";
import { ensureBusyboxRootfs } from "./rootfs.ts";
import { buildWasmModules, wasmToolsUnavailable } from "./wasm.ts";

/** critest's default container image (`defaultTestContainerImage`). */
export const BUSYBOX_IMAGE = "registry.k8s.io/e2e-test-images/busybox:1.29-2";
/** What `crictl run`/`create` examples and most docs use. */
export const DOCKER_BUSYBOX_IMAGE = "docker.io/library/busybox:latest";
/** critest's web server (`webServerTestImage`, and the hostPID test's hard-coded nginx). */
export const WEB_SERVER_IMAGE = "registry.k8s.io/e2e-test-images/nginx:1.14-2";
/** critest's multi-container web server (hard-coded), the same server as `WEB_SERVER_IMAGE`. */
export const HTTPD_IMAGE = "registry.k8s.io/e2e-test-images/httpd:2.4.39-4";
/** critest's host-network web server (hard-coded), listening on port 12003. */
export const HOSTNET_WEB_SERVER_IMAGE =
  `gcr.io/k8s-staging-cri-tools/hostnet-nginx-${goArch()}:latest`;
/** containerd 2.4's default sandbox ("pause") image, needed by the podsandbox controller. */
export const PAUSE_IMAGE = "registry.k8s.io/pause:3.10.2";
/** The Wasm test image (see `wasmImageDef`). */
export const WASM_IMAGE = "localhost/kuasar-test/wasm-echo:1";
/** Every image `importTestImages` provides. */
export const TEST_IMAGES: readonly string[] = [
  BUSYBOX_IMAGE,
  DOCKER_BUSYBOX_IMAGE,
  WEB_SERVER_IMAGE,
  HTTPD_IMAGE,
  HOSTNET_WEB_SERVER_IMAGE,
  PAUSE_IMAGE,
];

/** Where the built archives are cached. */
export const IMAGE_CACHE = Deno.env.get("KUASAR_TEST_IMAGES") ?? "/var/cache/kuasar-test/images";

/** What the web server images serve at `/`. */
export const WEB_SERVER_INDEX = "<html><body><h1>kuasar test web server</h1></body></html>\n";

const PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/**
 * The web server: busybox `httpd -f -p $PORT -h /www`, started by a script named `nginx` that
 * imitates what critest checks of the real images: its process name is `nginx` (a script's
 * process name is its file name; hostPID test: `pidof nginx`), it writes `/var/run/nginx.pid`,
 * its command line says `master process` (the image's Cmd; ContainerPID test), and its log
 * says `httpd` (multi-container log test). It forwards SIGTERM to httpd.
 */
const NGINX_SCRIPT = `#!/bin/sh
echo $$ > /var/run/nginx.pid
port=\${PORT:-80}
echo "httpd: serving /www on port $port"
httpd -f -p "$port" -h /www &
child=$!
trap 'kill -TERM $child; wait $child; exit 0' TERM INT
wait $child
`;

/** Debian's busybox-static has no pgrep applet; critest's exec-timeout test runs `pgrep sleep`. */
const PGREP_SCRIPT = `#!/bin/sh
# pgrep PATTERN: pids whose process name matches the extended regex PATTERN
found=1
for d in /proc/[0-9]*; do
  name=$(cat "$d/comm" 2>/dev/null) || continue
  if echo "$name" | grep -qE -- "$1"; then echo "\${d#/proc/}"; found=0; fi
done
exit $found
`;

/**
 * The pod's "pause" process for containerd's podsandbox controller (the `runc` handler). Its
 * name is `pause`, as the real one's; it waits in a `tail` rather than a `sleep`, since the
 * pod's containers may share its pid namespace and critest checks that no `sleep` is left.
 * As pid 1 it ignores signals it has no handler for: it traps TERM so that a stop is quick.
 */
const PAUSE_SCRIPT = `#!/bin/sh
trap 'exit 0' TERM INT
while :; do tail -f /dev/null & wait $!; done
`;

/** Debian's busybox-static has no ipcs applet; critest's host-IPC tests run `ipcs -m`. */
const IPCS_SCRIPT = `#!/bin/sh
# ipcs [-m]: the System V shared memory segments of this IPC namespace
echo "------ Shared Memory Segments --------"
echo "key        shmid      owner      perms      bytes      nattch"
tail -n +2 /proc/sysvipc/shm 2>/dev/null | while read -r key id perms size cpid lpid n uid rest; do
  printf '%-10s %-10s %-10s %-10s %-10s %s\\n' "$key" "$id" "$uid" "$perms" "$size" "$n"
done
`;

/** The accounts of the real busybox images (critest runs as user name `nobody`). */
const PASSWD = `root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
`;
const GROUP = `root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
wheel:x:10:root
mail:x:12:
www-data:x:33:
operator:x:37:
staff:x:50:
users:x:100:
nogroup:x:65534:
`;

/** A file of an extra layer: path relative to the image root, content (or a file to copy) and mode. */
interface ExtraFile {
  readonly path: string;
  readonly content: string;
  /** Copied instead of `content` when set (binary files). */
  readonly source?: string;
  readonly mode: number;
}

/** One image of the archive. */
interface ImageDef {
  readonly name: string;
  /** The OCI image config's `config` object. */
  readonly config: Record<string, unknown>;
  /** Files of a second layer, if any (directories are created as needed). */
  readonly extra?: readonly ExtraFile[];
  /** No busybox base layer: the extra layer is the whole image (Wasm images). */
  readonly bare?: boolean;
}

/** Files added to the busybox rootfs in the base layer of every image. */
const BASE_EXTRA: readonly ExtraFile[] = [
  { path: "bin/pgrep", content: PGREP_SCRIPT, mode: 0o755 },
  { path: "bin/ipcs", content: IPCS_SCRIPT, mode: 0o755 },
  { path: "etc/passwd", content: PASSWD, mode: 0o644 },
  { path: "etc/group", content: GROUP, mode: 0o644 },
];

const WEB_EXTRA: readonly ExtraFile[] = [
  { path: "www/index.html", content: WEB_SERVER_INDEX, mode: 0o644 },
  { path: "usr/sbin/nginx", content: NGINX_SCRIPT, mode: 0o755 },
  { path: "var/run/.keep", content: "", mode: 0o644 },
];

function webServer(name: string, port: number): ImageDef {
  return {
    name,
    config: {
      Env: [PATH_ENV, `PORT=${port}`],
      Entrypoint: ["/usr/sbin/nginx"],
      Cmd: ["nginx: master process nginx -g daemon off;"], // only shown in /proc/1/cmdline
      WorkingDir: "/",
      ExposedPorts: { [`${port}/tcp`]: {} },
      StopSignal: "SIGTERM",
    },
    extra: WEB_EXTRA,
  };
}

const SHELL = { Env: [PATH_ENV], Cmd: ["sh"], WorkingDir: "/" };

const IMAGE_DEFS: readonly ImageDef[] = [
  { name: BUSYBOX_IMAGE, config: SHELL },
  { name: DOCKER_BUSYBOX_IMAGE, config: SHELL },
  webServer(WEB_SERVER_IMAGE, 80),
  webServer(HTTPD_IMAGE, 80),
  webServer(HOSTNET_WEB_SERVER_IMAGE, 12003),
  {
    name: PAUSE_IMAGE,
    config: { Env: [PATH_ENV], Entrypoint: ["/pause"], WorkingDir: "/" },
    extra: [{ path: "pause", content: PAUSE_SCRIPT, mode: 0o755 }],
  },
];

/** Bump to rebuild every cached archive when the way they are built changes. */
const FORMAT = 4;

const enc = new TextEncoder();

function goArch(): string {
  switch (Deno.build.arch) {
    case "x86_64":
      return "amd64";
    case "aarch64":
      return "arm64";
    default:
      return Deno.build.arch;
  }
}

async function sha256Hex(data: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>));
  return Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function run(cmd: string, args: string[]): Promise<void> {
  const r = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  if (!r.success) {
    const err = new TextDecoder().decode(r.stderr) + new TextDecoder().decode(r.stdout);
    throw new Error(`${cmd} ${args.join(" ")} failed (${r.code}): ${err.trim()}`);
  }
}

/** Flags that make a tar reproducible: same input tree, same bytes, same digest. */
const REPRODUCIBLE = [
  "--sort=name",
  "--owner=0",
  "--group=0",
  "--numeric-owner",
  "--mtime=@0",
  "--format=gnu",
];

/** An OCI descriptor. */
interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: { architecture: string; os: string };
  annotations?: Record<string, string>;
}

/** A content-addressed blob store being filled under `<layout>/blobs/sha256`. */
class Blobs {
  constructor(readonly dir: string) {}

  async add(mediaType: string, data: Uint8Array): Promise<Descriptor> {
    const hex = await sha256Hex(data);
    await Deno.writeFile(join(this.dir, hex), data);
    return { mediaType, digest: `sha256:${hex}`, size: data.length };
  }

  json(mediaType: string, value: unknown): Promise<Descriptor> {
    return this.add(mediaType, enc.encode(JSON.stringify(value)));
  }
}

/** Tars `dir`'s content (as `./…` entries) reproducibly into a layer blob. */
async function layerOf(blobs: Blobs, dir: string, scratch: string): Promise<Descriptor> {
  const file = join(scratch, `layer-${crypto.randomUUID()}.tar`);
  await run("tar", ["--create", "--file", file, "--directory", dir, ...REPRODUCIBLE, "."]);
  const data = await Deno.readFile(file);
  await Deno.remove(file);
  return await blobs.add("application/vnd.oci.image.layer.v1.tar", data);
}

async function writeFiles(dir: string, files: readonly ExtraFile[]): Promise<void> {
  for (const f of files) {
    const p = join(dir, f.path);
    await Deno.mkdir(join(p, ".."), { recursive: true, mode: 0o755 });
    if (f.source) await Deno.copyFile(f.source, p);
    else await Deno.writeTextFile(p, f.content);
    await Deno.chmod(p, f.mode);
  }
}

async function extraLayer(
  blobs: Blobs,
  files: readonly ExtraFile[],
  scratch: string,
): Promise<Descriptor> {
  const dir = await Deno.makeTempDir({ dir: scratch, prefix: "extra-" });
  await Deno.chmod(dir, 0o755);
  await writeFiles(dir, files);
  return await layerOf(blobs, dir, scratch);
}

/**
 * Copies the busybox rootfs to `dest` with every applet symlink to busybox turned into a hard
 * link, as in the real busybox images: masking one applet (critest masks `/bin/ls` with a bind
 * mount of /dev/null) must not mask busybox itself, which a symlink would, being followed.
 */
async function stageRootfs(src: string, dest: string): Promise<void> {
  const st = await Deno.lstat(src);
  await Deno.mkdir(dest, { recursive: true });
  await Deno.chmod(dest, (st.mode ?? 0o755) & 0o7777);
  const entries = await Array.fromAsync(Deno.readDir(src));
  entries.sort((a, b) => (a.name === "busybox" ? -1 : b.name === "busybox" ? 1 : 0));
  for (const e of entries) {
    const from = join(src, e.name), to = join(dest, e.name);
    if (e.isDirectory) {
      await stageRootfs(from, to);
    } else if (e.isSymlink) {
      const target = await Deno.readLink(from);
      if (target === "busybox" || target.endsWith("/bin/busybox")) {
        await Deno.link(join(dest, "busybox"), to);
      } else {
        await Deno.symlink(target, to);
      }
    } else {
      await Deno.copyFile(from, to);
    }
  }
}

/**
 * A Wasm image: one layer holding the echo module as /app.wasm, its entrypoint, and nothing
 * else (no shell, no libc), as images built for Wasm runtimes are. Left out when the Wasm
 * toolchain is missing.
 */
async function wasmImageDef(): Promise<ImageDef | undefined> {
  if (wasmToolsUnavailable()) return undefined;
  const modules = await buildWasmModules();
  return {
    name: WASM_IMAGE,
    bare: true,
    config: {
      Env: ["GREETING=hello from a wasm image"],
      Entrypoint: ["/app.wasm"],
      Cmd: ["from-cmd"],
    },
    extra: [{ path: "app.wasm", content: "", source: modules.echo, mode: 0o755 }],
  };
}

/** Every image of the archive. */
async function imageDefs(): Promise<readonly ImageDef[]> {
  const wasm = await wasmImageDef();
  return wasm ? [...IMAGE_DEFS, wasm] : IMAGE_DEFS;
}

/** The cache key: everything the archive's content depends on. */
async function archiveKey(defs: readonly ImageDef[]): Promise<string> {
  const rootfs = await ensureBusyboxRootfs();
  const busybox = await Deno.stat(join(rootfs, "bin/busybox"));
  const key = JSON.stringify({
    FORMAT,
    defs,
    BASE_EXTRA,
    arch: goArch(),
    busybox: busybox.size,
  });
  return (await sha256Hex(enc.encode(key))).slice(0, 16);
}

/**
 * Builds (once; cached) the OCI archive holding every test image and returns its path. Each
 * manifest in `index.json` carries its full name as `io.containerd.image.name`, which
 * `ctr images import` uses as the image name.
 */
export async function buildTestImagesArchive(): Promise<string> {
  const defs = await imageDefs();
  const out = join(IMAGE_CACHE, `test-images-${await archiveKey(defs)}.tar`);
  try {
    await Deno.stat(out);
    return out;
  } catch { /* build it */ }
  const rootfs = await ensureBusyboxRootfs();
  await Deno.mkdir(IMAGE_CACHE, { recursive: true });
  const scratch = await Deno.makeTempDir({ dir: IMAGE_CACHE, prefix: ".build-" });
  try {
    const layout = join(scratch, "layout");
    const blobs = new Blobs(join(layout, "blobs", "sha256"));
    await Deno.mkdir(blobs.dir, { recursive: true });
    const staged = join(scratch, "rootfs");
    await stageRootfs(rootfs, staged);
    await writeFiles(staged, BASE_EXTRA);
    const base = await layerOf(blobs, staged, scratch);
    const extras = new Map<readonly ExtraFile[], Descriptor>();
    // An uncompressed layer's diff id is its own digest.
    const manifests: Descriptor[] = [];
    for (const def of defs) {
      const layers = def.bare ? [] : [base];
      if (def.extra) {
        let layer = extras.get(def.extra);
        if (!layer) extras.set(def.extra, layer = await extraLayer(blobs, def.extra, scratch));
        layers.push(layer);
      }
      const config = await blobs.json("application/vnd.oci.image.config.v1+json", {
        created: "1970-01-01T00:00:00Z",
        architecture: goArch(),
        os: "linux",
        config: def.config,
        rootfs: { type: "layers", diff_ids: layers.map((l) => l.digest) },
        history: layers.map((_, i) => ({
          created: "1970-01-01T00:00:00Z",
          created_by: i === 0 ? "kuasar tests: busybox-static rootfs" : "kuasar tests: extra files",
        })),
      });
      const manifest = await blobs.json("application/vnd.oci.image.manifest.v1+json", {
        schemaVersion: 2,
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        config,
        layers,
      });
      manifests.push({
        ...manifest,
        platform: { architecture: goArch(), os: "linux" },
        annotations: {
          "io.containerd.image.name": def.name,
          "org.opencontainers.image.ref.name": def.name.slice(def.name.lastIndexOf(":") + 1),
        },
      });
    }
    await Deno.writeTextFile(
      join(layout, "oci-layout"),
      JSON.stringify({ imageLayoutVersion: "1.0.0" }),
    );
    await Deno.writeTextFile(
      join(layout, "index.json"),
      JSON.stringify({
        schemaVersion: 2,
        mediaType: "application/vnd.oci.image.index.v1+json",
        manifests,
      }),
    );
    const tmp = join(scratch, "archive.tar");
    await run("tar", [
      "--create",
      "--file",
      tmp,
      "--directory",
      layout,
      ...REPRODUCIBLE,
      "oci-layout",
      "index.json",
      "blobs",
    ]);
    await Deno.rename(tmp, out); // atomic: a concurrent builder produces the same bytes
    for await (const e of Deno.readDir(IMAGE_CACHE)) {
      if (/^test-images-[0-9a-f]+\.tar$/.test(e.name) && join(IMAGE_CACHE, e.name) !== out) {
        await Deno.remove(join(IMAGE_CACHE, e.name)).catch(() => {}); // built by older code
      }
    }
    return out;
  } finally {
    await Deno.remove(scratch, { recursive: true }).catch(() => {});
  }
}

/**
 * Imports every test image into the `k8s.io` namespace (the one CRI uses) of the containerd at
 * `containerdSocket`, unpacked for its default snapshotter, through ctr's default transfer API.
 */
export async function importTestImages(ctrBin: string, containerdSocket: string): Promise<void> {
  const archive = await buildTestImagesArchive();
  await run(ctrBin, [
    "--address",
    containerdSocket,
    "--namespace",
    "k8s.io",
    "images",
    "import",
    "--all-platforms",
    archive,
  ]);
}

/**
 * critest specs that cannot pass with these images offline, as a `--ginkgo.skip` regex: the image
 * suites pull from registries; AppArmor, SELinux and NRI are absent here; `MaskedPaths` masks
 * `/bin/ls` but busybox's shell runs applets without exec; `SupplementalGroupsPolicy` and
 * `NoNewPrivs` need images of their own.
 */
export const CRITEST_OFFLINE_SKIP = [
  "Image Manager",
  "Image Consistency",
  "Image Identifier",
  "Image Volume",
  "AppArmor",
  "SELinux",
  "NRI",
  "MaskedPaths",
  "SupplementalGroupsPolicy",
  "NoNewPrivs",
].join("|");

/** Writes the YAML critest's `--test-images-file` reads (both keys it knows). */
export async function writeCritestImagesFile(path: string): Promise<void> {
  await Deno.writeTextFile(
    path,
    `defaultTestContainerImage: ${BUSYBOX_IMAGE}\nwebServerTestImage: ${WEB_SERVER_IMAGE}\n`,
  );
}
