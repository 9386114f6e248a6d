/**
 * The host side of a hybrid vsock device as Cloud Hypervisor and Firecracker serve it: a unix
 * socket where a client writes `CONNECT <port>\n` and is answered `OK <host port>\n` before the
 * stream is the guest's, or is closed when nothing in the guest listens on that port.
 *
 * @module
 */

/** Guest listeners by vsock port: each gets the stream of an accepted CONNECT. */
export type GuestPorts = Readonly<Record<number, (conn: Deno.Conn) => void>>;

/** Serves `path`; the VMM fails to start where the socket already exists, so does this. */
export async function serveHybridVsock(path: string, ports: GuestPorts): Promise<Deno.Listener> {
  if (await Deno.stat(path).then(() => true, () => false)) {
    throw new Error(`vsock socket ${path} exists: the real VMM fails here`);
  }
  const l = Deno.listen({ transport: "unix", path });
  (async () => {
    for await (const conn of l) connect(conn, ports);
  })().catch(() => {});
  return l;
}

async function connect(conn: Deno.Conn, ports: GuestPorts): Promise<void> {
  const line: number[] = [];
  const one = new Uint8Array(1);
  while (line.length < 32) {
    if ((await conn.read(one).catch(() => null)) === null) return conn.close();
    if (one[0] === 0x0a) break;
    line.push(one[0]);
  }
  const m = /^CONNECT (\d+)$/.exec(new TextDecoder().decode(Uint8Array.from(line)));
  const guest = m ? ports[Number(m[1])] : undefined;
  if (!guest) return conn.close();
  await conn.write(new TextEncoder().encode(`OK ${1073741824 + Number(m![1])}\n`));
  guest(conn);
}
