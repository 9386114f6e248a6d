/**
 * The microVM sandbox kind: `kuasar vmm` / `vmm-sandboxer`, on QEMU, Cloud
 * Hypervisor, StratoVirt or Firecracker: a VM per pod, containers run by the
 * guest agent's runc, the Task API relayed from the host daemon.
 *
 * @module
 */
import { join, resolve } from "node:path";
import type { KindParts } from "../../ports/sandbox_kind.ts";
import type { HostKind, HostKindContext } from "../kind_host.ts";
import { FailedPreconditionError, InvalidArgumentError } from "../../domain/errors.ts";
import type { Hypervisor } from "../../ports/hypervisor.ts";
import { log } from "../../lib/log.ts";
import { findExecutable } from "../os/executables.ts";
import { kvmUsable as kvmFlagsUsable } from "./kvm.ts";
import type { NodeCheck } from "../../domain/doctor.ts";
import { kvmCheck, requiredFile, requiredTool, vhostVsockPresent } from "../doctor/probes.ts";
import {
  bundlesOnDisks,
  DEFAULT_BUNDLE_DISK_DIR,
  DEFAULT_GUEST_DIR,
  DEFAULT_TEMPLATE_SHAPES,
  guestKernelParams,
  type HypervisorSettings,
  hypervisorSettings,
  templateRefusal,
  unusedKeys,
  virtiofsdOptions,
  type VmmName,
  vmmOf,
} from "./vmm_config.ts";
import { SandboxServiceDefinition } from "../../gen/kuasar/sandbox.ts";
import type { TtrpcServer } from "../ttrpc/server.ts";
import { unaryMethods } from "../ttrpc/typed.ts";
import type { AgentLinks } from "./agent_links.ts";
import { VmContainerRuntime } from "./vm_container_runtime.ts";
import { templateChecks } from "./template_checks.ts";
import { removeOwnTemplates } from "./vm_templates.ts";
import { entryName } from "../os/state_layout.ts";
import { podBundleDisks, VmmSandboxBackend } from "./vmm_sandbox_backend.ts";
import { QemuHypervisor } from "./qemu/qemu_hypervisor.ts";
import { CloudHypervisor } from "./cloud_hypervisor/ch_hypervisor.ts";
import { StratoVirt } from "./stratovirt/sv_hypervisor.ts";
import { Firecracker } from "./firecracker/fc_hypervisor.ts";

/** The bundle images' directory, checked: absolute, and not the daemon's own state. */
function bundleDiskDir(dir: string, stateDir: string): string {
  const inside = (a: string, b: string) => a === b || a.startsWith(b.endsWith("/") ? b : `${b}/`);
  if (!dir.startsWith("/") || inside(resolve(dir), resolve(stateDir))) {
    throw new InvalidArgumentError(
      `hypervisor.bundle_disk_dir: "${dir}" must be an absolute path outside --dir (${stateDir})`,
    );
  }
  return resolve(dir);
}

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

/** The VMM binary `[hypervisor] key` names (or `fallback`, looked up in PATH). */
function executable(key: string, configured: string | undefined, fallback: string): string {
  const found = findExecutable(configured ?? fallback);
  if (!found) {
    throw new InvalidArgumentError(
      `hypervisor.${key}: "${configured ?? fallback}" is not an executable`,
    );
  }
  return found;
}

/**
 * The guest image's kernel: QEMU and StratoVirt boot the bzImage, Cloud Hypervisor and
 * Firecracker its ELF (their loaders take the PVH entry, not a bzImage).
 */
function defaultKernel(vmm: VmmName): string {
  return join(DEFAULT_GUEST_DIR, vmm === "qemu" || vmm === "stratovirt" ? "vmlinuz" : "vmlinux");
}

/** The VMM the settings name, and how it runs guests (KVM, or QEMU's TCG where KVM is not usable). */
function chooseHypervisor(s: HypervisorSettings): { hypervisor: Hypervisor; accel: "kvm" | "tcg" } {
  const vmm = vmmOf(s);
  if (vmm === "cloud-hypervisor") {
    const binary = executable("path", s.path, "cloud-hypervisor");
    const k = kvmFlagsUsable();
    if (!k.usable) log.warn("KVM is not usable: Cloud Hypervisor cannot run VMs", { why: k.why });
    return {
      hypervisor: new CloudHypervisor({
        binary,
        hugepages: s.hugepages ?? false,
        entropySource: s.entropy_source ?? "/dev/urandom",
        debug: s.debug ?? false,
      }),
      accel: "kvm",
    };
  }
  if (vmm === "stratovirt") {
    const binary = executable("path", s.path, "stratovirt");
    if (!(s.use_vsock ?? true) || !vhostVsockPresent()) {
      throw new FailedPreconditionError(
        "StratoVirt reaches the guest agent over vhost-vsock: /dev/vhost-vsock is absent " +
          "(modprobe vhost_vsock) or use_vsock = false",
      );
    }
    const k = kvmFlagsUsable();
    if (!k.usable) log.warn("KVM is not usable: StratoVirt cannot run VMs", { why: k.why });
    const machine = s.machine_type ??
      (Deno.build.arch === "aarch64" ? "virt,mem-share=on" : "q35,mem-share=on");
    if (!/(^|,)mem-share=on(,|$)/.test(machine)) {
      throw new InvalidArgumentError(
        `hypervisor.machine_type: "${machine}" lacks mem-share=on, which virtiofs needs`,
      );
    }
    if (s.virtiofsd_conf?.path) {
      log.warn("[hypervisor.virtiofsd_conf] is not used: StratoVirt's vhost_user_fs was removed", {
        use: "[hypervisor.virtiofsd] path (virtiofsd)",
      });
    }
    return {
      hypervisor: new StratoVirt({
        binary,
        machine,
        firmware: s.firmware ?? "",
        memPrealloc: s.enable_mem_prealloc ?? false,
        debug: s.debug ?? false,
      }),
      accel: "kvm",
    };
  }
  if (vmm === "firecracker") {
    const binary = executable("path", s.path, "firecracker");
    const k = kvmFlagsUsable();
    if (!k.usable) log.warn("KVM is not usable: Firecracker cannot run VMs", { why: k.why });
    return { hypervisor: new Firecracker({ binary }), accel: "kvm" };
  }
  const qemu = executable("qemu_path", s.qemu_path, "qemu-system-x86_64");
  let accel: "kvm" | "tcg";
  const forced = s.machine_accelerators?.trim();
  if (forced === "kvm" || forced === "tcg") accel = forced;
  else if (forced) {
    throw new InvalidArgumentError(
      `hypervisor.machine_accelerators: "${forced}" is not kvm or tcg`,
    );
  } else {
    const k = kvmFlagsUsable();
    accel = k.usable ? "kvm" : "tcg";
    if (!k.usable) log.warn("KVM is not usable: VMs run under TCG (slow)", { why: k.why });
  }
  return { hypervisor: new QemuHypervisor({ binary: qemu, accel }), accel };
}

/** Descriptor of the vmm kind. */
export const vmmKind: HostKind = {
  name: "vmm",
  binaryName: "vmm-sandboxer",
  description:
    "pods as microVMs on QEMU, Cloud Hypervisor, StratoVirt or Firecracker, with a guest agent " +
    "as PID 1",
  defaultListen: "/run/vmm-sandboxer.sock",
  defaultDir: "/run/kuasar-vmm",
  defaultConfig: "/var/lib/kuasar/config.toml",
  configTable: "hypervisor",
  settingsSchema: hypervisorSettings,
  async nodeChecks({ settings, helper, dir }): Promise<NodeCheck[]> {
    const s = settings as HypervisorSettings;
    const vmm = vmmOf(s);
    // The VMMs that need KVM (QEMU alone can emulate).
    const ch = vmm !== "qemu";
    const checks = [
      ch
        ? await requiredTool(
          "vmm",
          "engine",
          s.path ?? vmm,
          ["--version"],
          `install ${vmm} (its release binary or your distribution's package) or set ` +
            "[hypervisor] path",
        )
        : await requiredTool(
          "vmm",
          "engine",
          s.qemu_path ?? "qemu-system-x86_64",
          ["--version"],
          "install QEMU (apt install qemu-system-x86 / dnf install qemu-kvm) or set " +
            "[hypervisor] qemu_path",
        ),
    ];
    const forced = ch ? "kvm" : s.machine_accelerators?.trim();
    checks.push(
      await kvmCheck("vmm", helper, {
        // Chosen knowingly: TCG works, slowly; otherwise pods are expected to be fast.
        status: forced === "tcg" ? "warn" : "fail",
        detail: (why) =>
          ch
            ? `KVM is not usable: ${why}; ${vmm} runs no VM without it`
            : `KVM is not usable: ${why}; VMs run under TCG emulation (several times slower to ` +
              "boot and run)",
        fix: forced === "tcg"
          ? "a host with VMX/SVM and /dev/kvm for real use"
          : ch
          ? "a host with VMX/SVM and /dev/kvm"
          : 'a host with VMX/SVM and /dev/kvm, or machine_accelerators = "tcg" to accept emulation',
      }),
    );
    const vsock = vhostVsockPresent();
    // Cloud Hypervisor's and Firecracker's vsock is their own (a unix socket on the host): no
    // vhost-vsock needed.
    if (vmm !== "cloud-hypervisor" && vmm !== "firecracker" && (s.use_vsock ?? true)) {
      checks.push(
        vsock
          ? { id: "vhost-vsock", kind: "vmm", status: "ok", detail: "/dev/vhost-vsock opens" }
          : {
            id: "vhost-vsock",
            kind: "vmm",
            // StratoVirt has no other way to the agent.
            status: vmm === "stratovirt" ? "fail" : "warn",
            detail: vmm === "stratovirt"
              ? "/dev/vhost-vsock is absent: StratoVirt has no other way to the guest agent"
              : "/dev/vhost-vsock is absent: the guest agent is reached over virtio-serial",
            fix: vmm === "stratovirt"
              ? "modprobe vhost_vsock"
              : "modprobe vhost_vsock for vsock (or use_vsock = false to silence this)",
          },
      );
    }
    const virtiofsd = s.virtiofsd?.path ?? "/usr/lib/qemu/virtiofsd";
    checks.push(
      bundlesOnDisks(s)
        ? await requiredTool(
          "vmm",
          "mkfs.ext4",
          "mkfs.ext4",
          ["-V"],
          "install e2fsprogs (1.43 or later): containers' bundles are packed with mkfs.ext4 -d",
        )
        : await requiredTool(
          "vmm",
          "virtiofsd",
          virtiofsd,
          ["--version"],
          "install virtiofsd (Debian: qemu-system-common; or the Rust virtiofsd) or set " +
            "[hypervisor.virtiofsd] path",
        ),
      requiredFile(
        "vmm",
        "guest-kernel",
        s.kernel_path || defaultKernel(vmm),
        "deno task guest-image builds the guest image (or set [hypervisor] kernel_path)",
      ),
      requiredFile(
        "vmm",
        "guest-initrd",
        s.initrd_path || join(DEFAULT_GUEST_DIR, "initramfs.img"),
        "deno task guest-image builds the guest image (or set [hypervisor] initrd_path)",
      ),
    );
    if (s.template || s.template_pool || s.template_shapes) {
      checks.push(
        ...await templateChecks({
          refusal: templateRefusal(s),
          dir: s.template_dir ?? join(dir, entryName("vmTemplates")),
          memoryMiB: s.memory_in_mb ?? 1024,
          shapes: s.template_shapes ?? DEFAULT_TEMPLATE_SHAPES,
          image: [
            s.kernel_path || defaultKernel(vmm),
            s.initrd_path || join(DEFAULT_GUEST_DIR, "initramfs.img"),
          ],
          ...(s.template_pool ? { pool: { stateDir: dir, size: s.template_pool } } : {}),
        }),
      );
    }
    return checks;
  },
  create(ctx: HostKindContext): Promise<KindParts> {
    const s = ctx.settings as HypervisorSettings;
    let chosen: { hypervisor: Hypervisor; accel: "kvm" | "tcg" };
    try {
      chosen = chooseHypervisor(s);
    } catch (e) {
      return Promise.reject(e);
    }
    const { hypervisor, accel } = chosen;
    try {
      const bundleDisks = bundlesOnDisks(s)
        ? {
          dir: bundleDiskDir(s.bundle_disk_dir ?? DEFAULT_BUNDLE_DISK_DIR, ctx.dir),
          freeMiB: s.bundle_disk_free_mb ?? 1024,
        }
        : undefined;
      if (bundleDisks && s.hotplug_disk_slots === 0) {
        throw new InvalidArgumentError(
          'hypervisor.hotplug_disk_slots = 0: with share_fs = "None" (and on Firecracker) every ' +
            "container's bundle is a disk, which needs a slot",
        );
      }
      const refusal = templateRefusal(s);
      if (refusal) {
        throw new InvalidArgumentError(
          s.template ? `[hypervisor] template = true: ${refusal}` : `[hypervisor] ${refusal}`,
        );
      }
      const backend = new VmmSandboxBackend({
        dir: ctx.dir,
        layout: ctx.layout,
        supervisor: ctx.supervisor,
        hypervisor,
        kernel: existing(s.kernel_path || defaultKernel(vmmOf(s)), "kernel_path"),
        initrd: existing(
          s.initrd_path || join(DEFAULT_GUEST_DIR, "initramfs.img"),
          "initrd_path",
        ),
        kernelParams: guestKernelParams(s),
        memoryMiB: s.memory_in_mb ?? 1024,
        vcpus: s.vcpus ?? 1,
        accel,
        vsock: (s.use_vsock ?? true) && vhostVsockPresent(),
        bootTimeoutMs: (s.boot_timeout_secs ?? (accel === "tcg" ? 120 : 30)) * 1000,
        clockSyncMs: (s.clock_sync_interval_secs ?? 60) * 1000,
        virtiofsd: findExecutable(s.virtiofsd?.path ?? "/usr/lib/qemu/virtiofsd"),
        virtiofsdOptions: virtiofsdOptions(s),
        debugConsole: s.task?.debug ?? false,
        diskSlots: s.hotplug_disk_slots,
        maxVcpus: s.default_max_vcpus ?? 0,
        memorySlots: s.mem_slots ?? 0,
        bundleDisks,
        templateDir: s.template ? s.template_dir ?? ctx.layout.path("vmTemplates") : undefined,
        templatePool: s.template_pool ?? 0,
        templateShapes: s.template_shapes ?? DEFAULT_TEMPLATE_SHAPES,
      });
      backend.prepareTemplate();
      if (!s.template) {
        // Templates were on before, maybe: this sandboxer's go, with what they hold.
        const dir = s.template_dir ?? ctx.layout.path("vmTemplates");
        removeOwnTemplates(dir, ctx.dir).then(
          (n) => n && log.info("vm templates removed: templates are off", { dir, removed: n }),
          (e) => log.warn("vm templates not removed", { dir, error: String(e) }),
        );
      }
      const unused = unusedKeys(s);
      if (unused.length) {
        log.warn("hypervisor keys accepted for Kuasar's config files but not used", {
          keys: unused,
          why: `${hypervisor.name} with ${
            bundleDisks ? "bundles on disks" : "virtiofs shares"
          } and the initramfs guest image (docs/vmm.md)`,
        });
      }
      if (s.task?.debug && !hypervisor.capabilities.serialPorts) {
        log.warn("[hypervisor.task] debug: no debug console on this VMM", {
          vmm: hypervisor.name,
          why: "the console is a virtio-serial port, which it does not have",
        });
      }
      const runtime = new VmContainerRuntime({
        dir: ctx.dir,
        links: backend.links,
        vmRunning: (id) => backend.vmRunning(id),
        streams: ctx.streams,
        outputHolder: ctx.outputHolder,
        disks: backend.disks,
        plugLateInterfaces: (sb) => backend.plugLateInterfaces(sb),
        resizeVm: (sb, want) => backend.resizeVm(sb, want),
        bundleDisksOf: podBundleDisks,
      });
      serveVmExec(ctx.ttrpc, backend.links);
      ctx.tracing.addSource(() => backend.links.drainSpans());
      return Promise.resolve({ backend, runtime, close: () => backend.closeTemplates() });
    } catch (e) {
      return Promise.reject(e);
    }
  },
};
