/**
 * The runC sandbox kind: `kuasar runc` / `runc-sandboxer`.
 *
 * @module
 */
import { z } from "zod";
import type { KindContext, KindParts, SandboxKind } from "../../daemon/kind.ts";
import { RuncCli } from "./runc_cli.ts";
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
export const runcKind: SandboxKind = {
  name: "runc",
  binaryName: "runc-sandboxer",
  description: "pods as namespace holders, containers run by runc",
  defaultListen: "/run/runc-sandboxer.sock",
  defaultDir: "/run/kuasar-runc",
  settingsSchema: runcSettings,
  create(ctx: KindContext): Promise<KindParts> {
    const s = ctx.settings as z.infer<typeof runcSettings>;
    const runc = new RuncCli({
      binary: s.binary ?? "runc",
      root: s.root ?? ctx.layout.path("runcRoot"),
      systemdCgroup: s.systemd_cgroup ?? false,
    });
    // A root configured as `<dir>/<name>` (the old README's example) is no pod's name.
    if (s.root) ctx.layout.reserve(s.root, "runc's root ([runc] root)");
    const runtime = new RuncContainerRuntime({
      dir: ctx.dir,
      layout: ctx.layout,
      helper: ctx.helper,
      exits: ctx.exits,
      cli: runc,
      streams: ctx.streams,
    });
    return Promise.resolve({
      backend: new RuncSandboxBackend({ dir: ctx.dir, helper: ctx.helper, exits: ctx.exits }),
      runtime,
      close: () => runtime.close(),
    });
  },
};
