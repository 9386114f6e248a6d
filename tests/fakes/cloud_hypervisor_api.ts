/**
 * A contract fake of Cloud Hypervisor's REST API on a unix socket, for the
 * driver's tests: every request is checked against the published OpenAPI
 * document (tests/fixtures/cloud-hypervisor/openapi.json) and against the
 * rules the real VMM applies (the VM's state machine, `VmConfig::validate`'s
 * checks, hot-plug limits), and answered as it answers: status codes, error
 * text, `vm.info` and `PciDeviceInfo` shapes (which are checked against the
 * document too). Status codes are those of the released versions (v40-v53):
 * a request the API layer refuses is 400, an unknown path 404, anything the
 * VMM itself refuses (validation, a duplicate or unknown id) 500. What the
 * VMM would refuse is answered with its error and recorded in `violations`:
 * a test that expects none asserts it is empty.
 *
 * Its vsock socket speaks hybrid vsock: `CONNECT <port>\n` is answered
 * `OK <n>\n` and the stream handed to the guest listener of that port, or
 * closed when there is none (as the real VMM does).
 *
 * @module
 */
import { OpenApiContract } from "./openapi_contract.ts";
import { type GuestPorts, serveHybridVsock } from "./hybrid_vsock.ts";

const SPEC = JSON.parse(
  await Deno.readTextFile(
    new URL("../fixtures/cloud-hypervisor/openapi.json", import.meta.url),
  ),
);

// deno-lint-ignore no-explicit-any
type Json = any;

/** One request the fake received. */
export interface ChCall {
  readonly method: string;
  readonly path: string;
  readonly body: Json;
  readonly status: number;
}

export interface ChFakeOptions {
  /** Guest services by vsock port: each gets the stream of a hybrid vsock CONNECT. */
  readonly guestPorts?: GuestPorts;
  /** How long the guest takes to eject a removed device (ACPI), in ms. */
  readonly ejectMs?: number;
  /** Told after each request is answered. */
  readonly onCall?: (fake: ChApiFake) => void;
}

type State = "Created" | "Running" | "Shutdown";

export class ChApiFake {
  readonly contract = new OpenApiContract(SPEC);
  readonly calls: ChCall[] = [];
  readonly violations: string[] = [];
  #server: Deno.HttpServer;
  #state: State | undefined;
  #config: Json;
  /** Device id → its PCI BDF. */
  #devices = new Map<string, string>();
  #nextSlot = 1;
  #bootMemory = 0;
  #memoryPlugs = 0;
  #vsock: Deno.Listener | undefined;
  #exited = Promise.withResolvers<void>();
  #opts: ChFakeOptions;

  constructor(readonly socket: string, opts: ChFakeOptions = {}) {
    this.#opts = opts;
    this.#server = Deno.serve(
      { path: socket, onListen: () => {} },
      (req) => this.#handle(req),
    );
  }

  /** Resolves when `vmm.shutdown` ended the "process". */
  get exited(): Promise<void> {
    return this.#exited.promise;
  }

  get state(): State | undefined {
    return this.#state;
  }

  get config(): Json {
    return this.#config;
  }

  /** Ids of the devices the VM has now. */
  get devices(): string[] {
    return [...this.#devices.keys()];
  }

  async close(): Promise<void> {
    this.#vsock?.close();
    this.#vsock = undefined;
    await this.#server.shutdown();
    await Deno.remove(this.socket).catch(() => {});
  }

  async #handle(req: Request): Promise<Response> {
    const path = new URL(req.url).pathname;
    const text = await req.text();
    let body: Json;
    if (text) {
      try {
        body = JSON.parse(text);
      } catch {
        return this.#answer(req.method, path, undefined, 400, "body is not JSON", true);
      }
    }
    const wrong = this.contract.checkRequest(req.method, path, body);
    if (wrong.length) {
      // As the VMM: a path it serves answers a bad request 400 (a wrong method too); others 404.
      const known = this.contract.hasPath(path);
      return this.#answer(req.method, path, body, known ? 400 : 404, wrong.join("; "), true);
    }
    const [status, answer] = await this.#do(path.replace(/^\/api\/v1/, ""), body);
    return this.#answer(req.method, path, body, status, answer, status >= 400);
  }

  #answer(
    method: string,
    path: string,
    body: Json,
    status: number,
    answer: Json,
    violation: boolean,
  ): Response {
    this.calls.push({ method, path, body, status });
    if (violation) this.violations.push(`${method} ${path} → ${status}: ${String(answer)}`);
    this.#opts.onCall?.(this);
    if (status === 204 || answer === undefined) return new Response(null, { status });
    if (typeof answer === "string") return new Response(answer, { status });
    // The fake's own answers must be what the document says they are.
    const schema = this.contract.responseSchema(method, path, status);
    const bad = schema ? this.contract.validate(schema, answer, `answer of ${path}`) : [];
    if (bad.length) throw new Error(`the fake answered out of contract: ${bad.join("; ")}`);
    return Response.json(answer, { status });
  }

  /** What the VMM does with a valid request: [status, body]. */
  async #do(call: string, body: Json): Promise<[number, Json]> {
    const created = this.#state !== undefined;
    switch (call) {
      case "/vmm.ping":
        return [200, { version: "v48.0", build_version: "v48.0-fake", pid: Deno.pid }];
      case "/vmm.shutdown":
        this.#state = "Shutdown";
        queueMicrotask(() => this.close().then(() => this.#exited.resolve()));
        return [204, undefined];
      case "/vm.info":
        if (!created) return [404, "VM is not created"];
        return [200, {
          config: this.#config,
          state: this.#state,
          memory_actual_size: this.#config.memory.size + (this.#config.memory.hotplugged_size ?? 0),
          device_tree: Object.fromEntries(
            [...this.#devices].map(([id, bdf]) => [id, { id, pci_bdf: bdf, children: [] }]),
          ),
        }];
      case "/vm.create": {
        if (created) return [500, "Error creating VM: VmAlreadyCreated"];
        const why = validateVmConfig(body);
        if (why) return [500, `Error creating VM: ${why}`];
        this.#config = structuredClone(body);
        this.#bootMemory = body.memory?.size ?? 512 << 20;
        this.#state = "Created";
        return [204, undefined];
      }
      case "/vm.boot": {
        if (!created) return [404, "Error booting VM: VmNotCreated"];
        if (this.#state !== "Created") return [500, "Error booting VM: VmAlreadyBooted"];
        const p = this.#config.payload;
        for (const f of [p.kernel, p.initramfs].filter((f) => f !== undefined)) {
          if (!(await exists(f))) return [500, `Error booting VM: cannot open ${f}`];
        }
        for (const fs of this.#config.fs ?? []) {
          if (!(await exists(fs.socket))) {
            return [500, `Error booting VM: vhost-user socket ${fs.socket} does not answer`];
          }
        }
        if (this.#config.serial?.mode === "File") {
          await Deno.writeTextFile(this.#config.serial.file, "");
        }
        if (this.#config.vsock?.socket) {
          this.#vsock = await serveHybridVsock(
            this.#config.vsock.socket,
            this.#opts.guestPorts ?? {},
          );
        }
        for (
          const d of [
            ...this.#config.disks ?? [],
            ...this.#config.net ?? [],
            ...this.#config.fs ?? [],
          ]
        ) {
          this.#devices.set(d.id, this.#bdf());
        }
        this.#state = "Running";
        return [204, undefined];
      }
      case "/vm.add-disk":
      case "/vm.add-net": {
        if (!created) return [404, "VM is not created"];
        const id = body.id ?? `_dev${this.#devices.size}`;
        if (this.#devices.has(id)) return [500, `Error adding device: IdentifierNotUnique(${id})`];
        if (call === "/vm.add-disk" && !(await exists(body.path ?? ""))) {
          return [500, `Error adding device to the VM: cannot open disk path ${body.path}`];
        }
        if (call === "/vm.add-net") {
          const why = validateNet(body);
          if (why) return [500, why];
        }
        if (this.#devices.size >= 31) return [500, "Error adding device: no PCI slot left"];
        const bdf = this.#bdf();
        this.#devices.set(id, bdf);
        if (this.#state !== "Running") return [204, undefined];
        return [200, { id, bdf }];
      }
      case "/vm.remove-device": {
        if (!created) return [404, "VM is not created"];
        if (!this.#devices.has(body.id)) {
          return [500, `Error removing device: UnknownDeviceId(${body.id})`];
        }
        // The guest ejects it (ACPI); until then it is still in the device tree.
        setTimeout(() => this.#devices.delete(body.id), this.#opts.ejectMs ?? 100);
        return [204, undefined];
      }
      case "/vm.resize": {
        if (!created) return [404, "VM is not created"];
        const c = this.#config;
        if (body.desired_vcpus !== undefined) {
          if (body.desired_vcpus > c.cpus.max_vcpus) {
            return [500, `Error resizing VM: DesiredVCpuCountExceedsMax (${c.cpus.max_vcpus})`];
          }
        }
        if (body.desired_ram !== undefined && body.desired_ram > c.memory.size) {
          // ACPI hot-plug: the boot size plus hotplug_size at most, grown by whole 128 MiB
          // blocks, in at most 8 steps; the new size becomes the config's.
          const max = this.#bootMemory + (c.memory.hotplug_size ?? 0);
          if (!c.memory.hotplug_size) {
            return [500, "Error resizing VM: memory hotplug is not configured (hotplug_size)"];
          }
          if (body.desired_ram > max) {
            return [500, `Error resizing VM: desired RAM beyond the hotplug size (${max})`];
          }
          if ((body.desired_ram - c.memory.size) % (128 << 20)) {
            return [500, "Error resizing VM: memory is hot-plugged in 128 MiB blocks"];
          }
          if (this.#memoryPlugs >= 8) return [500, "Error resizing VM: InvalidAmountExceeded"];
        }
        if (body.desired_vcpus !== undefined) c.cpus.boot_vcpus = body.desired_vcpus;
        if (body.desired_ram !== undefined && body.desired_ram > c.memory.size) {
          c.memory.size = body.desired_ram;
          this.#memoryPlugs++;
        }
        return [204, undefined];
      }
      default:
        return [500, `the fake does not model ${call}`];
    }
  }

  #bdf(): string {
    return `0000:00:${(this.#nextSlot++).toString(16).padStart(2, "0")}.0`;
  }
}

/** `VmConfig::validate`'s checks that the document's schema cannot say. */
function validateVmConfig(c: Json): string | undefined {
  if (!c.payload?.kernel && !c.payload?.firmware) return "ValidationError: KernelMissing";
  const cpus = c.cpus ?? { boot_vcpus: 1, max_vcpus: 1 };
  if (cpus.max_vcpus < cpus.boot_vcpus) return "ValidationError: CpusMaxLowerThanBoot";
  const mem = c.memory ?? {};
  const vhostUser = (c.fs ?? []).length > 0 ||
    [...c.disks ?? [], ...c.net ?? []].some((d: Json) => d.vhost_user);
  if (vhostUser && !mem.shared && !mem.hugepages) {
    return "ValidationError: VhostUserRequiresSharedMemory";
  }
  if (mem.hotplug_method !== undefined && !["Acpi", "VirtioMem"].includes(mem.hotplug_method)) {
    return `unknown variant \`${mem.hotplug_method}\`, expected \`Acpi\` or \`VirtioMem\``;
  }
  if (mem.hotplug_size !== undefined && mem.hotplug_size % (128 << 20)) {
    return "ValidationError: memory hotplug_size must be a multiple of 128 MiB";
  }
  for (const s of [c.serial, c.console].filter(Boolean)) {
    if (s.mode === "File" && !s.file) return "ValidationError: ConsoleFileMissing";
    if (s.mode === "Socket" && !s.socket) return "ValidationError: ConsoleSocketPathMissing";
  }
  for (const n of c.net ?? []) {
    const why = validateNet(n);
    if (why) return why;
  }
  const ids = [...c.disks ?? [], ...c.net ?? [], ...c.fs ?? []].map((d: Json) => d.id)
    .filter(Boolean);
  if (new Set(ids).size !== ids.length) return "ValidationError: IdentifierNotUnique";
  return undefined;
}

function validateNet(n: Json): string | undefined {
  if (n.tap !== undefined && (n.tap.length === 0 || n.tap.length > 15)) {
    return `ValidationError: tap name "${n.tap}" (1-15 bytes)`;
  }
  if (n.mac !== undefined && !/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i.test(n.mac)) {
    return `ValidationError: bad MAC ${n.mac}`;
  }
  if (n.num_queues !== undefined && (n.num_queues < 2 || n.num_queues % 2)) {
    return "ValidationError: InvalidNumQueues (a pair per RX/TX)";
  }
  return undefined;
}

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}
