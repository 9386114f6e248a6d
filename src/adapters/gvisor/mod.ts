/**
 * The gVisor sandbox kind: `kuasar gvisor` / `gvisor-sandboxer`. A pod is one
 * runsc sandbox (an application kernel in user space); its containers are
 * runsc subcontainers of that sandbox.
 *
 * @module
 */
import { z } from "zod";
import type { KindParts } from "../../ports/sandbox_kind.ts";
import type { HostKind, HostKindContext } from "../kind_host.ts";
import { InvalidArgumentError } from "../../domain/errors.ts";
import { findExecutable } from "../os/executables.ts";
import type { NodeCheck } from "../../domain/doctor.ts";
import { kvmCheck, requiredTool } from "../doctor/probes.ts";
import { OciRuntimeCli } from "../oci/runtime_cli.ts";
import { GvisorContainerRuntime } from "./gvisor_container_runtime.ts";
import { GvisorSandboxBackend } from "./gvisor_sandbox_backend.ts";

/** `[gvisor]` of the config file. */
export const gvisorSettings = z.strictObject({
  /** runsc binary (name or path). */
  binary: z.string().min(1).optional(),
  /** runsc --root: where runsc keeps its state; default `<dir>/.runsc`. */
  root: z.string().min(1).optional(),
  /** How the sentry intercepts syscalls; runsc's own default when unset. */
  platform: z.enum(["ptrace", "systrap", "kvm"]).optional(),
  /** sandbox: gVisor's own network stack in the pod's netns; host: the host's stack; none. */
  network: z.enum(["sandbox", "host", "none"]).optional(),
  /** Directory for runsc's debug logs (`--debug --debug-log <dir>/`); off when unset. */
  debug_log_dir: z.string().min(1).optional(),
});

export type GvisorSettings = z.infer<typeof gvisorSettings>;

/** runsc's global flags for `s`. */
export function runscFlags(s: GvisorSettings): string[] {
  const flags: string[] = [];
  if (s.platform) flags.push(`--platform=${s.platform}`);
  if (s.network) flags.push(`--network=${s.network}`);
  if (s.debug_log_dir) flags.push("--debug", `--debug-log=${s.debug_log_dir.replace(/\/?$/, "/")}`);
  return flags;
}

/** Descriptor of the gVisor kind. */
export const gvisorKind: HostKind = {
  name: "gvisor",
  binaryName: "gvisor-sandboxer",
  description: "pods as gVisor sandboxes (runsc), containers as its subcontainers",
  defaultListen: "/run/gvisor-sandboxer.sock",
  defaultDir: "/run/kuasar-gvisor",
  // Not one of Kuasar's (only its vmm reads a file by default): beside vmm's, by kind.
  defaultConfig: "/var/lib/kuasar/config_gvisor.toml",
  settingsSchema: gvisorSettings,
  async nodeChecks({ settings, helper }): Promise<NodeCheck[]> {
    const s = settings as GvisorSettings;
    const checks = [
      await requiredTool(
        "gvisor",
        "engine",
        s.binary ?? "runsc",
        ["--version"],
        "install gVisor's runsc (https://gvisor.dev/docs/user_guide/install/) or set [gvisor] binary",
      ),
    ];
    if (s.platform === "kvm") {
      checks.push(
        await kvmCheck("gvisor", helper, {
          status: "fail",
          detail: (why) => `[gvisor] platform = "kvm", but KVM is not usable: ${why}`,
          fix: 'use platform = "systrap" (or "ptrace"), or a host with VMX/SVM',
        }),
      );
    }
    return checks;
  },
  async create(ctx: HostKindContext): Promise<KindParts> {
    const s = ctx.settings as GvisorSettings;
    const binary = findExecutable(s.binary ?? "runsc");
    if (!binary) {
      throw new InvalidArgumentError(
        `gvisor.binary: "${
          s.binary ?? "runsc"
        }" is not an executable file (install gVisor's runsc or set [gvisor] binary)`,
      );
    }
    if (s.root) ctx.layout.reserve(s.root, "runsc's root ([gvisor] root)");
    if (s.debug_log_dir) await Deno.mkdir(s.debug_log_dir, { recursive: true, mode: 0o700 });
    const runsc = new OciRuntimeCli({
      binary,
      root: s.root ?? ctx.layout.path("runscRoot"),
      systemdCgroup: false,
      globalFlags: runscFlags(s),
      detached: true,
    }, ctx.supervisor);
    return {
      backend: new GvisorSandboxBackend({
        dir: ctx.dir,
        layout: ctx.layout,
        supervisor: ctx.supervisor,
        runsc,
      }),
      runtime: new GvisorContainerRuntime({
        dir: ctx.dir,
        layout: ctx.layout,
        supervisor: ctx.supervisor,
        cli: runsc,
        streams: ctx.streams,
      }),
    };
  },
};
