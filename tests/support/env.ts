import { kvmUsable } from "../../src/adapters/hypervisor/kvm.ts";
import { vhostVsockPresent } from "../../src/adapters/doctor/probes.ts";
import { join } from "node:path";

/**
 * What the machine offers the integration tests, probed for real; a test
 * that needs something missing is skipped with the reason printed.
 *
 * @module
 */

/** Whether `bin` can be executed (found in PATH); its exit status does not matter. */
export function has(bin: string): boolean {
  try {
    new Deno.Command(bin, { args: ["--help"], stdout: "null", stderr: "null" }).outputSync();
    return true;
  } catch {
    return false;
  }
}

/** Why runC integration tests cannot run here, or undefined if they can. */
export function runcUnavailable(): string | undefined {
  if (Deno.uid() !== 0) return "needs root (runc, mounts, namespaces)";
  if (!has("runc")) return "runc is not installed";
  if (!has("busybox")) return "busybox-static is not installed (it provides the test rootfs)";
  return undefined;
}

/** `Deno.test` options that skip with a printed reason when `reason` is set. */
export function skipUnless(reason: string | undefined, name: string): { ignore: boolean } {
  if (reason) console.log(`SKIP ${name}: ${reason}`);
  return { ignore: !!reason };
}

/** Where `scripts/install_go_tools.sh` caches the tools it builds (KUASAR_TOOLS_CACHE). */
export const TOOLS_CACHE = Deno.env.get("KUASAR_TOOLS_CACHE") ??
  join(Deno.env.get("HOME") ?? "/root", ".cache/kuasar-tools");

/**
 * The runsc the gVisor suites run: KUASAR_TEST_RUNSC, else the current build
 * `scripts/install_go_tools.sh` caches, else the one on PATH (Debian's).
 */
export const TEST_RUNSC = Deno.env.get("KUASAR_TEST_RUNSC") ?? (() => {
  const cached = join(TOOLS_CACHE, "gvisor", "bin", "runsc");
  try {
    Deno.statSync(cached);
    return cached;
  } catch {
    return "runsc";
  }
})();

/** `runsc --version`'s first line, or "" when it does not run. */
function runscVersionLine(): string {
  try {
    const r = new Deno.Command(TEST_RUNSC, { args: ["--version"], stderr: "null" }).outputSync();
    return new TextDecoder().decode(r.stdout).split("\n")[0];
  } catch {
    return "";
  }
}

/**
 * Whether TEST_RUNSC predates 2023, as Debian's does (runsc version 0.0~20221219.0): such a build
 * refuses its own network stack in a CNI netns on this kernel (gvisor_sandbox_backend.ts, hintFor).
 */
export const RUNSC_BEFORE_2023 = /\b20(1\d|2[0-2])\d{4}\b/.test(runscVersionLine());

/** Why gVisor integration tests cannot run here, or undefined if they can. */
export function runscUnavailable(): string | undefined {
  return runcUnavailable() ??
    (has(TEST_RUNSC) ? undefined : `runsc (gVisor) is not installed (${TEST_RUNSC})`);
}

/** The guest image the microVM tests boot (`deno task guest-image` builds it). */
export const GUEST_IMAGE = Deno.env.get("KUASAR_GUEST_IMAGE") ?? "/var/lib/kuasar/guest";

/**
 * The hypervisor the VM suites run on: `KUASAR_TEST_VMM` (qemu, the default,
 * cloud-hypervisor, stratovirt or firecracker); `scripts/vm_suite.sh` runs them on every one a
 * machine has.
 */
export const TEST_VMM = Deno.env.get("KUASAR_TEST_VMM") ?? "qemu";

/**
 * `KUASAR_TEST_VM_TEMPLATE=1`: the VM suites run with `template = true` and `template_pool = 1`
 * (QEMU, bundles on disks), so that each pod of the suites' shape is a clone of a template VM,
 * restored at its start or taken from the pool (`scripts/vm_suite.sh --template`). The template lives on tmpfs, shared by the suites' sandboxers (one key).
 */
export const TEST_VM_TEMPLATE = Deno.env.get("KUASAR_TEST_VM_TEMPLATE") === "1";
export const TEST_TEMPLATE_DIR = "/dev/shm/kuasar-test-vm-templates";

/**
 * `lines` of one TOML table with each key once: a later line wins (a test's own keys over the
 * suites' defaults).
 */
export function tomlKeysOnce(lines: readonly string[]): string[] {
  const keyOf = (l: string) => /^\s*([A-Za-z0-9_.-]+)\s*=/.exec(l)?.[1];
  return lines.filter((l, i) => {
    const k = keyOf(l);
    return !k || !lines.slice(i + 1).some((m) => keyOf(m) === k);
  });
}

/** The `[hypervisor]` keys (after the table header) that boot the guest image on TEST_VMM. */
export function vmmTomlLines(): string[] {
  const kernel = TEST_VMM === "cloud-hypervisor" || TEST_VMM === "firecracker"
    ? "vmlinux"
    : "vmlinuz";
  const guest = TEST_VMM === "qemu" ? [] : [
    `vmm = "${TEST_VMM}"`,
    `path = "${Deno.env.get("KUASAR_TEST_VMM_PATH") ?? TEST_VMM}"`,
  ];
  guest.push(`kernel_path = "${GUEST_IMAGE}/${kernel}"`);
  guest.push(`initrd_path = "${GUEST_IMAGE}/initramfs.img"`);
  if (TEST_VM_TEMPLATE) {
    guest.push(
      'share_fs = "None"',
      "use_vsock = false",
      "template = true",
      `template_dir = "${TEST_TEMPLATE_DIR}"`,
      // A pod takes the pool's VM when it has one ready and restores its own when not: the
      // suites' bursts of pods go both ways.
      "template_pool = 1",
    );
  }
  return guest;
}

/** The vmm sandboxer's config of the containerd suites: the guest image, a 512 MiB guest. */
export const VMM_CRI_CONFIG = vmmCriConfig();

/** VMM_CRI_CONFIG with more `[hypervisor]` keys, a test's own over the suites'. */
export function vmmCriConfig(extra: readonly string[] = []): string {
  return ["[hypervisor]", ...tomlKeysOnce([...vmmTomlLines(), "memory_in_mb = 512", ...extra]), ""]
    .join("\n");
}

/** Whether `pid` is the test VMM's process (a pod's pid is its VM's). */
export function vmmAlive(pid: number): boolean {
  try {
    const cmd = Deno.readTextFileSync(`/proc/${pid}/cmdline`);
    return cmd.includes(TEST_VMM === "qemu" ? "qemu-system" : TEST_VMM);
  } catch {
    return false;
  }
}

/**
 * Why a test of what a directory shared with the guest does (a host volume seeing the guest's
 * writes) does not run on TEST_VMM, or undefined: Firecracker has none (bundles on disks).
 */
export function sharedDirectoryOnly(feature: string): string | undefined {
  if (TEST_VMM === "firecracker") {
    return `${feature} needs virtiofs, which Firecracker lacks (KUASAR_TEST_VMM=${TEST_VMM})`;
  }
  return TEST_VM_TEMPLATE
    ? `${feature} needs virtiofs, which VM templates exclude (KUASAR_TEST_VM_TEMPLATE=1)`
    : undefined;
}

/** Whether the suites' VMs get containers' bundles as disks (no shared directory). */
export const TEST_BUNDLES_ON_DISKS = TEST_VMM === "firecracker" || TEST_VM_TEMPLATE;

/** Why a test of a QEMU-only feature does not run on TEST_VMM, or undefined. */
export function qemuOnly(feature: string): string | undefined {
  return TEST_VMM === "qemu" ? undefined : `${feature} is QEMU's (KUASAR_TEST_VMM=${TEST_VMM})`;
}

/**
 * The gVisor sandboxer's config of the containerd suites: ptrace (no KVM here), TEST_RUNSC, and
 * with a runsc from before 2023 network = "host", as it refuses its own network stack in a CNI
 * netns on this kernel (see gvisor_sandbox_backend.ts, hintFor).
 */
export const GVISOR_CRI_CONFIG = [
  "[gvisor]",
  'platform = "ptrace"',
  ...(TEST_RUNSC === "runsc" ? [] : [`binary = ${JSON.stringify(TEST_RUNSC)}`]),
  ...(RUNSC_BEFORE_2023 ? ['network = "host"'] : []),
  "",
].join("\n");

/** Why a VM cannot be booted here (QEMU or the guest image missing), or undefined. */
export function vmUnavailable(): string | undefined {
  const image = (f: string) => {
    try {
      Deno.statSync(`${GUEST_IMAGE}/${f}`);
      return undefined;
    } catch {
      return `no ${f} in ${GUEST_IMAGE} (deno task guest-image builds it)`;
    }
  };
  if (TEST_VMM === "qemu") {
    if (!has("qemu-system-x86_64")) return "qemu-system-x86_64 is not installed";
    return image("vmlinuz") ?? image("initramfs.img");
  }
  if (!["cloud-hypervisor", "stratovirt", "firecracker"].includes(TEST_VMM)) {
    return `KUASAR_TEST_VMM=${TEST_VMM}: no such driver yet`;
  }
  const bin = Deno.env.get("KUASAR_TEST_VMM_PATH") ?? TEST_VMM;
  if (!has(bin)) return `${bin} is not installed (KUASAR_TEST_VMM_PATH names another)`;
  const kvm = kvmUsable();
  if (!kvm.usable) return `${TEST_VMM} needs KVM: ${kvm.why}`;
  if (TEST_VMM === "stratovirt") {
    if (!vhostVsockPresent()) return "stratovirt needs vhost-vsock: /dev/vhost-vsock does not open";
    return image("vmlinuz") ?? image("initramfs.img");
  }
  return image("vmlinux") ?? image("initramfs.img");
}
