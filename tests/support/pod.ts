/**
 * Pod and container helpers on top of a TestDaemon: what containerd's CRI
 * plugin would do, done with our own clients.
 *
 * @module
 */
import { join } from "node:path";
import { PodSandboxConfig } from "../../src/gen/cri/api.ts";
import type { CreateTaskRequest } from "../../src/gen/containerd/runtime/task/v3/shim.ts";
import { type BundleOptions, writeBundle } from "./oci.ts";
import { overlayRootfs } from "./rootfs.ts";
import { K8S_NS, taskClient, type TestDaemon } from "./daemon.ts";

/** A started pod. */
export interface TestPod {
  readonly id: string;
  readonly pid: number;
  readonly address: string;
  /** Task API version Start reported. */
  readonly version: number;
}

/** A random 64-hex id, like CRI's. */
export function randomId(): string {
  return Array.from(
    crypto.getRandomValues(new Uint8Array(32)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
}

/** Options of a pod's PodSandboxConfig. */
export interface PodOptions {
  readonly hostname?: string;
  readonly sharePid?: boolean;
  readonly hostNetwork?: boolean;
  readonly netnsPath?: string;
  readonly cgroupParent?: string;
  /** The pod's id (a random one by default). */
  readonly id?: string;
  /** `linux.resources` of the PodSandboxConfig (what a VM pod is sized by). */
  readonly resources?: { cpuPeriod?: number; cpuQuota?: number; memoryLimitInBytes?: number };
}

/** Creates and starts a pod, passing a PodSandboxConfig like containerd does. */
export async function startPod(d: TestDaemon, o: PodOptions = {}): Promise<TestPod> {
  const id = o.id ?? randomId();
  const config = PodSandboxConfig.fromPartial({
    metadata: {
      name: `pod-${id.slice(0, 6)}`,
      namespace: "default",
      uid: id.slice(0, 8),
      attempt: 0,
    },
    hostname: o.hostname ?? `pod-${id.slice(0, 6)}`,
    linux: {
      cgroupParent: o.cgroupParent ?? "",
      ...(o.resources ? { resources: o.resources } : {}),
      securityContext: {
        namespaceOptions: { network: o.hostNetwork ? 2 : 0, pid: o.sharePid ? 0 : 1, ipc: 0 },
      },
    },
  });
  await d.controller.create({
    sandboxId: id,
    netnsPath: o.netnsPath ?? "",
    options: {
      typeUrl: "runtime.v1.PodSandboxConfig",
      value: PodSandboxConfig.encode(config).finish(),
    },
  });
  const s = await d.controller.start(id);
  return { id, pid: s.pid, address: s.address, version: s.version };
}

/** Options of a test container. */
export interface ContainerOptions extends Omit<BundleOptions, "sandboxPid" | "sandboxId"> {
  readonly stdin?: string;
  readonly stdout?: string;
  readonly stderr?: string;
}

/** Writes a bundle and calls Task.Create with an overlay rootfs; returns the container id and pid. */
export async function createContainer(
  d: TestDaemon,
  pod: TestPod,
  o: ContainerOptions,
  id = randomId(),
): Promise<{ id: string; pid: number; bundle: string }> {
  return await createTask(pod, await prepareContainer(d, pod, o, id));
}

/** Task.Create of `req` in `pod` on a connection of its own; returns the id, pid and bundle. */
export async function createTask(
  pod: TestPod,
  req: CreateTaskRequest,
): Promise<{ id: string; pid: number; bundle: string }> {
  const t = await taskClient(pod.address);
  try {
    const r = await t.task.create(req, K8S_NS);
    return { id: req.id, pid: r.pid, bundle: req.bundle };
  } finally {
    t.close();
  }
}

/** A Task.Create request as containerd's CRI makes it: no checkpoint, no options. */
export function createRequest(
  id: string,
  bundle: string,
  rootfs: readonly { type: string; source: string; target: string; options: readonly string[] }[],
  io: { terminal?: boolean; stdin?: string; stdout?: string; stderr?: string } = {},
): CreateTaskRequest {
  return {
    id,
    bundle,
    rootfs: rootfs.map((m) => ({ ...m, options: [...m.options] })),
    terminal: io.terminal ?? false,
    stdin: io.stdin ?? "",
    stdout: io.stdout ?? "",
    stderr: io.stderr ?? "",
    checkpoint: "",
    parentCheckpoint: "",
    options: undefined,
  };
}

/** Writes the bundle and rootfs of `createContainer`; returns its Task.Create request. */
export async function prepareContainer(
  d: TestDaemon,
  pod: TestPod,
  o: ContainerOptions,
  id = randomId(),
): Promise<CreateTaskRequest> {
  const bundle = join(d.base, "bundles", id);
  await writeBundle(bundle, id, {
    cgroupParent: d.cgroupParent,
    ...o,
    sandboxPid: pod.pid,
    sandboxId: pod.id,
  });
  return createRequest(id, bundle, await overlayRootfs(join(d.base, "snapshots", id)), o);
}

/** createContainer, then Task.Start: a running container. */
export async function startContainer(
  d: TestDaemon,
  pod: TestPod,
  o: ContainerOptions,
): Promise<{ id: string; pid: number; bundle: string }> {
  const c = await createContainer(d, pod, o);
  const t = await taskClient(pod.address);
  try {
    await t.task.start({ id: c.id, execId: "" }, K8S_NS);
  } finally {
    t.close();
  }
  return c;
}

/** Controller.Update announcing containers in `extensions.tasks`, as iSulad and Kuasar's containerd do. */
export function tasksUpdate(podId: string, doc: unknown) {
  return {
    sandboxId: podId,
    fields: ["extensions.tasks"],
    sandbox: {
      sandboxId: podId,
      runtime: undefined,
      spec: undefined,
      labels: {},
      createdAt: undefined,
      updatedAt: undefined,
      extensions: {
        tasks: { typeUrl: "x", value: new TextEncoder().encode(JSON.stringify(doc)) },
      },
      sandboxer: "",
    },
  };
}

/** Task.Start of a created container, its Wait, then Task.Delete: its exit status. */
export async function runToExit(pod: TestPod, id: string): Promise<number> {
  const t = await taskClient(pod.address);
  try {
    const w = t.task.wait({ id, execId: "" }, K8S_NS);
    await t.task.start({ id, execId: "" }, K8S_NS);
    const status = (await w).exitStatus;
    await t.task.delete({ id, execId: "" }, K8S_NS);
    return status;
  } finally {
    t.close();
  }
}
