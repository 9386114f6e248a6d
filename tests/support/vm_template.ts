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

/**
 * In the suites' template mode, waits for their template (then pods of their shape are clones)
 * and for the first VM of the sandboxer's pool (whose `logs` are given): its first pod takes
 * that one, later ones restore their own or take the next, as the pool keeps up.
 */
export async function suiteTemplateBuilt(logs?: () => Promise<string>): Promise<void> {
  if (!TEST_VM_TEMPLATE) return;
  await templateBuilt(TEST_TEMPLATE_DIR, 240_000);
  const end = Date.now() + 120_000;
  while (logs && !(await logs()).includes('"vm pooled"')) {
    if (Date.now() > end) throw new Error("the sandboxer's pool made no VM in 120 s");
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** Whether the pod's VM was restored (its QEMU waits for a migration stream, not a boot). */
export function restored(pid: number): boolean {
  return Deno.readTextFileSync(`/proc/${pid}/cmdline`).split("\0").includes("-incoming");
}
