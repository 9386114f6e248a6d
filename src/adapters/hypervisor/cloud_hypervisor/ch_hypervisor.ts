/**
 * Cloud Hypervisor as the vmm sandboxer's Hypervisor (Kuasar's default VMM):
 * one process per pod serving its REST API on a unix socket; the VM is
 * created and booted over it (`vm.create`, `vm.boot`), grown and given disks
 * and NICs over it, and the agent is reached over hybrid vsock on the VM's
 * vsock socket. It has no named serial ports: no debug console here.
 *
 * @module
 */
import type {
  AgentAddress,
  DiskAttachment,
  Hypervisor,
  HypervisorCapabilities,
  NicAttachment,
  VmDescription,
} from "../../../ports/hypervisor.ts";
import {
  AlreadyExistsError,
  DeadlineExceededError,
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  UnavailableError,
} from "../../../domain/errors.ts";
import { type ApiAnswer, apiRequest } from "../api_http.ts";
import { chArgv, type ChOptions, chVmConfig } from "./ch_config.ts";

const API = "/api/v1";
const MiB = 1024 * 1024;

/** What `vm.info` tells of a VM (the parts read here). */
interface VmInfo {
  state: string;
  config: {
    cpus?: { boot_vcpus: number };
    memory?: { size: number; hotplugged_size?: number };
  };
  device_tree?: Record<string, unknown>;
}

export class CloudHypervisor implements Hypervisor {
  readonly name = "cloud-hypervisor";
  readonly capabilities: HypervisorCapabilities = {
    virtiofs: true,
    diskHotplug: true,
    nicHotplug: true,
    resize: true,
    serialPorts: false,
  };
  readonly #o: ChOptions;

  constructor(opts: ChOptions) {
    this.#o = opts;
  }

  argv(vm: VmDescription): string[] {
    return chArgv(this.#o, vm);
  }

  /** Once the API answers: `vm.create` with the pod's VM, `vm.boot`, until it is Running. */
  async boot(vm: VmDescription, deadline: number): Promise<void> {
    const sock = vm.controlSocket;
    for (;;) {
      const ping = await apiRequest(sock, "GET", `${API}/vmm.ping`).catch((e) => e as Error);
      if (!(ping instanceof Error)) {
        expect(ping, "vmm.ping", 200);
        break;
      }
      if (performance.now() > deadline) {
        throw new DeadlineExceededError(`Cloud Hypervisor did not serve ${sock}: ${ping.message}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(await apiRequest(sock, "PUT", `${API}/vm.create`, chVmConfig(this.#o, vm)), "vm.create");
    expect(await apiRequest(sock, "PUT", `${API}/vm.boot`), "vm.boot");
    const info = await this.#info(vm);
    if (info.state !== "Running") {
      throw new InternalError(`Cloud Hypervisor booted the VM but it is ${info.state}`);
    }
  }

  /** `vmm.shutdown`: the VM ends and the VMM process exits. */
  async requestStop(vm: VmDescription): Promise<void> {
    await apiRequest(vm.controlSocket, "PUT", `${API}/vmm.shutdown`, undefined, 2000)
      .catch(() => {});
  }

  agentAddresses(vm: VmDescription, agentPort: number): AgentAddress[] {
    return [{ transport: "hvsock", path: vm.agentSocket, port: agentPort }];
  }

  /** `vm.add-disk` with the serial the guest finds it by. */
  async attachDisk(vm: VmDescription, disk: DiskAttachment): Promise<string> {
    expect(
      await apiRequest(vm.controlSocket, "PUT", `${API}/vm.add-disk`, {
        path: disk.path,
        readonly: disk.readOnly,
        direct: false,
        // Said, not probed: since v51 a disk probed as raw refuses writes to sector 0 (where
        // file systems keep their superblock) unless its type is given.
        image_type: "Raw",
        serial: disk.serial,
        id: disk.id,
      }),
      "vm.add-disk",
      200,
    );
    return disk.serial;
  }

  /**
   * `vm.remove-device`, then until the device has left the VM's device tree (the guest ejects
   * it through ACPI; until then its file is still open).
   */
  async detachDisk(vm: VmDescription, { id }: Pick<DiskAttachment, "id">): Promise<void> {
    const present = async () => !!((await this.#info(vm)).device_tree ?? {})[id];
    // Already gone (a restarted daemon finishing an unplug): released versions answer an
    // unknown id with a 500 like any other failure, so look first.
    if (!(await present())) return;
    expect(
      await apiRequest(vm.controlSocket, "PUT", `${API}/vm.remove-device`, { id }),
      "vm.remove-device",
    );
    const deadline = performance.now() + 10_000;
    while (performance.now() < deadline) {
      if (!(await present())) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new DeadlineExceededError(`The guest did not release disk ${id} within 10 s`);
  }

  /**
   * `vm.resize` to the wanted vCPUs and memory where they exceed what the VM has; the VM's size
   * is read back from `vm.info` (a restarted daemon does not grow it twice).
   */
  async resize(
    vm: VmDescription,
    want: { readonly vcpus: number; readonly memoryMiB: number },
  ): Promise<{ vcpus: number; memoryMiB: number }> {
    const size = (i: VmInfo) => ({
      vcpus: i.config.cpus?.boot_vcpus ?? vm.vcpus,
      memoryMiB: Math.floor(
        ((i.config.memory?.size ?? 0) + (i.config.memory?.hotplugged_size ?? 0)) / MiB,
      ),
    });
    const now = size(await this.#info(vm));
    const body: Record<string, number> = {};
    if (want.vcpus > now.vcpus) body.desired_vcpus = want.vcpus;
    if (want.memoryMiB > now.memoryMiB) {
      // In whole 128 MiB blocks, as the guest onlines memory.
      body.desired_ram = (now.memoryMiB + Math.ceil((want.memoryMiB - now.memoryMiB) / 128) * 128) *
        MiB;
    }
    if (!Object.keys(body).length) return now;
    const r = await apiRequest(vm.controlSocket, "PUT", `${API}/vm.resize`, body);
    if (r.status >= 400) {
      throw new FailedPreconditionError(
        `The pod's VM (${now.vcpus} vCPUs, ${now.memoryMiB} MiB) cannot grow to ` +
          `${want.vcpus} vCPUs, ${want.memoryMiB} MiB: Cloud Hypervisor said ${r.status} ` +
          `${r.body.trim()} (room to grow: [hypervisor] default_max_vcpus, mem_slots)`,
      );
    }
    return size(await this.#info(vm));
  }

  /** `vm.add-net` on the tap (in the VMM's netns). */
  async attachNic(vm: VmDescription, nic: NicAttachment): Promise<void> {
    expect(
      await apiRequest(vm.controlSocket, "PUT", `${API}/vm.add-net`, {
        tap: nic.tap,
        mac: nic.mac,
        num_queues: 2 * nic.queues,
        id: `hnic${nic.slot}`,
      }),
      "vm.add-net",
      200,
    );
  }

  async #info(vm: VmDescription): Promise<VmInfo> {
    const r = await apiRequest(vm.controlSocket, "GET", `${API}/vm.info`);
    expect(r, "vm.info", 200);
    try {
      return JSON.parse(r.body) as VmInfo;
    } catch {
      throw new UnavailableError(`Cloud Hypervisor's vm.info is not JSON: ${r.body.slice(0, 200)}`);
    }
  }
}

/** Throws the error a failed call means, with Cloud Hypervisor's own words. */
function expect(r: ApiAnswer, call: string, ok = 204): void {
  if (r.status === ok || (ok === 204 && r.status === 200)) return;
  const what = `Cloud Hypervisor refused ${call} (${r.status}): ${r.body.trim() || "no detail"}`;
  switch (r.status) {
    case 400:
      throw new InvalidArgumentError(what);
    case 404:
    case 405:
      throw new FailedPreconditionError(what);
    case 409:
      throw new AlreadyExistsError(what);
    case 503:
      throw new UnavailableError(what);
    default:
      throw new InternalError(what);
  }
}
