/**
 * A Streaming service client that behaves like containerd's: StreamInit,
 * wait for the ack, then WindowUpdate-driven stdout/stderr and
 * window-respecting stdin.
 *
 * @module
 */
import { TtrpcClient } from "../../src/adapters/ttrpc/client.ts";
import type { ClientStream } from "../../src/adapters/ttrpc/client.ts";
import { Any } from "../../src/gen/containerd/google/protobuf/any.ts";
import { StreamInit } from "../../src/gen/containerd/services/streaming/v1/streaming.ts";
import { Data, WindowUpdate } from "../../src/gen/containerd/types/transfer/streaming.ts";
import { K8S_NS, type taskClient } from "./daemon.ts";
import { processSpec } from "./oci.ts";
import { randomId } from "./pod.ts";

const SERVICE = "containerd.services.streaming.v1.Streaming";

function any(typeUrl: string, value: Uint8Array): Uint8Array {
  return Any.encode({ typeUrl, value }).finish();
}

/** The stdio URL containerd would give Task.Create for stream `id` at `address`. */
export function streamUrl(address: string, id: string): string {
  return `${address}?streaming_id=${id}`;
}

/** An attached stream on its own connection, as containerd opens them. */
export interface TestStream {
  readonly stream: ClientStream;
  readonly it: AsyncIterator<Uint8Array>;
  close(): void;
}

/** Opens stream `id` on the task socket of `address` and waits for the ack. */
export async function openStream(address: string, id: string): Promise<TestStream> {
  const client = await TtrpcClient.connectUnix(address.replace("ttrpc+unix://", ""));
  const stream = await client.stream(SERVICE, "Stream", { streamingClient: true });
  await stream.send(
    any("containerd.services.streaming.v1.StreamInit", StreamInit.encode({ id }).finish()),
  );
  const it = stream.received[Symbol.asyncIterator]();
  const ack = await it.next();
  if (ack.done) throw new Error(`stream ${id} closed before its ack`);
  return { stream, it, close: () => client.close() };
}

const windowUpdate = (n: number) =>
  any("containerd.types.transfer.WindowUpdate", WindowUpdate.encode({ update: n }).finish());

/**
 * Reads an output stream to its end as containerd does: a window granted
 * ahead, more as data is consumed, and its own side closed after EOF (which
 * tells the daemon everything was read). `onData` sees every chunk; a
 * promise it returns is awaited before more window is granted (a slow reader).
 */
export async function drainOutput(
  s: TestStream,
  onData: (d: Uint8Array) => void | Promise<void>,
): Promise<void> {
  await s.stream.send(windowUpdate(65536));
  for (let m = await s.it.next(); !m.done; m = await s.it.next()) {
    const a = Any.decode(m.value);
    if (!a.typeUrl.endsWith("Data")) continue;
    const d = Data.decode(a.value).data;
    await onData(d);
    await s.stream.send(windowUpdate(d.length));
  }
  await s.stream.closeSend().catch(() => {});
}

/** Reads an output stream to its end (see `drainOutput`) as text. */
export async function readOutput(s: TestStream): Promise<string> {
  const dec = new TextDecoder();
  let text = "";
  await drainOutput(s, (d) => {
    text += dec.decode(d, { stream: true });
  });
  return text + dec.decode();
}

/** Writes `text` to an input stream once the server grants a window, then closes it. */
export async function writeInput(s: TestStream, text: string): Promise<void> {
  const first = await s.it.next();
  if (first.done || !Any.decode(first.value).typeUrl.endsWith("WindowUpdate")) {
    throw new Error("stdin stream: expected a WindowUpdate before sending");
  }
  await s.stream.send(
    any(
      "containerd.types.transfer.Data",
      Data.encode({ data: new TextEncoder().encode(text) }).finish(),
    ),
  );
  await s.stream.closeSend();
}

/**
 * Runs `cat` as an exec of running container `cid` with streamed stdin and
 * stdout, as containerd's CRI exec does with `crictl exec -i`: the input is
 * written, its stream closed together with its connection, and CloseIO sent
 * at once. Returns what `cat` printed.
 */
export async function catThroughStreams(
  t: Awaited<ReturnType<typeof taskClient>>,
  address: string,
  cid: string,
  input: string,
): Promise<string> {
  const eid = randomId();
  const out = await openStream(address, `${eid}-stdout`);
  const inp = await openStream(address, `${eid}-stdin`);
  const text = readOutput(out);
  try {
    await t.task.exec({
      id: cid,
      execId: eid,
      terminal: false,
      stdin: streamUrl(address, `${eid}-stdin`),
      stdout: streamUrl(address, `${eid}-stdout`),
      stderr: "",
      spec: {
        typeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process",
        value: new TextEncoder().encode(JSON.stringify(processSpec(["cat"]))),
      },
    }, K8S_NS);
    const exited = t.task.wait({ id: cid, execId: eid }, K8S_NS);
    const started = t.task.start({ id: cid, execId: eid }, K8S_NS);
    await writeInput(inp, input);
    inp.close();
    await started;
    await t.task.closeIO({ id: cid, execId: eid, stdin: true }, K8S_NS);
    const status = (await exited).exitStatus;
    if (status !== 0) throw new Error(`cat exited with ${status}`);
    const printed = await text;
    await t.task.delete({ id: cid, execId: eid }, K8S_NS);
    return printed;
  } finally {
    inp.close();
    out.close();
  }
}
