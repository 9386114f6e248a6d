/**
 * A VM pod's network: the CNI plugin configured interfaces in the pod's
 * netns; each gets a tap next to it, joined to it by tc mirred redirects in
 * both directions (as Kata and Kuasar do), and QEMU gives the guest a
 * virtio-net device on the tap with the interface's MAC. The guest agent
 * then takes the addresses and routes (SetupSandbox). An interface a CNI
 * plugin adds after the pod started is mirrored the same way and its NIC
 * hot-plugged (UpdateInterfaces, UpdateRoutes).
 *
 * @module
 */
import { runChecked } from "../os/command.ts";
import type { Interface, Route } from "../../gen/kuasar/sandbox.ts";

/** One CNI interface mirrored into the VM. */
export interface MirroredInterface {
  readonly name: string;
  readonly tap: string;
  /** The hot-plug slot of its NIC; unset: the VM had it from boot. */
  readonly slot?: number;
  readonly mac: string;
  readonly mtu: number;
  readonly addresses: readonly { family: "inet" | "inet6"; local: string; prefixlen: number }[];
}

interface IpAddrJson {
  ifname: string;
  address?: string;
  mtu?: number;
  link_type?: string;
  addr_info?: { family: string; local: string; prefixlen: number; scope?: string }[];
}

interface IpRouteJson {
  dst: string;
  gateway?: string;
  dev?: string;
  prefsrc?: string;
  scope?: string;
  protocol?: string;
}

function inNetns(netns: string, argv: string[]): string[] {
  return ["nsenter", `--net=${netns}`, "--", ...argv];
}

/** The interfaces of a pod's netns worth mirroring: not loopback, with a global address. */
export async function podInterfaces(netns: string): Promise<IpAddrJson[]> {
  const r = await runChecked(inNetns(netns, ["ip", "-j", "addr", "show"]));
  return (JSON.parse(r.stdout) as IpAddrJson[]).filter((i) =>
    i.link_type !== "loopback" && !i.ifname.startsWith("tap") &&
    (i.addr_info ?? []).some((a) => a.scope === "global")
  );
}

/** The alias a tap carries: what it mirrors, and the hot-plug slot of its NIC ("-": from boot). */
const MIRROR_ALIAS = /^kuasar-mirror:(-|\d+):(.+)$/;

/** The taps already made in the pod's netns: the interface each mirrors and its NIC's slot. */
export async function mirroredLinks(
  netns: string,
): Promise<{ tap: string; ifname: string; slot?: number }[]> {
  const r = await runChecked(inNetns(netns, ["ip", "-j", "link", "show"]));
  const out: { tap: string; ifname: string; slot?: number }[] = [];
  for (const l of JSON.parse(r.stdout || "[]") as { ifname: string; ifalias?: string }[]) {
    const m = MIRROR_ALIAS.exec(l.ifalias ?? "");
    if (!m || !/^tap\d+_kuasar$/.test(l.ifname)) continue;
    out.push({ tap: l.ifname, ifname: m[2], slot: m[1] === "-" ? undefined : Number(m[1]) });
  }
  return out;
}

/**
 * Creates a tap per interface not mirrored yet, and the tc redirects between them. With more
 * than one queue the taps are multi-queue, one queue per vCPU, as Kuasar makes them. At boot
 * (`firstSlot` unset) the VM gets the NICs on its command line; later ones are hot-plugged
 * into slots from `firstSlot` on. Each tap's alias records what it mirrors, so the netns
 * itself says what is done (after a daemon restart too).
 *
 * `via`: for a VM that runs in another netns (one made before its pod, `vmPool`), each tap is
 * made in `via.netns`, where the VMM opens it (`via.plug`, its NIC hot-plugged), and then moved
 * into the pod's netns: an open tap keeps its queues when it moves.
 */
export async function mirrorInterfaces(
  netns: string,
  queues = 1,
  firstSlot?: number,
  max = Infinity,
  via?: { netns: string; plug: (nic: MirroredInterface) => Promise<void> },
): Promise<MirroredInterface[]> {
  const out: MirroredInterface[] = [];
  const done = await mirroredLinks(netns);
  const taken = new Set(done.map((l) => l.tap));
  let index = 0;
  const links = (await unmirrored(netns, done)).slice(0, Math.max(0, max));
  for (const link of links) {
    while (taken.has(`tap${index}_kuasar`)) index++;
    const tap = `tap${index++}_kuasar`;
    const slot = firstSlot === undefined ? undefined : firstSlot + out.length;
    const ns = (argv: string[]) => runChecked(inNetns(netns, argv));
    const made = (argv: string[]) => runChecked(inNetns(via?.netns ?? netns, argv));
    await made([
      "ip",
      "tuntap",
      "add",
      "dev",
      tap,
      "mode",
      "tap",
      ...(queues > 1 ? ["multi_queue"] : []),
    ]);
    await made([
      "ip",
      "link",
      "set",
      "dev",
      tap,
      "alias",
      `kuasar-mirror:${slot ?? "-"}:${link.ifname}`,
    ]);
    const nic: MirroredInterface = {
      name: link.ifname,
      tap,
      slot,
      mac: link.address ?? "",
      mtu: link.mtu ?? 1500,
      addresses: (link.addr_info ?? [])
        .filter((a) => a.scope === "global" && (a.family === "inet" || a.family === "inet6"))
        .map((a) => ({
          family: a.family as "inet" | "inet6",
          local: a.local,
          prefixlen: a.prefixlen,
        })),
    };
    if (via) {
      try {
        await via.plug(nic);
      } finally {
        // Into the pod's netns even when the VMM refused it: the caller's undoing looks there.
        await made(["ip", "link", "set", "dev", tap, "netns", netns]);
      }
    }
    await ns(["ip", "link", "set", "dev", tap, "mtu", String(link.mtu ?? 1500), "up"]);
    for (const [from, to] of [[link.ifname, tap], [tap, link.ifname]]) {
      await ns(["tc", "qdisc", "add", "dev", from, "ingress"]);
      await ns([
        "tc",
        "filter",
        "add",
        "dev",
        from,
        "parent",
        "ffff:",
        "protocol",
        "all",
        "u32",
        "match",
        "u8",
        "0",
        "0",
        "action",
        "mirred",
        "egress",
        "redirect",
        "dev",
        to,
      ]);
    }
    out.push(nic);
  }
  return out;
}

/** The pod's interfaces no tap mirrors yet (`done`: the taps there, when known). */
export async function unmirrored(
  netns: string,
  done?: readonly { ifname: string }[],
): Promise<IpAddrJson[]> {
  const mirrored = new Set((done ?? await mirroredLinks(netns)).map((l) => l.ifname));
  return (await podInterfaces(netns)).filter((l) => !mirrored.has(l.ifname));
}

/**
 * Undoes `mirrorInterfaces` for one interface whose NIC the VM did not get: its tap and the
 * redirect from the interface go, so the next look finds it again (and says why, again).
 */
export async function unmirror(netns: string, nic: { name: string; tap: string }): Promise<void> {
  await runChecked(inNetns(netns, ["ip", "link", "del", nic.tap])).catch(() => {});
  await runChecked(inNetns(netns, ["tc", "qdisc", "del", "dev", nic.name, "ingress"]))
    .catch(() => {});
}

/** The pod netns's routes over the mirrored interfaces, for the guest. */
export async function podRoutes(
  netns: string,
  ifs: readonly { readonly name: string }[],
): Promise<Route[]> {
  const names = new Set(ifs.map((i) => i.name));
  const routes: Route[] = [];
  for (const [flag, family] of [["-4", 0], ["-6", 1]] as const) {
    const r = await runChecked(inNetns(netns, ["ip", flag, "-j", "route", "show"]));
    for (const rt of JSON.parse(r.stdout || "[]") as IpRouteJson[]) {
      if (!rt.dev || !names.has(rt.dev) || rt.protocol === "kernel") continue;
      routes.push({
        dest: rt.dst === "default" ? "" : rt.dst,
        gateway: rt.gateway ?? "",
        device: rt.dev,
        source: rt.prefsrc ?? "",
        scope: rt.scope === "link" ? 253 : 0,
        family,
        flags: 0,
      });
    }
  }
  return routes;
}

/** The mirrored interfaces as SetupSandbox describes them. */
export function guestInterfaces(ifs: readonly MirroredInterface[]): Interface[] {
  return ifs.map((i) => ({
    device: i.name,
    name: i.name,
    IPAddresses: i.addresses.map((a) => ({
      family: a.family === "inet" ? 0 : 1,
      address: a.local,
      mask: String(a.prefixlen),
    })),
    mtu: BigInt(i.mtu),
    hwAddr: i.mac,
    type: "",
    rawFlags: 0,
  }));
}
