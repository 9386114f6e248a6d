/**
 * Wires the application services to the fakes, as the daemon wires them to
 * the real adapters. Importing this module silences the logger (set
 * `KUASAR_TEST_LOG=1` to see the lines).
 *
 * @module
 */
import { SandboxRegistry } from "../../src/app/registry.ts";
import { type CreateSandboxInput, SandboxService } from "../../src/app/sandbox_service.ts";
import { type CreateTaskInput, TaskService } from "../../src/app/task_service.ts";
import { emptyPodConfig } from "../../src/domain/pod_config.ts";
import type { Io } from "../../src/domain/task.ts";
import { Logger } from "../../src/lib/log.ts";
import { FakeContainerRuntime } from "./fake_container_runtime.ts";
import { FakeSandboxBackend } from "./fake_sandbox_backend.ts";
import { FakeTaskEndpoint } from "./fake_task_endpoint.ts";
import { MemorySandboxStore } from "./memory_sandbox_store.ts";
import { RecordingEventPublisher } from "./recording_event_publisher.ts";

if (!Deno.env.get("KUASAR_TEST_LOG")) Logger.setSink(() => {});

/** The services of one daemon and the fakes behind them. */
export interface Harness {
  readonly store: MemorySandboxStore;
  readonly backend: FakeSandboxBackend;
  readonly runtime: FakeContainerRuntime;
  readonly events: RecordingEventPublisher;
  readonly endpoint: FakeTaskEndpoint;
  readonly registry: SandboxRegistry;
  readonly tasks: TaskService;
  readonly sandboxes: SandboxService;
}

/** Options of `makeHarness`. */
export interface HarnessOptions {
  /** The store to start from (e.g. `crashClone()` of a previous harness). */
  readonly store?: MemorySandboxStore;
  /** Grace of Stop when the request has no timeout (small in tests). */
  readonly defaultStopTimeoutMs?: number;
  /** Grace of created sandboxes never started (none by default). */
  readonly createdSandboxTimeoutMs?: number;
  readonly taskApiVersion?: number;
  /** The OS netns check (none by default: fake netns paths are fine). */
  readonly checkNetns?: (path: string) => Promise<void>;
}

/** Builds a daemon's services on fresh fakes. */
export function makeHarness(opts: HarnessOptions = {}): Harness {
  const store = opts.store ?? new MemorySandboxStore();
  const backend = new FakeSandboxBackend();
  const runtime = new FakeContainerRuntime();
  const events = new RecordingEventPublisher();
  const endpoint = new FakeTaskEndpoint();
  const registry = new SandboxRegistry(store);
  const tasks = new TaskService(registry, runtime, events);
  const sandboxes = new SandboxService(registry, backend, tasks, endpoint, {
    kind: "fake",
    taskApiVersion: opts.taskApiVersion ?? 3,
    defaultStopTimeoutMs: opts.defaultStopTimeoutMs ?? 20,
    createdSandboxTimeoutMs: opts.createdSandboxTimeoutMs,
    checkNetns: opts.checkNetns,
  });
  return { store, backend, runtime, events, endpoint, registry, tasks, sandboxes };
}

/** A Controller.Create request for `id`. */
export function sandboxInput(
  id: string,
  over: Partial<CreateSandboxInput> = {},
): CreateSandboxInput {
  return {
    id,
    netnsPath: `/var/run/netns/cni-${id}`,
    pod: { ...emptyPodConfig(), name: `pod-${id}`, namespace: "default", uid: `uid-${id}` },
    annotations: {},
    labels: { app: "test" },
    extensions: {},
    ...over,
  };
}

/** Stdio of a process. */
export function io(terminal = false): Io {
  return { stdin: "", stdout: "/fifo/out", stderr: terminal ? "" : "/fifo/err", terminal };
}

/** A Task.Create request for container `id`. */
export function taskInput(id: string, over: Partial<CreateTaskInput> = {}): CreateTaskInput {
  return {
    id,
    bundle: `/run/bundles/${id}`,
    rootfs: [{ type: "overlay", source: "overlay", target: "", options: ["lowerdir=/l"] }],
    io: io(),
    ...over,
  };
}

/** Creates and starts sandbox `id`. */
export async function runningSandbox(h: Harness, id: string): Promise<void> {
  await h.sandboxes.create(sandboxInput(id));
  await h.sandboxes.start(id);
}

/** Creates and starts container `cid` in sandbox `sid` (namespace "k8s.io"); returns its pid. */
export async function runningContainer(h: Harness, sid: string, cid: string): Promise<number> {
  await h.tasks.create(sid, "k8s.io", taskInput(cid));
  return await h.tasks.start(sid, cid, "");
}
