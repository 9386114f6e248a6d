/**
 * Bad input reaches the real daemon and gets the right status code; the
 * daemon keeps serving and nothing is left behind.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import * as grpc from "@grpc/grpc-js";
import { Code } from "../../src/domain/errors.ts";
import { Request, Response } from "../../src/gen/ttrpc/request.ts";
import {
  encodeFrame,
  FrameDecoder,
  HEADER_SIZE,
  MAX_PAYLOAD,
  MessageType,
} from "../../src/adapters/ttrpc/frame.ts";
import { writeAll } from "../../src/adapters/ttrpc/server.ts";
import { CreateTaskRequest, StateRequest } from "../../src/gen/containerd/runtime/task/v3/shim.ts";
import { K8S_NS, taskClient, TestDaemon, withDaemon } from "../support/daemon.ts";
import { createContainer, randomId, startPod } from "../support/pod.ts";
import { runcUnavailable, skipUnless } from "../support/env.ts";
import { assertShutdownLeavesNothing, leftovers } from "../support/leaks.ts";

const skip = skipUnless(runcUnavailable(), "bad input");

function code(e: unknown): number | undefined {
  return (e as { code?: number }).code;
}

async function rawFrames(path: string, bytes: Uint8Array, hangUp = false): Promise<Response> {
  const conn = await Deno.connect({ transport: "unix", path });
  try {
    await writeAll(conn, bytes);
    if (hangUp) await conn.closeWrite();
    const dec = new FrameDecoder();
    const buf = new Uint8Array(65536);
    for (;;) {
      const d = dec.next();
      if (d?.kind === "frame") return Response.decode(d.frame.payload);
      const n = await conn.read(buf);
      if (n === null) throw new Error("connection closed without a response");
      dec.push(buf.subarray(0, n));
    }
  } finally {
    conn.close();
  }
}

Deno.test({
  name: "bad input: Controller rejects bad ids, unknown ids, broken JSON and garbage protobuf",
  ...skip,
  async fn() {
    const d = await TestDaemon.start();
    const c = d.controller;
    try {
      for (const id of ["../../etc", "a/b", "..", "", "x".repeat(77), "a b"]) {
        await assert.rejects(
          c.create({ sandboxId: id }),
          (e) => code(e) === Code.INVALID_ARGUMENT,
          `id ${JSON.stringify(id)}`,
        );
      }
      await assert.rejects(
        c.create({ sandboxId: randomId(), netnsPath: "/nonexistent/netns" }),
        (e) => code(e) === Code.INVALID_ARGUMENT,
      );
      const unknown = randomId();
      for (
        const call of [
          () => c.start(unknown),
          () => c.status(unknown),
          () => c.wait(unknown),
          () => c.platform(unknown),
          () => c.metrics(unknown),
        ]
      ) {
        await assert.rejects(call(), (e) => code(e) === Code.NOT_FOUND);
      }
      // Stop and Shutdown of unknown ids succeed: containerd retries them.
      await c.stop(unknown);
      await c.shutdown(unknown);

      const pod = await startPod(d);
      await assert.rejects(
        c.start(pod.id),
        (e) => code(e) === Code.FAILED_PRECONDITION,
        "second Start",
      );
      await assert.rejects(c.create({ sandboxId: pod.id }), (e) => code(e) === Code.ALREADY_EXISTS);
      const broken = {
        typeUrl: "github.com/containerd/containerd.TaskResources",
        value: new TextEncoder().encode("{not json"),
      };
      await assert.rejects(
        c.update({
          sandboxId: pod.id,
          fields: ["extensions.tasks"],
          sandbox: sandboxWith({ tasks: broken }),
        }),
        (e) => code(e) === Code.INVALID_ARGUMENT,
      );
      await assert.rejects(
        c.update({ sandboxId: pod.id, fields: ["extensions.tasks"], sandbox: sandboxWith({}) }),
        (e) => code(e) === Code.INVALID_ARGUMENT,
      );
      const good = new TextEncoder().encode(
        JSON.stringify({ tasks: [{ task_id: "c1", processes: [{ exec_id: "e1" }] }] }),
      );
      await c.update({
        sandboxId: pod.id,
        fields: ["extensions.tasks"],
        sandbox: sandboxWith({ tasks: { typeUrl: "x", value: good } }),
      });
      await c.update({ sandboxId: pod.id, fields: ["something.else"] }); // other fields: no-op

      // Garbage protobuf on the gRPC socket.
      const Raw = grpc.makeGenericClientConstructor({
        Create: {
          path: "/containerd.services.sandbox.v1.Controller/Create",
          requestStream: false,
          responseStream: false,
          requestSerialize: (b: Buffer) => b,
          requestDeserialize: (b: Buffer) => b,
          responseSerialize: (b: Buffer) => b,
          responseDeserialize: (b: Buffer) => b,
        },
      }, "Raw");
      const raw = new Raw(`unix://${d.listen}`, grpc.credentials.createInsecure()) as unknown as {
        Create(b: Buffer, cb: (e: grpc.ServiceError | null) => void): void;
        close(): void;
      };
      const err = await new Promise<grpc.ServiceError | null>((r) =>
        raw.Create(Buffer.from([0xff, 0xff, 0xff, 0x0f]), r)
      );
      raw.close();
      assert.equal(err?.code, Code.INVALID_ARGUMENT, err?.details ?? "no error");

      // The daemon still serves.
      assert.equal((await c.status(pod.id)).state, "SANDBOX_READY");
      await c.shutdown(pod.id);
      assert.deepEqual(await leftovers(d, [pod.id]), []);
    } catch (e) {
      console.error(await d.logs());
      throw e;
    } finally {
      await d.cleanup();
    }
  },
});

function sandboxWith(extensions: Record<string, { typeUrl: string; value: Uint8Array }>) {
  return {
    sandboxId: "",
    runtime: undefined,
    spec: undefined,
    labels: {},
    createdAt: undefined,
    updatedAt: undefined,
    extensions,
    sandboxer: "",
  };
}

Deno.test({
  name:
    "bad input: the Task socket answers garbage, oversized frames and bad requests, and keeps serving",
  ...skip,
  fn: () =>
    withDaemon(async (d) => {
      const pod = await startPod(d);
      const path = pod.address.replace("ttrpc+unix://", "");
      // Oversized frame: RESOURCE_EXHAUSTED on that stream.
      const big = new Uint8Array(HEADER_SIZE + MAX_PAYLOAD + 1);
      const v = new DataView(big.buffer);
      v.setUint32(0, MAX_PAYLOAD + 1);
      v.setUint32(4, 1);
      big[8] = MessageType.REQUEST;
      assert.equal((await rawFrames(path, big)).status?.code, Code.RESOURCE_EXHAUSTED);
      // A request whose payload is not a ttrpc Request.
      assert.equal(
        (await rawFrames(
          path,
          encodeFrame(1, MessageType.REQUEST, 0, new Uint8Array([0x0a, 0xff, 0xff])),
        )).status?.code,
        Code.INVALID_ARGUMENT,
      );
      // A Task.Create whose payload is not a CreateTaskRequest.
      const bad = Request.encode({
        service: "containerd.task.v3.Task",
        method: "Create",
        payload: new Uint8Array([0x12, 0xff, 0xff, 0xff, 0xff]),
        timeoutNano: 0n,
        metadata: [],
      }).finish();
      assert.equal(
        (await rawFrames(path, encodeFrame(1, MessageType.REQUEST, 0, bad))).status?.code,
        Code.INVALID_ARGUMENT,
      );
      // Random bytes, then the client's end closed: an error status or a closed
      // connection, never OK, never a hang (a frame the bytes leave unfinished
      // ends with the connection).
      for (let i = 0; i < 5; i++) {
        const garbage = crypto.getRandomValues(new Uint8Array(4096));
        const reply = await Promise.race([
          rawFrames(path, garbage, true).then((r) => r.status?.code ?? Code.OK, () => "closed"),
          new Promise((r) => setTimeout(() => r("hang"), 5000)),
        ]);
        assert.ok(
          reply === "closed" || (typeof reply === "number" && reply !== Code.OK),
          `${reply}`,
        );
      }

      const t = await taskClient(pod.address);
      try {
        await assert.rejects(
          t.task.state({ id: "nope", execId: "" }, K8S_NS),
          (e) => code(e) === Code.NOT_FOUND,
        );
        await assert.rejects(
          t.task.create(CreateTaskRequest.fromPartial({ id: "../../etc", bundle: "/tmp" }), K8S_NS),
          (e) => code(e) === Code.INVALID_ARGUMENT,
        );
        await assert.rejects(
          t.task.create(
            CreateTaskRequest.fromPartial({
              id: "restored",
              bundle: "/tmp",
              checkpoint: "/tmp/ckpt",
            }),
            K8S_NS,
          ),
          (e) => code(e) === Code.UNIMPLEMENTED,
        );
        await assert.rejects(
          t.task.create(
            CreateTaskRequest.fromPartial({ id: "nobundle", bundle: "/nonexistent/bundle" }),
            K8S_NS,
          ),
          (e) => code(e) === Code.INVALID_ARGUMENT,
        );
        // A container whose process cannot start: runc's error comes back, nothing is left.
        await assert.rejects(
          createContainer(d, pod, { args: ["/does/not/exist"] }),
          /runc|exec|no such file/i,
        );
        const c = await createContainer(d, pod, { args: ["sleep", "100"] });
        await assert.rejects(
          t.task.exec({
            id: c.id,
            execId: "x",
            terminal: false,
            stdin: "",
            stdout: "",
            stderr: "",
            spec: { typeUrl: "x", value: new TextEncoder().encode("{") },
          }, K8S_NS),
          (e) => code(e) === Code.INVALID_ARGUMENT,
        );
        // An exec without a command is refused at Exec, not at its Start.
        for (const process of [{ args: [], cwd: "/" }, { cwd: "/" }]) {
          await assert.rejects(
            t.task.exec({
              id: c.id,
              execId: "noargs",
              terminal: false,
              stdin: "",
              stdout: "",
              stderr: "",
              spec: { typeUrl: "x", value: new TextEncoder().encode(JSON.stringify(process)) },
            }, K8S_NS),
            (e) => code(e) === Code.INVALID_ARGUMENT,
            JSON.stringify(process),
          );
        }
        await assert.rejects(
          t.task.update({
            id: c.id,
            resources: { typeUrl: "x", value: new TextEncoder().encode("[1,") },
            annotations: {},
          }, K8S_NS),
          (e) => code(e) === Code.INVALID_ARGUMENT,
        );
        await assert.rejects(
          t.task.checkpoint({ id: c.id, path: "/tmp/x", options: undefined }, K8S_NS),
          (e) => code(e) === Code.UNIMPLEMENTED,
        );
        // A created (never started) container may be deleted.
        await t.task.delete({ id: c.id, execId: "" }, K8S_NS);
      } finally {
        t.close();
      }
      await assertShutdownLeavesNothing(d, [pod.id]);
    }),
});

/** A process's resident set size (or peak, `VmHWM`), in bytes. */
async function residentBytes(pid: number, field: "VmRSS" | "VmHWM"): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const kib = status.match(new RegExp(`^${field}:\\s+(\\d+) kB`, "m"));
  if (!kib) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number(kib[1]) * 1024;
}

for (const kind of ["runc", "wasm"]) {
  Deno.test({
    name:
      `bad input (${kind}): a client pipelining 60 x 3 MiB requests and reading nothing does not grow the daemon; reading, it gets every answer`,
    ...(kind === "runc" ? skip : {}),
    fn: () =>
      withDaemon(async (d) => {
        const pod = await startPod(d);
        const path = pod.address.replace("ttrpc+unix://", "");
        // Task.State of an unknown 3 MiB id: the NOT_FOUND answer quotes the
        // id, so each answer is as large as its request.
        const count = 60;
        const id = "x".repeat(3 << 20);
        const service = pod.version === 2 ? "containerd.task.v2.Task" : "containerd.task.v3.Task";
        const payload = Request.encode({
          service,
          method: "State",
          payload: StateRequest.encode({ id, execId: "" }).finish(),
          timeoutNano: 0n,
          metadata: [{ key: "containerd-namespace-ttrpc", value: "k8s.io" }],
        }).finish();
        const conn = await Deno.connect({ transport: "unix", path });
        try {
          const before = await residentBytes(d.pid, "VmRSS");
          await Deno.writeTextFile(`/proc/${d.pid}/clear_refs`, "5"); // resets VmHWM
          let written = 0;
          let done = false;
          const writing = (async () => {
            for (let i = 0; i < count; i++) {
              const f = encodeFrame(2 * i + 1, MessageType.REQUEST, 0, payload);
              for (let off = 0; off < f.length; off += 64 * 1024) {
                await writeAll(conn, f.subarray(off, off + 64 * 1024));
                written += Math.min(64 * 1024, f.length - off);
              }
            }
          })().finally(() => (done = true));
          // Until the daemon (and the relay in front of it) stop taking bytes,
          // or have taken them all.
          for (let last = -1, still = 0; !done && still < 10;) {
            await new Promise((r) => setTimeout(r, 200));
            still = written === last ? still + 1 : 0;
            last = written;
          }
          const grown = await residentBytes(d.pid, "VmHWM") - before;
          assert.ok(
            grown < 100 << 20,
            `daemon grew by ${grown >> 20} MiB, ${written >> 20} of ${
              count * (payload.length >> 20)
            } MiB sent`,
          );
          // Now the client reads: every answer comes, on its stream.
          const dec = new FrameDecoder();
          const buf = new Uint8Array(256 * 1024);
          const codes = new Map<number, number>();
          while (codes.size < count) {
            for (let f = dec.next(); f; f = dec.next()) {
              if (f.kind !== "frame") throw new Error(`oversized answer of ${f.length} bytes`);
              codes.set(f.frame.streamId, Response.decode(f.frame.payload).status?.code ?? 0);
            }
            if (codes.size === count) break;
            const n = await conn.read(buf);
            if (n === null) throw new Error(`connection closed after ${codes.size} answers`);
            dec.push(buf.subarray(0, n));
          }
          await writing;
          assert.deepEqual(
            [...codes.keys()].sort((a, b) => a - b),
            Array.from({ length: count }, (_, i) => 2 * i + 1),
          );
          assert.ok(
            [...codes.values()].every((c) => c === Code.NOT_FOUND),
            `${[...codes.values()]}`,
          );
        } finally {
          conn.close();
        }
        await assertShutdownLeavesNothing(d, [pod.id]);
      }, () => TestDaemon.start({ kind })),
  });
}

for (const kind of ["runc", "wasm"]) {
  Deno.test({
    name:
      `bad input (${kind}): Create refuses a netns that is no network namespace and a hostname the kernel refuses`,
    ...(kind === "runc" ? skip : {}),
    fn: () =>
      withDaemon(async (d) => {
        const c = d.controller;
        const refused: string[] = [];
        for (
          const netnsPath of [
            "/etc/passwd",
            "/tmp",
            "/dev/null",
            "/proc/self/ns/uts",
            "/nonexistent/netns",
          ]
        ) {
          const id = randomId();
          refused.push(id);
          await assert.rejects(
            startPod(d, { id, netnsPath }),
            (e) => code(e) === Code.INVALID_ARGUMENT,
            netnsPath,
          );
        }
        for (const hostname of ["h".repeat(10_000), "a".repeat(65), "bad host"]) {
          const id = randomId();
          refused.push(id);
          await assert.rejects(
            startPod(d, { id, hostname }),
            (e) => code(e) === Code.INVALID_ARGUMENT,
            hostname.slice(0, 20),
          );
        }
        for (const id of refused) {
          await assert.rejects(c.status(id), (e) => code(e) === Code.NOT_FOUND);
        }
        // A real network namespace (this process's, as /proc shows it) and a
        // hostname of the longest length are fine.
        const pod = await startPod(d, {
          netnsPath: `/proc/${Deno.pid}/ns/net`,
          hostname: "h".repeat(64),
        });
        assert.equal((await c.status(pod.id)).state, "SANDBOX_READY");
        await assertShutdownLeavesNothing(d, [pod.id, ...refused]);
      }, () => TestDaemon.start({ kind })),
  });
}
