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

/** Why gVisor integration tests cannot run here, or undefined if they can. */
export function runscUnavailable(): string | undefined {
  return runcUnavailable() ?? (has("runsc") ? undefined : "runsc (gVisor) is not installed");
}

/** The guest image the microVM tests boot (`deno task guest-image` builds it). */
export const GUEST_IMAGE = Deno.env.get("KUASAR_GUEST_IMAGE") ?? "/var/lib/kuasar/guest";

/** The vmm sandboxer's config of the containerd suites: the guest image, a 512 MiB guest. */
export const VMM_CRI_CONFIG = [
  "[hypervisor]",
  `kernel_path = "${GUEST_IMAGE}/vmlinuz"`,
  `initrd_path = "${GUEST_IMAGE}/initramfs.img"`,
  "memory_in_mb = 512",
  "",
].join("\n");

/**
 * The gVisor sandboxer's config of the containerd suites. network = "host":
 * Debian's runsc (a 2022 build) refuses its own network stack in a CNI netns
 * on this kernel (see gvisor_sandbox_backend.ts, hintFor).
 */
export const GVISOR_CRI_CONFIG = `[gvisor]\nplatform = "ptrace"\nnetwork = "host"\n`;

/** Why a VM cannot be booted here (QEMU or the guest image missing), or undefined. */
export function vmUnavailable(): string | undefined {
  if (!has("qemu-system-x86_64")) return "qemu-system-x86_64 is not installed";
  try {
    Deno.statSync(`${GUEST_IMAGE}/vmlinuz`);
    Deno.statSync(`${GUEST_IMAGE}/initramfs.img`);
    return undefined;
  } catch {
    return `no guest image in ${GUEST_IMAGE} (deno task guest-image builds it)`;
  }
}
