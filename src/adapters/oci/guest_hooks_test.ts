import assert from "node:assert/strict";
import type { OciSpec } from "../../domain/oci.ts";
import { keepRunnableHooks } from "./guest_hooks.ts";

Deno.test("guest hooks: those the guest has are kept, stage by stage; the others are named", () => {
  const spec: OciSpec = {
    root: { path: "rootfs" },
    hooks: {
      createRuntime: [{ path: "/bin/sh", args: ["sh", "-c", "true"] }, {
        path: "/usr/bin/gpu-hook",
      }],
      poststop: [{ path: "/usr/bin/gpu-hook" }],
      prestart: [{ path: "relative" }, {}],
    },
  };
  const have = new Set(["/bin/sh"]);
  const { spec: out, dropped } = keepRunnableHooks(spec, (p) => have.has(p));
  assert.deepEqual(out.hooks, { createRuntime: [{ path: "/bin/sh", args: ["sh", "-c", "true"] }] });
  assert.deepEqual(dropped, [
    "createRuntime: /usr/bin/gpu-hook",
    "poststop: /usr/bin/gpu-hook",
    "prestart: relative",
    "prestart: (no path)",
  ]);
  assert.ok((spec.hooks as Record<string, unknown>).poststop, "the input is left alone");
  const none = keepRunnableHooks(
    { root: { path: "r" }, hooks: { poststop: [{ path: "/x" }] } },
    () => false,
  );
  assert.equal(none.spec.hooks, undefined);
  assert.deepEqual(keepRunnableHooks({ root: { path: "r" } }, () => true).dropped, []);
});
