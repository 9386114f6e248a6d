/**
 * VM templates in tests: waiting for one to be built, telling a restored VM from a booted one.
 *
 * @module
 */
import { join } from "node:path";
import { GUEST_IMAGE, TEST_TEMPLATE_DIR, TEST_VM_TEMPLATE } from "./env.ts";

/**
 * The directory of a template in `dir` built after the guest image was (an older one is replaced
 * by the sandboxer); waits up to `timeoutMs` for it.
 */
export async function templateBuilt(dir: string, timeoutMs: number): Promise<string> {
  const image = Math.max(
    ...await Promise.all(
      ["initramfs.img", "vmlinuz"].map((f) =>
        Deno.stat(join(GUEST_IMAGE, f)).then((s) => s.mtime?.getTime() ?? 0, () => 0)
      ),
    ),
  );
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    for (const e of await Array.fromAsync(Deno.readDir(dir)).catch(() => [])) {
      const t = join(dir, e.name);
      const built = await Deno.readTextFile(join(t, "template.json"))
        .then((j) => Date.parse(JSON.parse(j).built), () => 0);
      if (built > image) return t;
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`no template in ${dir} after ${timeoutMs} ms`);
}

/** In the suites' template mode, waits for their template: then pods of their shape are clones. */
export async function suiteTemplateBuilt(): Promise<void> {
  if (TEST_VM_TEMPLATE) await templateBuilt(TEST_TEMPLATE_DIR, 240_000);
}

/** Whether the pod's VM was restored (its QEMU waits for a migration stream, not a boot). */
export function restored(pid: number): boolean {
  return Deno.readTextFileSync(`/proc/${pid}/cmdline`).split("\0").includes("-incoming");
}
