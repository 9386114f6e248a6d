/**
 * A contract fake of StratoVirt for the driver's tests, from what StratoVirt
 * publishes (tests/fixtures/stratovirt/interface.json, transcribed from its
 * command-line parser, config guidebook and QMP schema):
 *
 * - `checkArgv` finds what StratoVirt would refuse in a command line: an
 *   unknown option, a device driver or property its guidebook does not list,
 *   a PCI device without an explicit `bus`/`addr`, two devices at one slot;
 * - `SvQmpFake` serves QMP on a unix socket as StratoVirt does: one client at
 *   a time (the next is greeted when the first leaves), its greeting, each
 *   command's arguments checked as its
 *   schema's `deny_unknown_fields` structs do (names and types), hot-plug only
 *   into the command line's free root ports at addr 0x0, DEVICE_DELETED once
 *   the guest let a device go, `quit` ending the process. What StratoVirt
 *   would refuse is answered with its error and recorded in `violations`.
 *
 * @module
 */
const SPEC = JSON.parse(
  await Deno.readTextFile(new URL("../fixtures/stratovirt/interface.json", import.meta.url)),
);

// deno-lint-ignore no-explicit-any
type Json = any;

/** The `k=v` properties of a `-device`/`-netdev`/… value after its first field. */
function props(value: string): [string, Map<string, string>] {
  const [first, ...rest] = value.split(",");
  return [first, new Map(rest.map((p) => [p.split("=")[0], p.slice(p.indexOf("=") + 1)]))];
}

/** What StratoVirt would refuse in `argv` (argv[0] is the binary); empty: nothing. */
export function checkArgv(argv: readonly string[]): string[] {
  const out: string[] = [];
  const slots = new Set<string>();
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith("-")) {
      out.push(`${a}: not an option`);
      continue;
    }
    const name = a.replace(/^-+/, "");
    if (!SPEC.options.includes(name)) {
      out.push(`-${name}: StratoVirt has no such option`);
      continue;
    }
    if (SPEC.flags.includes(name)) continue;
    const value = argv[++i];
    if (value === undefined) {
      out.push(`-${name}: no value`);
      continue;
    }
    const [first, p] = props(value);
    if (name === "device") {
      const allowed: string[] | undefined = SPEC.devices[first];
      if (!allowed) {
        out.push(`-device ${first}: not a driver the guidebook lists`);
        continue;
      }
      for (const k of p.keys()) {
        if (!allowed.includes(k)) out.push(`-device ${first}: no property ${k}`);
      }
      if (first.endsWith("-pci") || first === "pcie-root-port") {
        if (!p.has("bus") || !p.has("addr")) {
          out.push(`-device ${first}: bus and addr are required`);
        }
        // Slot 0 is the host bridge, 0x1f the ICH9 LPC bridge, 31 the last (config/pci.rs).
        const n = Number(p.get("addr"));
        if (p.get("bus") === "pcie.0" && !(n >= 1 && n <= 0x1e)) {
          out.push(`-device ${first}: addr ${p.get("addr")} is not a free slot of pcie.0`);
        }
        const slot = `${p.get("bus")}/${p.get("addr")}`;
        if (slots.has(slot)) out.push(`-device ${first}: ${slot} is taken`);
        slots.add(slot);
      }
    } else if (["netdev", "chardev", "object", "serial"].includes(name)) {
      const allowed: string[] | undefined = SPEC.backends[`${name} ${first}`];
      if (!allowed) out.push(`-${name} ${first}: not a backend this fake knows`);
      else {
        for (const k of p.keys()) {
          if (!allowed.includes(k) && k !== first) out.push(`-${name} ${first}: no property ${k}`);
        }
      }
      // Queue pairs, doubled by StratoVirt into at most 32 queues (parse_queues).
      const q = p.get("queues");
      if (q !== undefined && !(Number(q) >= 1 && Number(q) <= 16)) {
        out.push(`-${name} ${first}: queues=${q} is not 1-16 pairs`);
      }
    } else if (name === "drive") {
      const [, dp] = props("x," + value);
      if (dp.get("if") !== "pflash") out.push("-drive: only pflash drives are expected on argv");
      for (const k of dp.keys()) {
        if (!SPEC.backends["drive pflash"].includes(k)) out.push(`-drive: no property ${k}`);
      }
    }
  }
  return out;
}

/** A JSON value's type, as the schema entries name them. */
function kindOf(v: unknown): string {
  return typeof v;
}

/** What is wrong with QMP `arguments` against a transcribed schema entry. */
function checkArgs(schema: Json, args: Json, at: string): string[] {
  if (args === undefined) args = {};
  if (typeof args !== "object" || Array.isArray(args)) return [`${at}: not an object`];
  const out: string[] = [];
  for (const r of schema.required ?? []) {
    if (!Object.hasOwn(args, r)) out.push(`${at}: missing field \`${r}\``);
  }
  for (const [k, v] of Object.entries(args)) {
    const t = schema.properties && Object.hasOwn(schema.properties, k)
      ? schema.properties[k]
      : undefined;
    if (t === undefined) out.push(`${at}: unknown field \`${k}\``);
    else if (typeof t === "object") out.push(...checkArgs(t, v, `${at}.${k}`));
    else if (!(t === "integer" ? Number.isInteger(v) : kindOf(v) === t)) {
      out.push(`${at}.${k}: invalid type, expected ${t}`);
    }
  }
  return out;
}

export interface SvCall {
  readonly execute: string;
  readonly arguments: Json;
  readonly error?: string;
}

export class SvQmpFake {
  readonly calls: SvCall[] = [];
  readonly violations: string[] = [];
  #listener: Deno.Listener;
  #ports: string[];
  /** Root port → the device plugged into it. */
  #plugged = new Map<string, string>();
  #blockdevs = new Set<string>();
  #netdevs = new Set<string>();
  #devices = new Map<string, { port: string; drive?: string }>();
  #exited = Promise.withResolvers<void>();
  #conns = new Set<Deno.Conn>();

  /** Serves QMP on `socket` for a VM started with `argv` (its root ports are the hot-plug room). */
  constructor(readonly socket: string, argv: readonly string[], readonly ejectMs = 50) {
    this.#ports = argv.filter((a) => a.startsWith("pcie-root-port,"))
      .map((a) => props(a)[1].get("id")!);
    const listener = Deno.listen({ transport: "unix", path: socket });
    this.#listener = listener;
    (async () => {
      // One client at a time: the next is greeted once the one before has left.
      let turn = Promise.resolve();
      for await (const c of listener) {
        this.#conns.add(c);
        turn = turn.then(() => this.#serve(c));
      }
    })().catch(() => {});
  }

  get exited(): Promise<void> {
    return this.#exited.promise;
  }

  /** Devices plugged into root ports now. */
  get devices(): string[] {
    return [...this.#devices.keys()];
  }

  get blockdevs(): string[] {
    return [...this.#blockdevs];
  }

  close(): void {
    try {
      this.#listener.close();
    } catch { /* closed */ }
    for (const c of this.#conns) {
      try {
        c.close();
      } catch { /* closed */ }
    }
    Deno.removeSync(this.socket);
  }

  async #serve(conn: Deno.Conn): Promise<void> {
    const send = (m: Json) => conn.write(new TextEncoder().encode(JSON.stringify(m) + "\n"));
    await send(SPEC.qmp.greeting);
    let buf = "";
    const chunk = new Uint8Array(4096);
    try {
      for (;;) {
        const n = await conn.read(chunk);
        if (n === null) break;
        buf += new TextDecoder().decode(chunk.subarray(0, n));
        let nl: number;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (!line) continue;
          const msg = JSON.parse(line);
          // StratoVirt keeps no negotiation state: qmp_capabilities is accepted, not required.
          const [answer, events] = this.#execute(msg.execute, msg.arguments);
          for (const { delayMs, ...e } of events ?? []) {
            setTimeout(() => send(e).catch(() => {}), delayMs ?? 0);
          }
          await send(answer);
          if (msg.execute === "quit" && "return" in answer) {
            await send(event("SHUTDOWN", { guest: false, reason: "host-qmp-quit" }));
            this.close();
            this.#exited.resolve();
            return;
          }
        }
      }
    } catch { /* closed */ }
    this.#conns.delete(conn);
    try {
      conn.close();
    } catch { /* closed */ }
  }

  #refuse(execute: string, args: Json, cls: string, desc: string): Json {
    this.calls.push({ execute, arguments: args, error: desc });
    this.violations.push(`${execute}: ${cls}: ${desc}`);
    return { error: { class: cls, desc } };
  }

  /** [answer, events to send after it] */
  #execute(execute: string, args: Json): [Json, (Json & { delayMs?: number })[]?] {
    const schema = SPEC.qmp.commands[execute];
    if (!schema) return [this.#refuse(execute, args, "CommandNotFound", `${execute} is not known`)];
    const wrong = checkArgs(schema, args, execute);
    if (wrong.length) return [this.#refuse(execute, args, "GenericError", wrong.join("; "))];
    const a = args ?? {};
    const fail = (desc: string) => this.#refuse(execute, args, "GenericError", desc);
    switch (execute) {
      case "query-status":
        this.calls.push({ execute, arguments: args });
        return [{ return: { running: true, singlestep: false, status: "running" } }];
      case "blockdev-add":
        if (this.#blockdevs.has(a["node-name"])) return [fail(`${a["node-name"]} exists`)];
        if (a.driver !== undefined && a.driver !== "raw" && a.driver !== "qcow2") {
          return [fail(`unknown format ${a.driver}`)];
        }
        try {
          Deno.statSync(a.file.filename);
        } catch {
          return [fail(`Failed to open ${a.file.filename}`)];
        }
        this.#blockdevs.add(a["node-name"]);
        break;
      case "blockdev-del":
        if (!this.#blockdevs.delete(a["node-name"])) {
          return [fail(`Drive ${a["node-name"]} not found`)];
        }
        break;
      case "netdev_add":
        if (this.#netdevs.has(a.id)) return [fail(`netdev ${a.id} exists`)];
        if (a.queues !== undefined && !(a.queues >= 1 && a.queues <= 16)) {
          return [fail("number queues of net device: 1 to 16 pairs")];
        }
        this.#netdevs.add(a.id);
        break;
      case "netdev_del":
        if (!this.#netdevs.delete(a.id)) return [fail(`Net device ${a.id} not found`)];
        break;
      case "device_add": {
        if (this.#devices.has(a.id)) return [fail(`Device ${a.id} exists`)];
        if (!this.#ports.includes(a.bus)) {
          return [fail(`hot-plug needs a pcie-root-port bus: ${a.bus} is none`)];
        }
        if (this.#plugged.has(a.bus)) return [fail(`${a.bus} already has a device`)];
        if (a.addr !== "0x0") return [fail("The slot of a device on a root port must be 0")];
        if (a.driver === "virtio-blk-pci" && !this.#blockdevs.has(a.drive)) {
          return [fail(`No drive ${a.drive}`)];
        }
        if (a.driver === "virtio-net-pci" && !this.#netdevs.has(a.netdev)) {
          return [fail(`No netdev ${a.netdev}`)];
        }
        if (a.mq !== undefined && a.mq !== "on" && a.mq !== "off") return [fail("mq: on or off")];
        this.#plugged.set(a.bus, a.id);
        this.#devices.set(a.id, { port: a.bus, drive: a.drive });
        break;
      }
      case "device_del": {
        const d = this.#devices.get(a.id);
        // An unknown id falls through StratoVirt's PCI lookup to its USB one.
        if (!d) return [fail("Can not find parent device from pci bus")];
        // The guest lets it go (PCIe hot-unplug), then StratoVirt says so.
        this.calls.push({ execute, arguments: args });
        setTimeout(() => {
          this.#devices.delete(a.id);
          this.#plugged.delete(d.port);
        }, this.ejectMs);
        return [{ return: {} }, [{
          ...event("DEVICE_DELETED", { device: a.id, path: a.id }),
          delayMs: this.ejectMs,
        }]];
      }
    }
    this.calls.push({ execute, arguments: args });
    return [{ return: {} }];
  }
}

function event(name: string, data: Json): Json {
  const t = Date.now();
  return {
    event: name,
    data,
    timestamp: { seconds: Math.floor(t / 1000), microseconds: (t % 1000) * 1000 },
  };
}
