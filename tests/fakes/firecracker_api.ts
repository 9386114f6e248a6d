/**
 * A contract fake of Firecracker's API on a unix socket, for the driver's tests: every request
 * is checked against the published Swagger document (tests/fixtures/firecracker/swagger.json)
 * (error texts are Firecracker's own, from its api_server and vmm sources)
 * and against the rules Firecracker applies (pre-boot calls refused once started, a path id
 * that must match the body's, InstanceStart only with a kernel and only once, SMT with an even
 * vCPU count), and answered as it answers: 204, or 400 with a `fault_message`; `GET /` as its
 * InstanceInfo. What it would refuse is recorded in `violations`. Once started, its vsock
 * socket speaks hybrid vsock (hybrid_vsock.ts); Ctrl-Alt-Del ends the "process".
 *
 * @module
 */
import { OpenApiContract } from "./openapi_contract.ts";
import { type GuestPorts, serveHybridVsock } from "./hybrid_vsock.ts";

const SPEC = JSON.parse(
  await Deno.readTextFile(new URL("../fixtures/firecracker/swagger.json", import.meta.url)),
);

// deno-lint-ignore no-explicit-any
type Json = any;

export interface FcCallRecord {
  readonly method: string;
  readonly path: string;
  readonly body: Json;
  readonly status: number;
}

const AFTER_START = "The requested operation is not supported after starting the microVM.";

/** The calls Firecracker takes only before InstanceStart (released versions: no hot-plug). */
const PRE_BOOT = /^\/(boot-source|machine-config|vsock|network-interfaces\/|drives\/|cpu-config)/;

export class FcApiFake {
  readonly contract = new OpenApiContract(SPEC);
  readonly calls: FcCallRecord[] = [];
  readonly violations: string[] = [];
  #server: Deno.HttpServer;
  #started = false;
  #config: Record<string, Json> = {};
  #vsock: Deno.Listener | undefined;
  #exited = Promise.withResolvers<void>();

  /** `id`: the instance id (`--id`), echoed by `GET /`. */
  constructor(
    readonly socket: string,
    readonly guestPorts: GuestPorts = {},
    readonly id = "anonymous-instance",
    /** Told after every call (a stand-in binary records them for its test). */
    readonly onCall?: (fake: FcApiFake) => void,
  ) {
    this.#server = Deno.serve({ path: socket, onListen: () => {} }, (req) => this.#handle(req));
  }

  get exited(): Promise<void> {
    return this.#exited.promise;
  }

  /** What the VM was given, by call path. */
  get config(): Record<string, Json> {
    return this.#config;
  }

  /** The drives re-pointed on the running VM, in order. */
  readonly patches: { drive: string; path: string }[] = [];

  /**
   * The serial the guest would read for drive `id` now: Firecracker's image id of the file
   * it points at (st_dev, st_rdev, st_ino, run together, cut at 20 bytes).
   */
  serialOf(id: string): string {
    const st = Deno.statSync(this.#config[`/drives/${id}`].path_on_host);
    return `${st.dev}${st.rdev ?? 0}${st.ino ?? 0}`.slice(0, 20);
  }

  /** Why Firecracker could not open a drive's file (it opens it at once), if it could not. */
  async #openable(path: string | undefined): Promise<string | undefined> {
    if (path === undefined) return undefined;
    const st = await Deno.stat(path).catch(() => undefined);
    if (!st || !(st.isFile || st.isBlockDevice)) {
      return `Unable to create the block device: BackingFile(Os { code: 2, kind: NotFound, message: "No such file or directory" }, "${path}")`;
    }
    return undefined;
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
    try {
      body = text ? JSON.parse(text) : undefined;
    } catch {
      return this.#answer(req.method, path, body, 400, "body is not JSON");
    }
    if (typeof this.contract.operation(req.method, path) === "string") {
      const name = path.replace(/^\//, "");
      const why = `Invalid request method and/or path: ${req.method} ${name}.`;
      return this.#answer(req.method, path, body, 400, why);
    }
    const wrong = this.contract.checkRequest(req.method, path, body);
    if (wrong.length) return this.#answer(req.method, path, body, 400, wrong.join("; "));
    const [status, answer] = await this.#do(req.method, path, body);
    return this.#answer(req.method, path, body, status, answer);
  }

  #answer(method: string, path: string, body: Json, status: number, answer: Json): Response {
    this.calls.push({ method, path, body, status });
    queueMicrotask(() => this.onCall?.(this));
    if (status >= 400) {
      this.violations.push(`${method} ${path} → ${status}: ${answer}`);
      return Response.json({ fault_message: String(answer) }, { status });
    }
    if (answer === undefined) return new Response(null, { status });
    const schema = this.contract.responseSchema(method, path, status);
    const bad = schema ? this.contract.validate(schema, answer, `answer of ${path}`) : [];
    if (bad.length) throw new Error(`the fake answered out of contract: ${bad.join("; ")}`);
    return Response.json(answer, { status });
  }

  async #do(method: string, path: string, body: Json): Promise<[number, Json]> {
    if (method === "GET" && path === "/") {
      return [200, {
        app_name: "Firecracker",
        id: this.id,
        state: this.#started ? "Running" : "Not started",
        vmm_version: "1.17.0",
      }];
    }
    if (PRE_BOOT.test(path) && method === "PUT") {
      if (this.#started) return [400, AFTER_START];
      const id = /^\/(network-interfaces|drives)\/(.+)$/.exec(path);
      if (id) {
        // Ids are taken as they are (not percent-decoded): letters, digits and _ only.
        if (!/^[A-Za-z0-9_]+$/.test(id[2])) return [400, `Invalid id: ${id[2]}`];
        const field = id[1] === "drives" ? "drive_id" : "iface_id";
        if (body[field] !== id[2]) {
          return [
            400,
            `The id from the path [${id[2]}] does not match the id from the body [${body[field]}]!`,
          ];
        }
      }
      if (path === "/vsock") {
        // Firecracker binds the socket here: one left over from an earlier run is refused.
        this.#vsock?.close();
        try {
          this.#vsock = await serveHybridVsock(body.uds_path, this.guestPorts);
        } catch (e) {
          return [400, `Cannot create backend for vsock device: ${(e as Error).message}`];
        }
      }
      if (path === "/machine-config" && body.smt && body.vcpu_count > 1 && body.vcpu_count % 2) {
        return [
          400,
          "The vCPU number is invalid! The vCPU number can only be 1 or an even number when SMT is enabled.",
        ];
      }
      if (id?.[1] === "drives") {
        if (body.socket === undefined && body.is_read_only === undefined) {
          return [400, "is_read_only is required for a virtio-block drive"];
        }
        const why = await this.#openable(body.path_on_host);
        if (why) return [400, why];
      }
      if (path === "/boot-source") {
        for (const f of [body.kernel_image_path, body.initrd_path].filter((f) => f !== undefined)) {
          if (!(await Deno.stat(f).then(() => true, () => false))) {
            return [400, `Cannot open ${f}: No such file or directory`];
          }
        }
      }
      this.#config[path] = body;
      return [204, undefined];
    }
    // Post-boot only: a drive re-pointed at another file (its rate limiter aside).
    const drive = /^\/drives\/(.+)$/.exec(path);
    if (drive && method === "PATCH") {
      if (!this.#started) {
        return [400, "The requested operation is not supported before starting the microVM."];
      }
      if (body.drive_id !== drive[1]) {
        return [
          400,
          `The id from the path [${
            drive[1]
          }] does not match the id from the body [${body.drive_id}]!`,
        ];
      }
      const had = this.#config[path];
      if (!had) return [400, `Invalid block device ID: ${drive[1]}`];
      if (body.path_on_host !== undefined) {
        const why = await this.#openable(body.path_on_host);
        if (why) return [400, why];
      }
      this.#config[path] = { ...had, ...body };
      this.patches.push({ drive: drive[1], path: body.path_on_host });
      return [204, undefined];
    }
    if (path === "/actions") {
      switch (body.action_type) {
        case "InstanceStart":
          if (this.#started) return [400, AFTER_START];
          if (!this.#config["/boot-source"]) {
            return [400, "Start microvm error: Cannot start microvm without kernel configuration."];
          }
          this.#started = true;
          return [204, undefined];
        case "SendCtrlAltDel":
          if (!this.#started) {
            return [400, "The requested operation is not supported before starting the microVM."];
          }
          // The guest reboots; Firecracker does not reboot guests: the process ends.
          queueMicrotask(() => this.close().then(() => this.#exited.resolve()));
          return [204, undefined];
        default: // FlushMetrics: there is no metrics file here
          return [400, "The metrics system is not initialized."];
      }
    }
    return [400, `the fake does not model ${method} ${path}`];
  }
}
