/**
 * Sandbox and container records for unit tests, with the fields a test
 * does not care about filled in; a test names only what it checks.
 *
 * @module
 */
import { emptyPodConfig } from "../../src/domain/pod_config.ts";
import type { SandboxRecord } from "../../src/domain/sandbox.ts";
import type { ContainerRecord } from "../../src/domain/task.ts";
import { now } from "../../src/domain/time.ts";

/** A running sandbox record of a fake kind, pid 1, no netns, an empty pod config. */
export function sandboxRecord<B extends object = object>(
  id: string,
  over: Partial<SandboxRecord<B>> = {},
): SandboxRecord<B> {
  return {
    id,
    kind: "fake",
    state: "running",
    createdAt: now(),
    pid: 1,
    netnsPath: "",
    pod: emptyPodConfig(),
    annotations: {},
    labels: {},
    extensions: {},
    taskAddress: "",
    taskApiVersion: 3,
    backend: {} as B,
    containers: {},
    ...over,
  };
}

/** A running container record of sandbox "sb1", bundle `/b/<id>`, pid 10, no stdio. */
export function containerRecord<B extends object = object>(
  id: string,
  over: Partial<ContainerRecord<B>> = {},
): ContainerRecord<B> {
  return {
    id,
    sandboxId: "sb1",
    namespace: "k8s.io",
    bundle: `/b/${id}`,
    rootfs: [],
    io: { stdin: "", stdout: "", stderr: "", terminal: false },
    createdAt: now(),
    state: "running",
    pid: 10,
    execs: {},
    backend: {} as B,
    ...over,
  };
}
