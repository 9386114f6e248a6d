/**
 * Firecracker as a Hypervisor: the VM described over its API socket before `InstanceStart`,
 * the agent over hybrid vsock (as Cloud Hypervisor's), the guest console on its stdout.
 * Firecracker has no virtiofs, and its released versions no PCI and no hot-plug (1.17's, behind
 * `--enable-pci`, is not used): nothing is added to a running VM, and
 * a pod's containers need their root filesystems as block devices attached before boot, which
 * the sandboxer does not prepare yet (docs/vmm.md, Hypervisors): the vmm kind refuses to run on
 * it until then, and this driver is tested against Firecracker's published API alone.
 *
 * @module
 */
import type {
  AgentAddress,
  Hypervisor,
  HypervisorCapabilities,
  VmDescription,
} from "../../../ports/hypervisor.ts";
import {
  DeadlineExceededError,
  FailedPreconditionError,
  InternalError,
} from "../../../domain/errors.ts";
import { type ApiAnswer, apiRequest } from "../api_http.ts";
import { fcArgv, fcBootCalls, type FcOptions } from "./fc_config.ts";

export class Firecracker implements Hypervisor {
  readonly name = "firecracker";
  readonly capabilities: HypervisorCapabilities = {
    virtiofs: false,
    diskHotplug: false,
    nicHotplug: false,
    resize: false,
    serialPorts: false,
  };
  readonly #o: FcOptions;

  constructor(opts: FcOptions) {
    this.#o = opts;
  }

  argv(vm: VmDescription): string[] {
    return fcArgv(this.#o, vm);
  }

  /** Once the API answers: the pre-boot calls, `InstanceStart`, until the instance is Running. */
  async boot(vm: VmDescription, deadline: number): Promise<void> {
    const sock = vm.controlSocket;
    for (;;) {
      const r = await apiRequest(sock, "GET", "/").catch((e) => e as Error);
      if (!(r instanceof Error)) break;
      if (performance.now() > deadline) {
        throw new DeadlineExceededError(`Firecracker did not serve ${sock}: ${r.message}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    for (const c of fcBootCalls(vm)) {
      expect(await apiRequest(sock, c.method, c.path, c.body), `${c.method} ${c.path}`);
    }
    expect(
      await apiRequest(sock, "PUT", "/actions", { action_type: "InstanceStart" }),
      "InstanceStart",
    );
    const info = await apiRequest(sock, "GET", "/");
    const state = (JSON.parse(info.body || "{}") as { state?: string }).state;
    if (state !== "Running") {
      throw new InternalError(`Firecracker started the VM but it is ${state}`);
    }
  }

  /**
   * Ctrl-Alt-Del (x86 only): the guest's PID 1 reboots, which ends Firecracker. Refused or not
   * heeded, the sandboxer kills the process after the stop timeout, as on aarch64 at once.
   */
  async requestStop(vm: VmDescription): Promise<void> {
    if (Deno.build.arch !== "x86_64") return;
    await apiRequest(vm.controlSocket, "PUT", "/actions", { action_type: "SendCtrlAltDel" }, 2000)
      .catch(() => {});
  }

  agentAddresses(vm: VmDescription, agentPort: number): AgentAddress[] {
    return [{ transport: "hvsock", path: vm.agentSocket, port: agentPort }];
  }

  attachDisk(): Promise<void> {
    return Promise.reject(noHotplug("disks"));
  }

  detachDisk(): Promise<void> {
    return Promise.reject(noHotplug("disks"));
  }

  resize(): Promise<{ vcpus: number; memoryMiB: number }> {
    return Promise.reject(noHotplug("vCPUs or memory"));
  }

  attachNic(): Promise<void> {
    return Promise.reject(noHotplug("network interfaces"));
  }
}

function noHotplug(what: string): FailedPreconditionError {
  return new FailedPreconditionError(`Firecracker adds no ${what} to a running VM`);
}

/** Throws the error a refused call means, with Firecracker's `fault_message`. */
function expect(r: ApiAnswer, call: string): void {
  if (r.status === 204 || r.status === 200) return;
  let why = r.body.trim();
  try {
    why = (JSON.parse(r.body) as { fault_message?: string }).fault_message ?? why;
  } catch { /* not JSON */ }
  const what = `Firecracker refused ${call} (${r.status}): ${why || "no detail"}`;
  // Its 400s are its input's and the host's alike (a bad value, a tap in use, a call too late).
  throw r.status === 400 ? new FailedPreconditionError(what) : new InternalError(what);
}
