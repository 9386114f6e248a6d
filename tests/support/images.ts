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

/** critest's default container image (`defaultTestContainerImage`). */
export const BUSYBOX_IMAGE = "registry.k8s.io/e2e-test-images/busybox:1.29-2";
/** What `crictl run`/`create` examples and most docs use. */
export const DOCKER_BUSYBOX_IMAGE = "docker.io/library/busybox:latest";
/** critest's web server (`webServerTestImage`, and the hostPID test's hard-coded nginx). */
export const WEB_SERVER_IMAGE = "registry.k8s.io/e2e-test-images/nginx:1.14-2";
/** containerd 2.4's default sandbox ("pause") image, needed by the podsandbox controller. */
export const PAUSE_IMAGE = "registry.k8s.io/pause:3.10.2";
/** Every image `importTestImages` provides. */
export const TEST_IMAGES: readonly string[] = [
  BUSYBOX_IMAGE,
  DOCKER_BUSYBOX_IMAGE,
  WEB_SERVER_IMAGE,
  PAUSE_IMAGE,
];

/** Where the built archives are cached. */
export const IMAGE_CACHE = Deno.env.get("KUASAR_TEST_IMAGES") ?? "/var/cache/kuasar-test/images";

/** What the web server image serves at `/`. */
export const WEB_SERVER_INDEX = "<html><body><h1>kuasar test web server</h1></body></html>\n";

const PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/**
 * critest's hostPID test waits for `/var/run/nginx.pid` and looks for a process named `nginx`,
 * so the web server is started by a script of that name: it stays the parent of busybox
 * `httpd -f -p 80 -h /www` (a script's process name is its file name) and forwards SIGTERM.
 */
const NGINX_SCRIPT = `#!/bin/sh
echo $$ > /var/run/nginx.pid
httpd -f -p 80 -h /www &
child=$!
trap 'kill -TERM $child; wait $child; exit 0' TERM INT
wait $child
`;

/** A file of an extra layer: path relative to the image root, content and mode. */
interface ExtraFile {
  readonly path: string;
  readonly content: string;
  readonly mode: number;
}

/** One image of the archive. */
interface ImageDef {
  readonly name: string;
  /** The OCI image config's `config` object. */
  readonly config: Record<string, unknown>;
  /** Files of a second layer, if any (directories are created as needed). */
  readonly extra?: readonly ExtraFile[];
}

const IMAGE_DEFS: readonly ImageDef[] = [
  { name: BUSYBOX_IMAGE, config: { Env: [PATH_ENV], Cmd: ["sh"], WorkingDir: "/" } },
  { name: DOCKER_BUSYBOX_IMAGE, config: { Env: [PATH_ENV], Cmd: ["sh"], WorkingDir: "/" } },
  {
    name: WEB_SERVER_IMAGE,
    config: {
      Env: [PATH_ENV],
      Cmd: ["/usr/sbin/nginx"],
      WorkingDir: "/",
      ExposedPorts: { "80/tcp": {} },
      StopSignal: "SIGTERM",
    },
    extra: [
      { path: "www/index.html", content: WEB_SERVER_INDEX, mode: 0o644 },
      { path: "usr/sbin/nginx", content: NGINX_SCRIPT, mode: 0o755 },
      { path: "var/run/.keep", content: "", mode: 0o644 },
    ],
  },
  {
    name: PAUSE_IMAGE,
    config: {
      Env: [PATH_ENV],
      // pid 1 ignores signals it has no handler for: trap TERM so that stopping the pod is quick
      Cmd: ["sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait; done"],
      WorkingDir: "/",
    },
  },
];

/** Bump to rebuild every cached archive when the way they are built changes. */
const FORMAT = 1;

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

async function extraLayer(
  blobs: Blobs,
  files: readonly ExtraFile[],
  scratch: string,
): Promise<Descriptor> {
  const dir = await Deno.makeTempDir({ dir: scratch, prefix: "extra-" });
  await Deno.chmod(dir, 0o755);
  for (const f of files) {
    const p = join(dir, f.path);
    await Deno.mkdir(join(p, ".."), { recursive: true, mode: 0o755 });
    await Deno.writeTextFile(p, f.content);
    await Deno.chmod(p, f.mode);
  }
  return await layerOf(blobs, dir, scratch);
}

/** The cache key: everything the archive's content depends on. */
async function archiveKey(): Promise<string> {
  const rootfs = await ensureBusyboxRootfs();
  const busybox = await Deno.stat(join(rootfs, "bin/busybox"));
  const key = JSON.stringify({ FORMAT, IMAGE_DEFS, arch: goArch(), busybox: busybox.size });
  return (await sha256Hex(enc.encode(key))).slice(0, 16);
}

/**
 * Builds (once; cached) the OCI archive holding every test image and returns its path. Each
 * manifest in `index.json` carries its full name as `io.containerd.image.name`, which
 * `ctr images import` uses as the image name.
 */
export async function buildTestImagesArchive(): Promise<string> {
  const out = join(IMAGE_CACHE, `test-images-${await archiveKey()}.tar`);
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
    const base = await layerOf(blobs, rootfs, scratch);
    // An uncompressed layer's diff id is its own digest.
    const manifests: Descriptor[] = [];
    for (const def of IMAGE_DEFS) {
      const layers = [base];
      if (def.extra) layers.push(await extraLayer(blobs, def.extra, scratch));
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

/** Writes the YAML critest's `--test-images-file` reads (both keys it knows). */
export async function writeCritestImagesFile(path: string): Promise<void> {
  await Deno.writeTextFile(
    path,
    `defaultTestContainerImage: ${BUSYBOX_IMAGE}\nwebServerTestImage: ${WEB_SERVER_IMAGE}\n`,
  );
}
