/**
 * The Task API over ttrpc: `containerd.task.v2.Task` and
 * `containerd.task.v3.Task` (identical messages; containerd ≥ 2.1 attaches
 * directly only to version 3) on one unix socket per pod,
 * `<dir>/<sandbox id>/task.sock`. Handlers only decode, call the use case and
 * encode; the scope of the connection is the pod.
 *
 * @module
 */
import { join } from "node:path";
import { InvalidArgumentError, UnimplementedError } from "../../domain/errors.ts";
import { processStatusNumber } from "../../domain/task.ts";
import { TaskDefinition as TaskV2 } from "../../gen/containerd/runtime/task/v2/shim.ts";
import { TaskDefinition as TaskV3 } from "../../gen/containerd/runtime/task/v3/shim.ts";
import { ProcessDetails } from "../../gen/containerd/types/runc/options/oci.ts";
import type { TaskService } from "../../app/task_service.ts";
import type { TaskEndpoint } from "../../ports/task_endpoint.ts";
import { log } from "../../lib/log.ts";
import { fromPbMount, toTimestamp } from "../convert.ts";
import { asV1Metrics } from "./metrics_v1.ts";
import { socketPath } from "../supervisor/process_tokens.ts";
import { readPreamble, type Relay } from "../supervisor/relay.ts";
import { validateId } from "../../domain/ids.ts";
import type { CallContext, TtrpcServer } from "../ttrpc/server.ts";
import { type UnaryImplementation, unaryMethods } from "../ttrpc/typed.ts";
import { VERSION } from "../../lib/version.ts";

/** Metadata key containerd puts the namespace under on ttrpc. */
export const NAMESPACE_KEY = "containerd-namespace-ttrpc";
/** Namespace assumed when a client sends none (Kuasar's fixed value). */
export const DEFAULT_NAMESPACE = "k8s.io";

/**
 * Metadata the relay (native/relay.c) adds to the calls it replays to a new
 * daemon after a crash: the client sent them once, and a call that already
 * took effect is answered with its outcome instead of being refused.
 */
export const REPLAY_KEY = "kuasar-replay";

/**
 * A replay only when the key's one value is "1", as the relay writes it: the
 * relay strips the key from what clients send, or, in a request it cannot
 * parse strictly, puts an empty value first, which must then spoil the mark.
 */
export function replayed(ctx: Pick<CallContext, "metadata">): { replay: boolean } {
  const values = ctx.metadata.get(REPLAY_KEY);
  return { replay: values?.length === 1 && values[0] === "1" };
}

function namespaceOf(ctx: CallContext): string {
  return ctx.metadata.get(NAMESPACE_KEY)?.[0] || ctx.metadata.get("containerd-namespace")?.[0] ||
    DEFAULT_NAMESPACE;
}

const EMPTY = {};

/** How often the daemon checks that the relay still runs. */
const RELAY_CHECK_MS = 2000;

/** How long a shim-mode pod's connections outlive its Shutdown (see `#closeShim`). */
const SHIM_LINGER_MS = 5000;

/** Longest path a unix socket address holds (sun_path is 108 bytes with the NUL). */
const MAX_SOCKET_PATH = 107;

/** Task API handlers for any sandbox kind. */
export function taskHandlers(tasks: TaskService): UnaryImplementation<typeof TaskV2> {
  return {
    state: (r, ctx) => {
      const s = tasks.state(ctx.scope, r.id, r.execId);
      return Promise.resolve({
        id: s.id,
        bundle: s.bundle,
        pid: s.pid,
        status: processStatusNumber(s.state),
        stdin: s.io.stdin,
        stdout: s.io.stdout,
        stderr: s.io.stderr,
        terminal: s.io.terminal,
        exitStatus: s.exitStatus,
        exitedAt: toTimestamp(s.exitedAt),
        execId: s.execId,
      });
    },
    create: async (r, ctx) => {
      if (r.checkpoint || r.parentCheckpoint) {
        throw new UnimplementedError(
          `Cannot create container "${r.id}" from a checkpoint: checkpoints are not supported`,
        );
      }
      const pid = await tasks.create(ctx.scope, namespaceOf(ctx), {
        id: r.id,
        bundle: r.bundle,
        rootfs: r.rootfs.map(fromPbMount),
        io: { stdin: r.stdin, stdout: r.stdout, stderr: r.stderr, terminal: r.terminal },
      }, replayed(ctx));
      return { pid };
    },
    start: async (r, ctx) => ({
      pid: await tasks.start(ctx.scope, r.id, r.execId, replayed(ctx)),
    }),
    delete: async (r, ctx) => {
      const e = await tasks.delete(ctx.scope, r.id, r.execId);
      return { pid: e.pid, exitStatus: e.exitStatus, exitedAt: toTimestamp(e.exitedAt) };
    },
    pids: async (r, ctx) => ({
      processes: (await tasks.pids(ctx.scope, r.id)).map((p) => ({
        pid: p.pid,
        info: p.execId
          ? {
            typeUrl: "containerd.runc.v1.ProcessDetails",
            value: ProcessDetails.encode({ execId: p.execId }).finish(),
          }
          : undefined,
      })),
    }),
    pause: async (r, ctx) => (await tasks.pause(ctx.scope, r.id), EMPTY),
    resume: async (r, ctx) => (await tasks.resume(ctx.scope, r.id), EMPTY),
    checkpoint: (r, ctx) => tasks.checkpoint(ctx.scope, r.id),
    kill: async (
      r,
      ctx,
    ) => (await tasks.kill(ctx.scope, r.id, r.execId, r.signal, r.all, replayed(ctx)), EMPTY),
    exec: async (r, ctx) => {
      let spec: unknown;
      try {
        spec = JSON.parse(new TextDecoder().decode(r.spec?.value ?? new Uint8Array()));
      } catch (e) {
        throw new InvalidArgumentError(
          `Invalid spec of exec "${r.execId}": not JSON: ${(e as Error).message}`,
        );
      }
      const io = { stdin: r.stdin, stdout: r.stdout, stderr: r.stderr, terminal: r.terminal };
      await tasks.exec(ctx.scope, r.id, r.execId, io, spec, replayed(ctx));
      return EMPTY;
    },
    resizePty: async (
      r,
      ctx,
    ) => (await tasks.resizePty(ctx.scope, r.id, r.execId, r.width, r.height), EMPTY),
    closeIO: async (r, ctx) => (await tasks.closeIo(ctx.scope, r.id, r.execId, r.stdin), EMPTY),
    update: async (r, ctx) => (await tasks.update(ctx.scope, r.id, r.resources?.value), EMPTY),
    wait: async (r, ctx) => {
      const e = await tasks.wait(ctx.scope, r.id, r.execId, ctx.signal);
      return { exitStatus: e.exitStatus, exitedAt: toTimestamp(e.exitedAt) };
    },
    stats: async (r, ctx) => ({ stats: await tasks.stats(ctx.scope, r.id) }),
    connect: (r, ctx) =>
      Promise.resolve({
        shimPid: Deno.pid,
        taskPid: tasks.connect(ctx.scope, r.id).taskPid,
        version: VERSION,
      }),
    // One daemon serves every pod: a pod's Shutdown must not end it.
    shutdown: () => Promise.resolve(EMPTY),
  };
}

/**
 * Registers the Task API (v2 and v3) on a ttrpc server. Stats on v2 are
 * cgroup v1 metrics, which every v2 client reads (see metrics_v1.ts).
 */
export function registerTaskService(server: TtrpcServer, tasks: TaskService): void {
  const impl = taskHandlers(tasks);
  server.register(
    TaskV2.fullName,
    unaryMethods(TaskV2, {
      ...impl,
      stats: async (r, ctx) => ({ stats: asV1Metrics(await tasks.stats(ctx.scope, r.id)) }),
    }),
  );
  server.register(
    TaskV3.fullName,
    unaryMethods(TaskV3, impl as UnaryImplementation<typeof TaskV3>),
  );
}

/**
 * Per-pod task sockets owned by the relay helper, whose connections this
 * daemon serves through one backend socket (see src/adapters/supervisor/relay.ts).
 * Closing the daemon leaves the pods' sockets and connections to the relay.
 */
export class RelayTaskEndpoint implements TaskEndpoint {
  #root: string;
  #server: TtrpcServer;
  #relay: Relay;
  #backend: Deno.Listener | undefined;
  /** Pods served; with none left the relay has nothing to keep and quits. */
  #open = new Set<string>();
  #watchdog: ReturnType<typeof setInterval> | undefined;
  #relayOps: Promise<void> = Promise.resolve();

  /** The daemon's directory of shortened socket names. */
  #shortDir: string;

  constructor(root: string, server: TtrpcServer, relay: Relay, shortDir: string) {
    this.#root = root;
    this.#shortDir = shortDir;
    this.#server = server;
    this.#relay = relay;
  }

  /** Resolves once a pod's connections may be served (see `serveWhen`). */
  #ready: (sandboxId: string) => Promise<void> = () => Promise.resolve();

  /**
   * Holds each pod's connections until `ready(pod)` resolves: after a crash
   * the relay replays the calls the old daemon never answered as soon as the
   * backend listens, and they must meet the pod as recovery leaves it (a
   * half-made container already undone), not as it was found.
   */
  serveWhen(ready: (sandboxId: string) => Promise<void>): void {
    this.#ready = ready;
  }

  /** Serves the backend socket, and watches the relay. */
  async start(): Promise<void> {
    const path = this.#relay.paths.backend;
    await Deno.remove(path).catch(() => {});
    this.#backend = Deno.listen({ transport: "unix", path });
    await Deno.chmod(path, 0o600);
    this.#accept(this.#backend);
    this.#watchdog = setInterval(() => this.#checkRelay(), RELAY_CHECK_MS);
    Deno.unrefTimer(this.#watchdog);
  }

  /**
   * A relay that died took the pods' task connections with it (containerd
   * sees those tasks as dead); new connections must still work, so a new
   * relay takes over every pod's socket.
   */
  async #checkRelay(): Promise<void> {
    if (!this.#open.size || await this.#relay.alive()) return;
    log.error("task relay is gone: restarting it", { pods: this.#open.size });
    try {
      await this.#relay.ensure();
      for (const id of this.#open) await this.#relay.listen(id, await this.socketPath(id));
    } catch (e) {
      log.error("cannot restart the task relay", { error: e });
    }
  }

  async #accept(listener: Deno.Listener): Promise<void> {
    try {
      for await (const conn of listener) {
        readPreamble(conn).then(async (p) => {
          if (p.kind === "shim") {
            // A delete (or start) must meet the pod as recovery leaves it: before
            // the pod is re-registered it would look unknown, and an unknown
            // pod's delete is acknowledged as done while the pod goes on running.
            const id = p.args[2];
            if (id) await this.#ready(id);
            return await this.#answerShim(conn, p.args);
          }
          validateId("sandbox", p.scope);
          await this.#ready(p.scope);
          return this.#server.handle(conn, p.scope, p.rest);
        }).catch((e) => {
          log.warn("rejected backend connection", { error: e });
          try {
            conn.close();
          } catch { /* closed */ }
        });
      }
    } catch (e) {
      if (!(e instanceof Deno.errors.BadResource)) {
        log.warn("backend listener stopped", { error: e });
      }
    }
  }

  /** Answers the one-line request of a containerd 1.7 shim binary (see shim_mode.ts). */
  async #answerShim(conn: Deno.Conn, args: readonly string[]): Promise<void> {
    let answer: string;
    try {
      if (!this.#shimRequests) {
        throw new UnimplementedError("This sandboxer serves no shim requests");
      }
      answer = `ok ${await this.#shimRequests(args)}`;
    } catch (e) {
      log.warn("shim request failed", { request: args.join(" "), error: e });
      answer = `err ${(e as Error).message.replaceAll("\n", " ")}`;
    }
    try {
      await writeAllTo(conn, new TextEncoder().encode(answer + "\n"));
    } finally {
      try {
        conn.close();
      } catch { /* closed */ }
    }
  }

  #shimRequests: ((args: readonly string[]) => Promise<string>) | undefined;

  /** Who answers containerd 1.7 shim binaries (`start`, `delete`) on the backend socket. */
  onShimRequest(fn: (args: readonly string[]) => Promise<string>): void {
    this.#shimRequests = fn;
  }

  /** Pods whose socket a shim binary asked for (containerd 1.7's shim mode). */
  #shimPods = new Set<string>();

  /**
   * The socket of a pod started through a shim binary: a hashed name under the
   * short socket directory, since it is needed before the pod (and its
   * directory) exists. Recovery finds it again by its name.
   */
  #shimSocketPath(sandboxId: string): Promise<string> {
    return socketPath(this.#shortDir, `shim@${sandboxId}`, "task.sock");
  }

  /**
   * Serves pod `sandboxId`'s Task and shim Sandbox APIs before the pod exists
   * (containerd 1.7 dials the address, then creates the pod on it); returns
   * the address as a shim prints it.
   */
  async openShim(sandboxId: string): Promise<string> {
    validateId("sandbox", sandboxId);
    await Deno.mkdir(this.#shortDir, { recursive: true, mode: 0o700 });
    const path = await this.#shimSocketPath(sandboxId);
    await this.#serial(async () => {
      await this.#relay.listen(sandboxId, path);
      this.#shimPods.add(sandboxId);
      this.#open.add(sandboxId);
    });
    return `unix://${path}`;
  }

  /**
   * The socket of a pod: `<dir>/<id>/task.sock`, or a hashed name under
   * the daemon's short socket directory (`<dir>/.s/`) when that path would exceed the 107 bytes a unix socket
   * address holds (a deep --dir with 64-character ids).
   */
  async socketPath(sandboxId: string): Promise<string> {
    const shim = await this.#shimSocketPath(sandboxId);
    if (this.#shimPods.has(sandboxId) || await isSocket(shim)) {
      this.#shimPods.add(sandboxId);
      return shim;
    }
    const plain = join(this.#root, sandboxId, "task.sock");
    if (new TextEncoder().encode(plain).length <= MAX_SOCKET_PATH) return plain;
    const dir = this.#shortDir;
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    const short = await socketPath(dir, `task@${sandboxId}`, "task.sock");
    if (new TextEncoder().encode(short).length > MAX_SOCKET_PATH) {
      throw new InvalidArgumentError(
        `Cannot serve pod "${sandboxId}": --dir "${this.#root}" is too long for a socket path`,
      );
    }
    return short;
  }

  /**
   * Runs relay commands one at a time: the last pod's close stops the relay,
   * and a pod opened meanwhile (another pod's lock) must not land in between.
   */
  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#relayOps.then(fn);
    this.#relayOps = run.then(() => {}, () => {});
    return run;
  }

  async open(sandboxId: string): Promise<string> {
    const path = await this.socketPath(sandboxId);
    await this.#serial(async () => {
      await this.#relay.listen(sandboxId, path);
      this.#open.add(sandboxId);
    });
    return `ttrpc+unix://${path}`;
  }

  close(sandboxId: string): Promise<void> {
    if (this.#shimPods.has(sandboxId)) return this.#closeShim(sandboxId);
    return this.#serial(async () => {
      await this.#relay.close(sandboxId);
      this.#server.closeScope(sandboxId);
      this.#open.delete(sandboxId);
      if (!this.#open.size) await this.#relay.quit();
    });
  }

  /**
   * A shim-mode pod's Shutdown arrives on one of the connections being closed:
   * the socket goes at once, the connections once the answer is out (containerd
   * closes them itself right after).
   */
  async #closeShim(sandboxId: string): Promise<void> {
    await this.#serial(() => this.#relay.unlisten(sandboxId));
    this.#shimPods.delete(sandboxId);
    const t = setTimeout(() => this.finishShimClose(sandboxId), SHIM_LINGER_MS);
    Deno.unrefTimer(t);
    this.#lingering.set(sandboxId, t);
  }

  /** Shim-mode pods whose socket is gone and whose connections still linger. */
  #lingering = new Map<string, ReturnType<typeof setTimeout>>();

  /**
   * Ends what lingers of a shim-mode pod closed by `close` (at once when the
   * answer of its Shutdown is out, else after a grace).
   */
  finishShimClose(sandboxId: string): void {
    const t = this.#lingering.get(sandboxId);
    if (t === undefined) return;
    clearTimeout(t);
    this.#lingering.delete(sandboxId);
    this.#serial(async () => {
      // Opened again meanwhile (a new pod with the same id): keep it.
      if (this.#shimPods.has(sandboxId)) return;
      await this.#relay.close(sandboxId);
      this.#server.closeScope(sandboxId);
      this.#open.delete(sandboxId);
      if (!this.#open.size) await this.#relay.quit();
    }).catch((e) =>
      log.warn("cannot close a shim pod's connections", { sandbox: sandboxId, error: e })
    );
  }

  /** Stops serving relayed connections; the relay keeps the pods' sockets for the next daemon. */
  closeAll(): Promise<void> {
    clearInterval(this.#watchdog);
    for (const id of [...this.#lingering.keys()]) this.finishShimClose(id);
    try {
      this.#backend?.close();
    } catch { /* closed */ }
    this.#server.close();
    return Promise.resolve();
  }
}

async function isSocket(path: string): Promise<boolean> {
  try {
    return (await Deno.lstat(path)).isSocket === true;
  } catch {
    return false;
  }
}

async function writeAllTo(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
}
