/**
 * The Quark sandbox kind: `kuasar quark` / `quark-sandboxer`. Quark (QVisor)
 * serves each pod's Task API itself; the sandboxer starts and watches it and
 * prepares the bundles it reads.
 *
 * @module
 */
import { z } from "zod";
import type { KindParts } from "../../ports/sandbox_kind.ts";
import type { HostKind, HostKindContext } from "../kind_host.ts";
import { InvalidArgumentError } from "../../domain/errors.ts";
import { findExecutable } from "../os/executables.ts";
import type { NodeCheck } from "../../domain/doctor.ts";
import { unsupportedRuntime } from "../task/unsupported_runtime.ts";
import { QuarkSandboxBackend } from "./quark_sandbox_backend.ts";

/** `[quark]` of the config file. */
export const quarkSettings = z.strictObject({
  /** quark binary (name or path). */
  binary: z.string().min(1).optional(),
});

/** Descriptor of the Quark kind. */
export const quarkKind: HostKind = {
  name: "quark",
  binaryName: "quark-sandboxer",
  description: "pods as Quark (QVisor) sandboxes, which serve their own Task API",
  defaultListen: "/run/quark-sandboxer.sock",
  defaultDir: "/var/lib/kuasar-quark",
  // Not one of Kuasar's (only its vmm reads a file by default): beside vmm's, by kind.
  defaultConfig: "/var/lib/kuasar/config_quark.toml",
  settingsSchema: quarkSettings,
  nodeChecks({ settings }): Promise<NodeCheck[]> {
    const name = (settings as z.infer<typeof quarkSettings>).binary ?? "quark";
    const binary = findExecutable(name);
    return Promise.resolve([
      binary ? { id: "engine", kind: "quark", status: "ok", detail: binary } : {
        id: "engine",
        kind: "quark",
        status: "fail",
        detail: `"${name}" is not an executable file`,
        fix: "install Quark (https://github.com/QuarkContainer/Quark) or set [quark] binary",
      },
    ]);
  },
  create(ctx: HostKindContext): Promise<KindParts> {
    const s = ctx.settings as z.infer<typeof quarkSettings>;
    const binary = findExecutable(s.binary ?? "quark");
    if (!binary) {
      return Promise.reject(
        new InvalidArgumentError(
          `quark.binary: "${
            s.binary ?? "quark"
          }" is not an executable file (install Quark or set [quark] binary)`,
        ),
      );
    }
    return Promise.resolve({
      backend: new QuarkSandboxBackend({
        dir: ctx.dir,
        binary,
        supervisor: ctx.supervisor,
      }),
      runtime: unsupportedRuntime(
        "Quark pods serve the Task API themselves, at the address Start returned",
      ),
    });
  },
};
