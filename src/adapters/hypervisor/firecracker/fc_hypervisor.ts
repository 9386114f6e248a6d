/**
 * Firecracker as a Hypervisor: the VM described over its API socket before `InstanceStart`,
 * the agent over hybrid vsock (as Cloud Hypervisor's), the guest console on its stdout.
 * Firecracker has no virtiofs, and its released versions no PCI and no hot-plug (1.17's, behind
 * `--enable-pci`, is not used): the VM boots with its disk slots as drives on empty
 * placeholder files, and a disk is attached by re-pointing a free slot's drive at it
 * (`PATCH /drives/{id}`, which Firecracker allows on a running VM) and detached by pointing it
 * back. Containers' bundles reach the guest that way (bundle_disk.ts); nothing else is added
 * to a running VM.
 *
 * @module
 */
import type {
  AgentAddress,
  DiskAttachment,
  Hypervisor,
  HypervisorCapabilities,
  VmDescription,
} from "../../../ports/hypervisor.ts";
import {
  DeadlineExceededError,
  FailedPreconditionError,
  InternalError,
} from "../../../domain/errors.ts";
import { join } from "node:path";
import { type ApiAnswer, apiRequest } from "../api_http.ts";
import {
  FC_PLACEHOLDER_BYTES,
  fcArgv,
  fcBootCalls,
  fcImageId,
  type FcOptions,
  fcPlaceholder,
  fcSlotDrive,
} from "./fc_config.ts";

export class Firecracker implements Hypervisor {
  readonly name = "firecracker";
  readonly capabilities: HypervisorCapabilities = {
    virtiofs: false,
    diskHotplug: true,
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
    const calls = fcBootCalls(vm);
    if (vm.diskSlots) {
      await Deno.mkdir(join(vm.stateDir, "fc-slots"), { mode: 0o700 }).catch(() => {});
    }
    for (let i = 0; i < vm.diskSlots; i++) {
      await Deno.writeFile(fcPlaceholder(vm, i), new Uint8Array(FC_PLACEHOLDER_BYTES), {
        mode: 0o600,
      });
    }
    for (const c of calls) {
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

  /**
   * Re-points slot `disk.slot`'s drive at `disk.path`; the serial is Firecracker's for that
   * file. A drive's read-only flag is fixed at boot and the slots are writable, so a read-only
   * disk is refused: the guest's kernel could write to it whatever the mount says.
   */
  async attachDisk(vm: VmDescription, disk: DiskAttachment): Promise<string> {
    if (disk.slot < 0 || disk.slot >= vm.diskSlots) {
      throw new FailedPreconditionError(`Firecracker VM has no disk slot ${disk.slot}`);
    }
    if (disk.readOnly) {
      throw new FailedPreconditionError(
        `"${disk.path}" is read-only for the pod: a Firecracker drive cannot be made read-only ` +
          "after boot, so a read-only block volume is refused",
      );
    }
    const st = await Deno.stat(disk.path);
    // The guest finds the disk by this serial: a placeholder with the same one would be taken.
    for (let i = 0; i < vm.diskSlots; i++) {
      const p = await Deno.stat(fcPlaceholder(vm, i)).catch(() => undefined);
      if (p && fcImageId(p) === fcImageId(st)) {
        throw new FailedPreconditionError(
          `"${disk.path}" would show in the guest as serial ${fcImageId(st)}, as slot ${i}'s ` +
            "placeholder does",
        );
      }
    }
    const drive = fcSlotDrive(disk.slot);
    expect(
      await apiRequest(vm.controlSocket, "PATCH", `/drives/${drive}`, {
        drive_id: drive,
        path_on_host: disk.path,
      }),
      `PATCH /drives/${drive}`,
    );
    return fcImageId(st);
  }

  /** Points the slot's drive back at its placeholder (the file attached is let go). */
  async detachDisk(vm: VmDescription, disk: Pick<DiskAttachment, "slot">): Promise<void> {
    const drive = fcSlotDrive(disk.slot);
    expect(
      await apiRequest(vm.controlSocket, "PATCH", `/drives/${drive}`, {
        drive_id: drive,
        path_on_host: fcPlaceholder(vm, disk.slot),
      }),
      `PATCH /drives/${drive}`,
    );
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
