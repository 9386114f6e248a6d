// `deno task guest-image [--out DIR]`: builds the microVM guest image, a
// kernel and an initramfs, from Debian packages (linux-image-*-cloud-amd64,
// busybox-static, runc, crun), this Deno binary and the guest agent's bundle. The
// initramfs's /init mounts the basic file systems, loads the virtio drivers
// and execs the agent as PID 1. The result is cached: a second run with the
// same inputs does nothing. Default output: /var/lib/kuasar/guest (where
// `kuasar vmm` looks without a config file).
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { GUEST_SHARED_DIR, SHARE_TAG } from "../src/ports/agent_protocol.ts";

const root = fileURLToPath(new URL("..", import.meta.url));
const outArg = Deno.args.indexOf("--out");
const outDir = resolve(outArg >= 0 ? Deno.args[outArg + 1] : "/var/lib/kuasar/guest");
const cache = join(
  Deno.env.get("KUASAR_TOOLS_CACHE") ??
    join(Deno.env.get("HOME") ?? "/root", ".cache/kuasar-tools"),
  "guest",
);

/** Kernel modules the agent needs, in dependency order (`modinfo -F depends`): the cloud kernel builds them as modules. */
export const MODULES = [
  "drivers/virtio/virtio_ring.ko",
  "drivers/virtio/virtio.ko",
  "drivers/virtio/virtio_pci_modern_dev.ko",
  "drivers/virtio/virtio_pci_legacy_dev.ko",
  "drivers/virtio/virtio_pci.ko",
  // Firecracker's devices (virtio-mmio, described in its ACPI tables).
  "drivers/virtio/virtio_mmio.ko",
  "drivers/char/virtio_console.ko",
  "net/vmw_vsock/vsock.ko",
  "net/vmw_vsock/vmw_vsock_virtio_transport_common.ko",
  "net/vmw_vsock/vmw_vsock_virtio_transport.ko",
  "fs/fuse/fuse.ko",
  "fs/fuse/virtiofs.ko",
  "fs/overlayfs/overlay.ko",
  "drivers/block/virtio_blk.ko",
  "net/core/failover.ko",
  "drivers/net/net_failover.ko",
  "drivers/net/virtio_net.ko",
];

/**
 * How /init runs the agent. Under TCG the agent's start is mostly V8 at work:
 * --jitless keeps V8 from generating machine code, which software emulation
 * must translate again (measured: agent ready ~0.9 s sooner).
 */
const AGENT_ARGV = [
  "run",
  "-A",
  "--unstable-vsock",
  "--no-config",
  "--v8-flags=--max-semi-space-size=1,--jitless",
  "/agent/kuasar-agent.js",
];

const INIT = `#!/bin/busybox sh
# kuasar guest /init: basic file systems and drivers, then the agent as PID 1.
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin:/usr/sbin
mkdir -p /proc /sys /dev /run /tmp
mount -t proc proc /proc
echo "kuasar-init: started at $(cut -d' ' -f1 /proc/uptime)s" > /dev/console
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
# What udev makes elsewhere: crun reads \`update -r -\` from /dev/stdin.
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
ip link set lo up
for m in ${MODULES.map((m) => m.slice(m.lastIndexOf("/") + 1, -3)).join(" ")}; do
  insmod /lib/modules/$m.ko 2>/tmp/insmod.err || echo "kuasar-init: $m: $(cat /tmp/insmod.err)" > /dev/console
done
# The pod's shared directory (virtiofs), when the host gives one.
mkdir -p ${GUEST_SHARED_DIR}
mount -t virtiofs ${SHARE_TAG} ${GUEST_SHARED_DIR} 2>/dev/null
# kuasar.init=<program>: run that instead of the agent (tests running a sandboxer inside the
# guest, on its cgroup v2; see tests/integration/cgroup_v2_vm_test.ts). Only from the share
# tagged kuasar-test, which no pod's VM has: what a pod can write never replaces the agent.
if mkdir -p /run/kuasar-test && mount -t virtiofs kuasar-test /run/kuasar-test 2>/dev/null; then
  for arg in $(cat /proc/cmdline); do
    case "$arg" in kuasar.init=/run/kuasar-test/*) exec "\${arg#kuasar.init=}" ;; esac
  done
fi
rmdir /run/kuasar-test 2>/dev/null
echo "kuasar-init: $(cut -d' ' -f1 /proc/uptime)s, starting the agent" > /dev/console
export HOME=/run DENO_DIR=/var/cache/deno DENO_NO_UPDATE_CHECK=1 NO_COLOR=1
export KUASAR_HELPER=/usr/bin/kuasar-helper
exec /usr/bin/deno ${AGENT_ARGV.join(" ")}
`;

async function run(cmd: string, args: string[], opts: { cwd?: string } = {}): Promise<string> {
  const out = await new Deno.Command(cmd, { args, cwd: opts.cwd, stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
  return new TextDecoder().decode(out.stdout);
}

async function sha256(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const h = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(h, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function fileHash(path: string): Promise<string> {
  return await sha256(await Deno.readFile(path));
}

/** The cloud kernel package this Debian release points at, downloaded (cached). */
async function kernelDeb(): Promise<{ name: string; path: string }> {
  // A fresh machine may have no package lists yet.
  const deps = await run("apt-cache", ["depends", "linux-image-cloud-amd64"]).catch(async () => {
    await run("apt-get", ["update", "-qq"]);
    return await run("apt-cache", ["depends", "linux-image-cloud-amd64"]);
  });
  const name = /Depends: (linux-image-\S+-cloud-amd64)/.exec(deps)?.[1];
  if (!name) throw new Error("apt-cache knows no linux-image-cloud-amd64 (is this Debian?)");
  const dir = join(cache, "debs");
  await Deno.mkdir(dir, { recursive: true });
  const have = [...Deno.readDirSync(dir)].find((e) => e.name.startsWith(`${name}_`));
  if (have) return { name, path: join(dir, have.name) };
  await run("apt-get", ["download", name], { cwd: dir });
  const got = [...Deno.readDirSync(dir)].find((e) => e.name.startsWith(`${name}_`));
  if (!got) throw new Error(`apt-get download ${name} left no .deb`);
  return { name, path: join(dir, got.name) };
}

/**
 * The kernel's ELF image out of its bzImage, for VMMs without a bzImage loader (Cloud
 * Hypervisor, Firecracker boot its PVH entry, which Debian's kernels have): the payload's
 * place is in the boot header (setup_sects at 0x1f1, payload_offset/length at 0x248), its
 * compression told by its magic.
 */
async function extractVmlinux(bzImage: string, out: string): Promise<void> {
  const d = await Deno.readFile(bzImage);
  const v = new DataView(d.buffer, d.byteOffset, d.byteLength);
  const start = ((d[0x1f1] || 4) + 1) * 512 + v.getUint32(0x248, true);
  const payload = d.subarray(start, start + v.getUint32(0x24c, true));
  const magic = Array.from(payload.subarray(0, 6), (b) => b.toString(16).padStart(2, "0")).join("");
  const tool = magic.startsWith("02214c18")
    ? ["lz4", "-dc"]
    : magic.startsWith("28b52ffd")
    ? ["zstd", "-dcq"]
    : magic.startsWith("fd377a585a00")
    ? ["xz", "-dcq"]
    : magic.startsWith("1f8b")
    ? ["gzip", "-dc"]
    : undefined;
  if (!tool) throw new Error(`${bzImage}: a kernel payload this script cannot unpack (${magic})`);
  const p = new Deno.Command(tool[0], { args: tool.slice(1), stdin: "piped", stdout: "piped" })
    .spawn();
  const w = p.stdin.getWriter();
  const writing = w.write(payload).then(() => w.close());
  const { success, stdout } = await p.output();
  await writing.catch(() => {});
  // The decompressors stop at the end of their stream; the kernel's size trailer is ignored.
  if (stdout[0] !== 0x7f || stdout[1] !== 0x45) {
    throw new Error(`${tool[0]} did not give an ELF kernel (exit ${success ? 0 : "non-zero"})`);
  }
  await Deno.writeFile(out, stdout, { mode: 0o644 });
}

/** Shared libraries a binary needs (ldd), with the loader. */
async function libsOf(bin: string): Promise<string[]> {
  const out = await run("ldd", [bin]);
  return [...out.matchAll(/(\/\S+\.so[.\d]*)/g)].map((m) => m[1]);
}

/**
 * Runs the agent once in the image's root, as /init will (same binary, path
 * and V8 flags), up to the point where it would touch the VM's devices, so
 * Deno's V8 code cache in /var/cache/deno ships in the image and the guest
 * does not compile the agent again at every boot.
 */
async function warmCodeCache(rootfs: string): Promise<void> {
  await Deno.mkdir(join(rootfs, "var/cache/deno"), { recursive: true });
  const out = await new Deno.Command("chroot", {
    args: [rootfs, "/usr/bin/deno", ...AGENT_ARGV],
    env: {
      HOME: "/run",
      DENO_DIR: "/var/cache/deno",
      DENO_NO_UPDATE_CHECK: "1",
      NO_COLOR: "1",
      KUASAR_AGENT_WARMUP: "1",
    },
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(`agent warm-up failed: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
}

async function main(): Promise<void> {
  const busybox = "/bin/busybox";
  const runc = "/usr/sbin/runc";
  const crun = "/usr/bin/crun";
  const deno = Deno.execPath();
  const bundle = await Deno.makeTempDir({ prefix: "kuasar-agent-" });
  await run(Deno.execPath(), [
    "bundle",
    "--platform",
    "deno",
    "-o",
    join(bundle, "kuasar-agent.js"),
    join(root, "src/agent/main.ts"),
  ]);
  const agent = join(bundle, "kuasar-agent.js");
  const kernel = await kernelDeb();
  const key = await sha256(new TextEncoder().encode(JSON.stringify({
    kernel: kernel.name,
    deb: await fileHash(kernel.path),
    busybox: await fileHash(busybox),
    runc: await fileHash(runc),
    crun: await fileHash(crun),
    deno: await fileHash(deno),
    agent: await fileHash(agent),
    helper: await fileHash(join(root, "src/gen/helper/kuasar_helper_x86_64.ts")),
    init: INIT,
    modules: MODULES,
    // The uncompressed kernel beside the bzImage (Cloud Hypervisor and Firecracker boot it).
    vmlinux: 1,
  })));
  const manifestPath = join(outDir, "manifest.json");
  const old = await Deno.readTextFile(manifestPath).then(JSON.parse, () => undefined);
  if (old?.key === key) {
    console.log(`guest image up to date in ${outDir} (${key.slice(0, 12)})`);
    await Deno.remove(bundle, { recursive: true });
    return;
  }

  const work = await Deno.makeTempDir({ prefix: "kuasar-guest-" });
  try {
    const x = join(work, "deb");
    await run("dpkg", ["-x", kernel.path, x]);
    const boot = [...Deno.readDirSync(join(x, "boot"))].find((e) => e.name.startsWith("vmlinuz"))!;
    const modRoot = join(x, "lib/modules");
    const kver = [...Deno.readDirSync(modRoot)][0].name;

    const rootfs = join(work, "root");
    for (
      const d of [
        "bin",
        "usr/bin",
        "lib/modules",
        "lib64",
        "agent",
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
        "etc",
      ]
    ) {
      await Deno.mkdir(join(rootfs, d), { recursive: true });
    }
    await Deno.copyFile(busybox, join(rootfs, "bin/busybox"));
    await Deno.copyFile(deno, join(rootfs, "usr/bin/deno"));
    // runc and crun, for the pod's containers.
    await Deno.mkdir(join(rootfs, "usr/sbin"), { recursive: true });
    await Deno.copyFile(runc, join(rootfs, "usr/sbin/runc"));
    await Deno.chmod(join(rootfs, "usr/sbin/runc"), 0o755);
    // crun, the default (kuasar.oci_runtime=, [hypervisor.task] oci_runtime).
    await Deno.copyFile(crun, join(rootfs, "usr/bin/crun"));
    await Deno.chmod(join(rootfs, "usr/bin/crun"), 0o755);
    for (const lib of [...await libsOf(deno), ...await libsOf(runc), ...await libsOf(crun)]) {
      const target = join(rootfs, lib);
      await Deno.mkdir(join(target, ".."), { recursive: true });
      await Deno.copyFile(lib, target);
    }
    for (const m of MODULES) {
      await Deno.copyFile(
        join(modRoot, kver, "kernel", m),
        join(rootfs, "lib/modules", m.slice(m.lastIndexOf("/") + 1)),
      );
    }
    await Deno.copyFile(agent, join(rootfs, "agent/kuasar-agent.js"));
    await Deno.writeTextFile(join(rootfs, "init"), INIT, { mode: 0o755 });
    await Deno.chmod(join(rootfs, "init"), 0o755);
    for (const f of ["bin/busybox", "usr/bin/deno"]) await Deno.chmod(join(rootfs, f), 0o755);
    // The native helper (process monitor), unpacked here rather than at every boot.
    const helper = await import("../src/gen/helper/kuasar_helper_x86_64.ts");
    await Deno.writeFile(
      join(rootfs, "usr/bin/kuasar-helper"),
      Uint8Array.from(atob(helper.HELPER_BASE64), (c) => c.charCodeAt(0)),
      { mode: 0o755 },
    );
    await warmCodeCache(rootfs);

    // cpio (newc) of the tree, zstd-compressed: quicker to unpack than gzip under TCG.
    const list = await run("find", [".", "-print0"], { cwd: rootfs });
    const cpio = new Deno.Command("cpio", {
      args: ["--null", "-o", "-H", "newc", "--quiet"],
      cwd: rootfs,
      stdin: "piped",
      stdout: "piped",
    }).spawn();
    const w = cpio.stdin.getWriter();
    await w.write(new TextEncoder().encode(list));
    await w.close();
    const raw = join(work, "initramfs.cpio");
    await cpio.stdout.pipeTo((await Deno.open(raw, { write: true, create: true })).writable);
    if (!(await cpio.status).success) throw new Error("cpio failed");
    await run("zstd", ["-q", "-f", "-T0", "-6", raw, "-o", join(work, "initramfs.img")]);

    await Deno.mkdir(outDir, { recursive: true });
    await Deno.copyFile(join(x, "boot", boot.name), join(outDir, "vmlinuz"));
    await Deno.copyFile(join(work, "initramfs.img"), join(outDir, "initramfs.img"));
    await extractVmlinux(join(outDir, "vmlinuz"), join(outDir, "vmlinux"));
    const manifest = {
      key,
      kernel: `${kernel.name} (${kver})`,
      kernelBytes: (await Deno.stat(join(outDir, "vmlinuz"))).size,
      initramfsBytes: (await Deno.stat(join(outDir, "initramfs.img"))).size,
      uncompressedBytes: (await Deno.stat(raw)).size,
      built: new Date().toISOString(),
    };
    await Deno.writeTextFile(manifestPath, JSON.stringify(manifest, null, 2) + "\n");
    console.log(`guest image in ${outDir}: ${JSON.stringify(manifest)}`);
  } finally {
    await Deno.remove(work, { recursive: true }).catch(() => {});
    await Deno.remove(bundle, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) await main();
