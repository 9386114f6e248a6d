/**
 * cgroup v2 for real: this machine's host is cgroup v1, operators' nodes are
 * mostly v2. The guest image's kernel mounts cgroup2 only, so the runC
 * sandboxer's cgroup tests (tests/vm/cgroup_v2_suite.ts: lifecycle, exec,
 * Metrics, Update, pause/resume, OOM, Stop) are bundled with the sandboxer
 * and run by `deno test` inside a VM booted from that image (`kuasar.init=`
 * runs them instead of the agent), with runc and busybox from the image.
 * The VM shares a directory with the host over virtiofs: the bundles and
 * rootfs go in, the test output comes out.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { qemuArgv } from "../../src/adapters/hypervisor/qemu/qemu_command.ts";
import { kvmUsable } from "../../src/adapters/hypervisor/kvm.ts";
import { GUEST_IMAGE, has, qemuOnly, skipUnless, vmUnavailable } from "../support/env.ts";
import { ensureBusyboxRootfs } from "../support/rootfs.ts";

const REPO = fileURLToPath(new URL("../..", import.meta.url));
const VIRTIOFSD = "/usr/lib/qemu/virtiofsd";
/** Generous: the suite starts a Deno daemon per test under emulation. */
const TIMEOUT_MS = 20 * 60_000;
/** The guest's /init runs `kuasar.init=` programs only from a share with this tag. */
const TEST_TAG = "kuasar-test";
const GUEST_TEST_DIR = "/run/kuasar-test";

function unavailable(): string | undefined {
  const vm = qemuOnly("a guest booted from the QEMU argv") ?? vmUnavailable();
  if (vm) return vm;
  try {
    Deno.statSync(VIRTIOFSD);
  } catch {
    return `${VIRTIOFSD} is missing (qemu-system-common)`;
  }
  return has("busybox") ? undefined : "busybox-static is not installed (the test rootfs)";
}

async function ok(argv: string[], cwd = REPO): Promise<void> {
  const r = await new Deno.Command(argv[0], { args: argv.slice(1), cwd }).output();
  if (!r.success) {
    throw new Error(`${argv.join(" ")}: ${new TextDecoder().decode(r.stderr).slice(-2000)}`);
  }
}

/**
 * What the guest runs as PID 1 (busybox sh): first it moves the root from the initramfs to a
 * tmpfs, as a node's root is a real file system (runc's pivot_root cannot leave an initramfs),
 * then it runs the suite and powers off.
 */
function guestScript(): string {
  const share = GUEST_TEST_DIR;
  return `#!/bin/sh
if [ ! -e /.on-tmpfs ]; then
  mkdir /newroot && mount -t tmpfs -o size=1500m tmpfs /newroot
  for d in /*; do
    case "$d" in /proc|/sys|/dev|/run|/tmp|/newroot) ;; *) cp -a "$d" /newroot/ ;; esac
  done
  mkdir -p /newroot/proc /newroot/sys /newroot/dev /newroot/run /newroot/tmp
  touch /newroot/.on-tmpfs
  for m in /proc /sys /dev /run /tmp; do mount --move "$m" "/newroot$m"; done
  exec switch_root /newroot ${share}/run.sh
fi
export HOME=/run DENO_DIR=/tmp/deno DENO_NO_UPDATE_CHECK=1 NO_COLOR=1 PATH=/bin:/usr/bin:/usr/sbin
export KUASAR_TEST_ENTRY=${share}/dist/kuasar.js KUASAR_TEST_ROOTFS=/tmp/rootfs
mkdir -p /tmp/rootfs && cp -a ${share}/rootfs/. /tmp/rootfs/
{
  echo "fs: $(awk '$2 == "/sys/fs/cgroup" { print $3 }' /proc/mounts)"
  echo "controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
  start=$(cut -d' ' -f1 /proc/uptime)
  cd /tmp && /usr/bin/deno test -A --no-check --unstable-vsock ${share}/suite.js
  echo "exit: $?"
  echo "seconds: $(cut -d' ' -f1 /proc/uptime) - $start"
} > ${share}/result.txt 2>&1
sync
poweroff -f
`;
}

Deno.test({
  name: "cgroup v2: the runC sandboxer's cgroup tests pass inside a VM on pure cgroup v2",
  ...skipUnless(unavailable(), "cgroup v2 in a VM"),
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "k-cg2-" });
    const share = join(dir, "share");
    const children: Deno.ChildProcess[] = [];
    try {
      await Deno.mkdir(share, { mode: 0o755 });
      // What goes in: the sandboxer bundle, the suite bundle, the busybox rootfs, the script.
      await ok([Deno.execPath(), "run", "-A", "scripts/bundle.ts", join(share, "dist")]);
      await ok([
        Deno.execPath(),
        "bundle",
        "--platform",
        "deno",
        "-o",
        join(share, "suite.js"),
        "tests/vm/cgroup_v2_suite.ts",
      ]);
      await ok(["cp", "-a", `${await ensureBusyboxRootfs()}/.`, join(share, "rootfs")]);
      await Deno.writeTextFile(join(share, "run.sh"), guestScript(), { mode: 0o755 });
      await Deno.chmod(join(share, "run.sh"), 0o755);

      const fs = join(dir, "fs.sock");
      children.push(
        new Deno.Command(VIRTIOFSD, {
          args: [`--socket-path=${fs}`, "-o", `source=${share}`, "-o", "cache=none"],
          stdout: "null",
          stderr: "null",
        }).spawn(),
      );
      for (let i = 0; i < 100 && !(await Deno.stat(fs).then(() => true, () => false)); i++) {
        await new Promise((r) => setTimeout(r, 50));
      }
      const kvm = kvmUsable();
      const argv = qemuArgv({
        name: "kuasar-cgroup-v2",
        binary: "qemu-system-x86_64",
        kernel: join(GUEST_IMAGE, "vmlinuz"),
        initrd: join(GUEST_IMAGE, "initramfs.img"),
        kernelParams: `kuasar.init=${GUEST_TEST_DIR}/run.sh`,
        memoryMiB: 2048,
        vcpus: 2,
        accel: kvm.usable ? "kvm" : "tcg",
        qmpSocket: join(dir, "qmp.sock"),
        consoleLog: join(dir, "console.log"),
        virtiofs: [{ socket: fs, tag: TEST_TAG }],
      });
      const t0 = performance.now();
      const qemu = new Deno.Command(argv[0], {
        args: argv.slice(1),
        stdout: "null",
        stderr: "inherit",
      }).spawn();
      children.push(qemu);
      const timer = setTimeout(() => qemu.kill("SIGKILL"), TIMEOUT_MS);
      const status = await qemu.status;
      clearTimeout(timer);
      const seconds = ((performance.now() - t0) / 1000).toFixed(0);
      const result = await Deno.readTextFile(join(share, "result.txt")).catch(async () =>
        `no result.txt; console:\n${await Deno.readTextFile(join(dir, "console.log"))}`
      );
      console.log(`VM (${kvm.usable ? "KVM" : "TCG"}) ran the suite in ${seconds} s:`);
      console.log(
        result.split("\n").filter((l) => / \.\.\. (ok|FAILED|ignored)/.test(l)).join("\n"),
      );
      assert.ok(status.signal !== "SIGKILL", `the VM did not finish within ${TIMEOUT_MS} ms`);
      assert.match(result, /^fs: cgroup2$/m, result);
      assert.match(result, /^controllers: .*\bmemory\b/m, result);
      assert.match(result, /^exit: 0$/m, result.slice(-6000));
      const passed = Number(/ok \| (\d+) passed/.exec(result)?.[1] ?? 0);
      assert.ok(passed >= 6, `the suite ran its tests (${passed} passed):\n${result.slice(-3000)}`);
      // Only the named-netns test, for busybox's ip has no netns command.
      const skips = [...result.matchAll(/^SKIP (.*?):/gm)].map((m) => m[1]);
      assert.deepEqual(skips, ["runC pod in a named netns"], result.slice(-3000));
    } finally {
      for (const c of children) {
        try {
          c.kill("SIGKILL");
        } catch { /* exited */ }
        await c.status;
      }
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
