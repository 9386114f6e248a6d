/**
 * The runC sandbox kind: `kuasar runc` / `runc-sandboxer`.
 *
 * @module
 */
import { z } from "zod";
import type { NodeCheck } from "../../domain/doctor.ts";
import type { KindParts } from "../../ports/sandbox_kind.ts";
import { requiredTool, systemdCheck } from "../doctor/probes.ts";
import type { HostKind, HostKindContext } from "../kind_host.ts";
import { OciRuntimeCli } from "../oci/runtime_cli.ts";
import { RuncContainerRuntime } from "./runc_container_runtime.ts";
import { RuncSandboxBackend } from "./runc_sandbox_backend.ts";

/** `[runc]` of the config file. */
export const runcSettings = z.strictObject({
  /** runc binary (name or path). */
  binary: z.string().min(1).optional(),
  /** runc state root; default `<dir>/.runc`. */
  root: z.string().min(1).optional(),
  /** Use runc's systemd cgroup driver. */
  systemd_cgroup: z.boolean().optional(),
});

/** Descriptor of the runC kind. */
export const runcKind: HostKind = {
  name: "runc",
  binaryName: "runc-sandboxer",
  description: "pods as namespace holders, containers run by runc",
  defaultListen: "/run/runc-sandboxer.sock",
  defaultDir: "/run/kuasar-runc",
  // Not one of Kuasar's (only its vmm reads a file by default): beside vmm's, by kind.
  defaultConfig: "/var/lib/kuasar/config_runc.toml",
  settingsSchema: runcSettings,
  async nodeChecks({ settings }): Promise<NodeCheck[]> {
    const s = settings as z.infer<typeof runcSettings>;
    const checks = [
      await requiredTool(
        "runc",
        "engine",
        s.binary ?? "runc",
        ["--version"],
        "install runc (apt/dnf install runc) or set [runc] binary",
      ),
    ];
    if (s.systemd_cgroup) checks.push(systemdCheck("runc", "[runc] systemd_cgroup = true"));
    return checks;
  },
  create(ctx: HostKindContext): Promise<KindParts> {
    const s = ctx.settings as z.infer<typeof runcSettings>;
    const runc = new OciRuntimeCli({
      binary: s.binary ?? "runc",
      root: s.root ?? ctx.layout.path("runcRoot"),
      systemdCgroup: s.systemd_cgroup ?? false,
    }, ctx.supervisor);
    // A root configured as `<dir>/<name>` (the old README's example) is no pod's name.
    if (s.root) ctx.layout.reserve(s.root, "runc's root ([runc] root)");
    const runtime = new RuncContainerRuntime({
      dir: ctx.dir,
      layout: ctx.layout,
      supervisor: ctx.supervisor,
      cli: runc,
      streams: ctx.streams,
    });
    return Promise.resolve({
      backend: new RuncSandboxBackend({ dir: ctx.dir, supervisor: ctx.supervisor }),
      runtime,
      close: () => runtime.close(),
    });
  },
};
