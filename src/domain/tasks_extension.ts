/**
 * Kuasar's `extensions.tasks` protocol: engines that know the sandbox API
 * (iSulad, Kuasar's containerd fork, Kuasar's shim) announce containers and
 * exec processes *before* Task.Create/Exec by Controller.Update with
 * `fields = ["extensions.tasks"]` and a JSON document in
 * `sandbox.extensions["tasks"].value`. The sandboxer diffs it against the
 * previous document to learn what was added and removed.
 *
 * @module
 */
import { z } from "zod";
import { InvalidArgumentError } from "./errors.ts";

const ociMount = z.object({
  destination: z.string().default(""),
  type: z.string().default(""),
  source: z.string().default(""),
  options: z.array(z.string()).nullish().transform((v) => v ?? []),
});

const processResource = z.object({
  exec_id: z.string(),
  spec: z.unknown().optional(),
  stdin: z.string().default(""),
  stdout: z.string().default(""),
  stderr: z.string().default(""),
});

const taskResource = z.object({
  task_id: z.string(),
  spec: z.unknown().optional(),
  rootfs: z.array(ociMount).nullish().transform((v) => v ?? []),
  stdin: z.string().default(""),
  stdout: z.string().default(""),
  stderr: z.string().default(""),
  processes: z.array(processResource).nullish().transform((v) => v ?? []),
});

const taskResources = z.object({
  tasks: z.array(taskResource).nullish().transform((v) => v ?? []),
});

/** One exec process announced in `extensions.tasks`. */
export type ProcessResource = z.infer<typeof processResource>;
/** One container announced in `extensions.tasks`. */
export type TaskResource = z.infer<typeof taskResource>;
/** The whole `extensions.tasks` document. */
export type TaskResources = z.infer<typeof taskResources>;

/** The field name that makes Controller.Update act on tasks. */
export const TASKS_FIELD = "extensions.tasks";
/** The key of the tasks document in `Sandbox.extensions`. */
export const TASKS_EXTENSION = "tasks";

/** Parses the JSON payload; throws `InvalidArgumentError` on bad JSON or shape. */
export function parseTaskResources(json: Uint8Array | string): TaskResources {
  const text = typeof json === "string" ? json : new TextDecoder().decode(json);
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new InvalidArgumentError(
      `Cannot parse extensions.tasks: invalid JSON: ${(e as Error).message}`,
    );
  }
  const r = taskResources.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new InvalidArgumentError(
      `Cannot parse extensions.tasks: ${issue?.path.join(".") || "document"}: ${issue?.message}`,
    );
  }
  return r.data;
}

/** What changed between two task documents. */
export interface TasksDiff {
  readonly addedTasks: readonly TaskResource[];
  readonly removedTasks: readonly string[];
  readonly addedProcesses: readonly { taskId: string; process: ProcessResource }[];
  readonly removedProcesses: readonly { taskId: string; execId: string }[];
}

/** Diffs two documents by task id and, within kept tasks, by exec id. */
export function diffTaskResources(before: TaskResources, after: TaskResources): TasksDiff {
  const old = new Map(before.tasks.map((t) => [t.task_id, t]));
  const cur = new Map(after.tasks.map((t) => [t.task_id, t]));
  const addedTasks = after.tasks.filter((t) => !old.has(t.task_id));
  const removedTasks = before.tasks.filter((t) => !cur.has(t.task_id)).map((t) => t.task_id);
  const addedProcesses: { taskId: string; process: ProcessResource }[] = [];
  const removedProcesses: { taskId: string; execId: string }[] = [];
  for (const t of after.tasks) {
    const prev = old.get(t.task_id);
    if (!prev) continue;
    const prevIds = new Set(prev.processes.map((p) => p.exec_id));
    const curIds = new Set(t.processes.map((p) => p.exec_id));
    for (const p of t.processes) {
      if (!prevIds.has(p.exec_id)) addedProcesses.push({ taskId: t.task_id, process: p });
    }
    for (const p of prev.processes) {
      if (!curIds.has(p.exec_id)) removedProcesses.push({ taskId: t.task_id, execId: p.exec_id });
    }
  }
  return { addedTasks, removedTasks, addedProcesses, removedProcesses };
}
