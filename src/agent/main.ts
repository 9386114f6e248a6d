/**
 * kuasar-agent: PID 1 of a microVM pod (after the image's /init has mounted
 * the basic file systems and loaded the drivers). It serves Kuasar's
 * `grpc.SandboxService` over ttrpc to the host's sandboxer, on vsock port
 * 1024 where the host has vhost-vsock and on the virtio-serial port
 * "agent.0" otherwise, reaps orphans and powers the VM off on request.
 *
 * @module
 */
import { TtrpcServer } from "../adapters/ttrpc/server.ts";
import { InternalError, InvalidArgumentError } from "../domain/errors.ts";
import { setTraceBackend } from "../lib/trace.ts";
import { SpanRecorder } from "../lib/trace_recorder.ts";
import { unaryMethods } from "../adapters/ttrpc/typed.ts";
import { SandboxServiceDefinition } from "../gen/kuasar/sandbox.ts";
import {
  AGENT_PORT_NAME,
  AGENT_VSOCK_PORT,
  BOOT_ID,
  BOOT_RESEED,
  BOOT_SERVICE,
  DEBUG_PORT_NAME,
  TRACE_DRAIN,
  TRACE_SERVICE,
} from "../ports/agent_protocol.ts";
import { findVirtioPort, openPort } from "./channel.ts";
import { ownChild, powerOff, reseedKernelRandom, startReaper } from "./pid1.ts";
import { trackChildren } from "../adapters/os/children.ts";
import { sandboxService } from "./sandbox_service.ts";
import { GUEST_POD_DIR, GUEST_SCOPE, GuestEvents, serveGuestTasks } from "./tasks.ts";

function say(msg: string, fields: Record<string, unknown> = {}): void {
  console.error(JSON.stringify({ time: new Date().toISOString(), agent: msg, ...fields }));
}

const server = new TtrpcServer();
const events = new GuestEvents();
// Spans of the host's traces (a traceparent in the request), for the host to take and export.
const spans = new SpanRecorder();
setTraceBackend(spans);
server.register(TRACE_SERVICE, {
  [TRACE_DRAIN]: {
    kind: "unary",
    handle: () => Promise.resolve(new TextEncoder().encode(JSON.stringify(spans.drain()))),
  },
});
server.register(BOOT_SERVICE, {
  [BOOT_ID]: {
    kind: "unary",
    handle: async () =>
      new TextEncoder().encode((await Deno.readTextFile("/proc/sys/kernel/random/boot_id")).trim()),
  },
  [BOOT_RESEED]: { kind: "unary", handle: (seed) => reseed(seed) },
});

/**
 * The kernel's generator reseeded from the host's bytes, then Deno's own: it draws from the
 * kernel again after 64 KiB, so two of those are drawn and dropped.
 */
// deno-lint-ignore require-await
async function reseed(seed: Uint8Array): Promise<Uint8Array> {
  if (seed.length < 16 || seed.length > 512) {
    throw new InvalidArgumentError(`Reseed takes 16 to 512 bytes, not ${seed.length}`);
  }
  try {
    reseedKernelRandom(seed);
  } catch (e) {
    throw new InternalError(`reseed failed: ${e instanceof Error ? e.message : e}`);
  }
  for (let i = 0; i < 2; i++) crypto.getRandomValues(new Uint8Array(65536));
  return new TextEncoder().encode(`ok ${seed.length} bytes added, generator reseeded`);
}
server.register(
  SandboxServiceDefinition.fullName,
  unaryMethods(
    SandboxServiceDefinition,
    sandboxService(
      { procSys: "/proc/sys", resolvConf: "/etc/resolv.conf", podDir: GUEST_POD_DIR },
      (signal) => events.next(signal),
    ),
  ),
);

/** Serves the virtio-serial port, a ttrpc session per host connection. */
async function serveSerial(path: string): Promise<void> {
  const port = openPort(path);
  for (;;) await server.handle(await port.nextSession(), GUEST_SCOPE);
}

/** A shell on a pty per host connection to the debug port (the helper's pty-shell), kept up. */
async function serveDebugConsole(path: string): Promise<void> {
  const helper = Deno.env.get("KUASAR_HELPER") ?? "/usr/bin/kuasar-helper";
  say("debug console enabled", { port: path });
  for (;;) {
    const st = await new Deno.Command(helper, {
      args: ["pty-shell", "--port", path, "--", "/bin/sh", "-i"],
      stdin: "null",
    }).output().catch((e) => ({ code: -1, stderr: new TextEncoder().encode(String(e)) }));
    say("debug console ended; restarting", {
      code: st.code,
      error: new TextDecoder().decode(st.stderr).trim(),
    });
    await new Promise((r) => setTimeout(r, 1000));
  }
}

function serveVsock(): boolean {
  let listener: Deno.Listener;
  try {
    // VMADDR_CID_ANY
    listener = Deno.listen({ transport: "vsock", cid: 0xffffffff, port: AGENT_VSOCK_PORT });
  } catch (e) {
    say("no vsock", { error: String(e) });
    return false;
  }
  (async () => {
    for await (const conn of listener) server.handle(conn, GUEST_SCOPE);
  })();
  return true;
}

// The image build runs the agent this far to fill Deno's code cache (scripts/guest_image.ts).
if (Deno.env.get("KUASAR_AGENT_WARMUP")) Deno.exit(0);
if (Deno.pid === 1) {
  trackChildren(ownChild);
  startReaper();
}
Deno.addSignalListener("SIGTERM", () => powerOff());
await serveGuestTasks(server, events).catch((e) =>
  say("no Task API: cannot set up containers", { error: String(e) })
);
const vsock = serveVsock();
// The virtio-serial port shows up once the driver has probed the device: give it a moment.
let port = findVirtioPort(AGENT_PORT_NAME);
for (let i = 0; i < 100 && !port; i++) {
  await new Promise((r) => setTimeout(r, 50));
  port = findVirtioPort(AGENT_PORT_NAME);
}
if (port) serveSerial(port);
if (!vsock && !port) {
  say("no channel to the host: neither vsock nor a virtio-serial port named " + AGENT_PORT_NAME);
}
// The debug console, when the host gave the VM its port (opt-in).
const debugPort = findVirtioPort(DEBUG_PORT_NAME);
if (debugPort) serveDebugConsole(debugPort);
say("kuasar-agent ready", {
  pid: Deno.pid,
  vsock,
  port: port ?? null,
  sinceExecMs: Math.round(performance.now()),
});
