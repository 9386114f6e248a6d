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
import { CreateTaskRequest } from "../../src/gen/containerd/runtime/task/v3/shim.ts";
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
