/**
 * The microVM sandbox kind: `kuasar vmm` / `vmm-sandboxer`, on QEMU: a VM
 * per pod, containers run by the guest agent's runc, the Task API relayed
 * from the host daemon.
 *
 * @module
 */
import { join } from "node:path";
import type { KindParts } from "../../ports/sandbox_kind.ts";
import type { HostKind, HostKindContext } from "../kind_host.ts";
import { InvalidArgumentError } from "../../domain/errors.ts";
import { log } from "../../lib/log.ts";
import { findExecutable } from "../os/executables.ts";
import { kvmUsable, vhostVsockUsable } from "./qemu/qemu_command.ts";
import {
  DEFAULT_GUEST_DIR,
  type HypervisorSettings,
  hypervisorSettings,
  unusedKeys,
  virtiofsdOptions,
} from "./vmm_config.ts";
import { SandboxServiceDefinition } from "../../gen/kuasar/sandbox.ts";
import type { TtrpcServer } from "../ttrpc/server.ts";
import { unaryMethods } from "../ttrpc/typed.ts";
import type { AgentLinks } from "./agent_links.ts";
import { VmContainerRuntime } from "./vm_container_runtime.ts";
import { VmmSandboxBackend } from "./vmm_sandbox_backend.ts";

function existing(path: string, key: string): string {
  try {
    if (Deno.statSync(path).isFile) return path;
  } catch { /* below */ }
  throw new InvalidArgumentError(
    `hypervisor.${key}: "${path}" does not exist (deno task guest-image builds the guest image)`,
  );
}

/**
 * ExecVMProcess on the pods' task sockets (`kuasar ctl exec`): the daemon
 * holds each VM's only serial connection, so operators' commands for the
 * guest go through it, to the agent of the socket's pod.
 */
function serveVmExec(server: TtrpcServer, links: AgentLinks): void {
  server.register(
    SandboxServiceDefinition.fullName,
    unaryMethods(SandboxServiceDefinition, {
      execVMProcess: async (req, ctx) =>
        await (await links.get(ctx.scope)).sandbox.execVMProcess(req),
    }),
  );
}

/** Descriptor of the vmm kind. */
export const vmmKind: HostKind = {
  name: "vmm",
  binaryName: "vmm-sandboxer",
  description: "pods as microVMs on QEMU, with a guest agent as PID 1",
  defaultListen: "/run/vmm-sandboxer.sock",
  defaultDir: "/run/kuasar-vmm",
  defaultConfig: "/var/lib/kuasar/config.toml",
  configTable: "hypervisor",
  settingsSchema: hypervisorSettings,
  create(ctx: HostKindContext): Promise<KindParts> {
    const s = ctx.settings as HypervisorSettings;
    const qemu = findExecutable(s.qemu_path ?? "qemu-system-x86_64");
    if (!qemu) {
      return Promise.reject(
        new InvalidArgumentError(`hypervisor.qemu_path: "${s.qemu_path}" is not an executable`),
      );
    }
    let accel: "kvm" | "tcg";
    const forced = s.machine_accelerators?.trim();
    if (forced === "kvm" || forced === "tcg") accel = forced;
    else if (forced) {
      return Promise.reject(
        new InvalidArgumentError(`hypervisor.machine_accelerators: "${forced}" is not kvm or tcg`),
      );
    } else {
      const k = kvmUsable();
      accel = k.usable ? "kvm" : "tcg";
      if (!k.usable) log.warn("KVM is not usable: VMs run under TCG (slow)", { why: k.why });
    }
    try {
      const backend = new VmmSandboxBackend({
        dir: ctx.dir,
        layout: ctx.layout,
        supervisor: ctx.supervisor,
        qemu,
        kernel: existing(s.kernel_path ?? join(DEFAULT_GUEST_DIR, "vmlinuz"), "kernel_path"),
        initrd: existing(
          s.initrd_path ?? join(DEFAULT_GUEST_DIR, "initramfs.img"),
          "initrd_path",
        ),
        kernelParams: s.kernel_params ?? "",
        memoryMiB: s.memory_in_mb ?? 1024,
        vcpus: s.vcpus ?? 1,
        accel,
        vsock: (s.use_vsock ?? true) && vhostVsockUsable(),
        bootTimeoutMs: (s.boot_timeout_secs ?? (accel === "tcg" ? 120 : 30)) * 1000,
        virtiofsd: findExecutable(s.virtiofsd?.path ?? "/usr/lib/qemu/virtiofsd"),
        virtiofsdOptions: virtiofsdOptions(s),
      });
      const unused = unusedKeys(s);
      if (unused.length) {
        log.warn("hypervisor keys accepted for Kuasar's config files but not used", {
          keys: unused,
          why: "QEMU q35 with virtiofs shares and the initramfs guest image (docs/vmm.md)",
        });
      }
      const runtime = new VmContainerRuntime({
        dir: ctx.dir,
        links: backend.links,
        vmRunning: (id) => backend.vmRunning(id),
        streams: ctx.streams,
      });
      serveVmExec(ctx.ttrpc, backend.links);
      return Promise.resolve({ backend, runtime });
    } catch (e) {
      return Promise.reject(e);
    }
  },
};
