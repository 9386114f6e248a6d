/**
 * A runC pod start, phase by phase, against its floor: on one containerd 2.4,
 * crictl's three calls (RunPodSandbox, CreateContainer, StartContainer) timed
 * one by one for containerd's own runc shim, the runC sandboxer, and the
 * floor sandboxer (floor_sandboxer.ts: the same daemon, a kind that does
 * nothing), alternating A B C after a warm-up of each.
 *
 * @module
 */
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { containerConfig, type E2E, podConfig, startE2E } from "../../tests/support/e2e.ts";
import { containerdDropIn } from "../../src/daemon/deploy_files.ts";
import { floorKind } from "./floor_sandboxer.ts";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));

/** Milliseconds of each call of one pod start. */
export interface Phases {
  readonly runp: number;
  readonly create: number;
  readonly start: number;
  readonly total: number;
}

let seq = 0;

async function podStart(e: E2E, handler: string): Promise<Phases> {
  const name = `floor${++seq}`;
  const pc = podConfig(e, { name });
  const pj = await e.ctd.writeJson(`${name}.json`, pc);
  const cj = await e.ctd.writeJson(`${name}-c.json`, containerConfig("c", ["sleep", "100000"]));
  const t0 = performance.now();
  const pod = (await e.ctd.crictlOk(["runp", "--runtime", handler, pj])).trim();
  const t1 = performance.now();
  const c = (await e.ctd.crictlOk(["create", "--no-pull", pod, cj, pj])).trim();
  const t2 = performance.now();
  await e.ctd.crictlOk(["start", c]);
  const t3 = performance.now();
  return { runp: t1 - t0, create: t2 - t1, start: t3 - t2, total: t3 - t0 };
}

/** `n` pod starts per handler: [containerd's runc, the runC sandboxer, the floor]. */
export async function floorBench(n: number): Promise<Record<string, Phases[]>> {
  const base = await Deno.makeTempDir({ prefix: "kuasar-floor-" });
  const helperDir = join(base, "bin");
  // The floor daemon starts first (it installs the shim stub containerd looks for at start-up);
  // containerd's ttrpc address is only known once containerd runs: a link to it, made then.
  const events = join(base, "containerd.ttrpc");
  const listen = join(base, "floor.sock");
  const floor = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      join(ROOT, "scripts/bench/floor_sandboxer.ts"),
      listen,
      join(base, "state"),
      helperDir,
      events,
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  let e: E2E | undefined;
  try {
    for (let i = 0; !(await Deno.stat(listen).then(() => true, () => false)); i++) {
      if (i > 600) throw new Error("the floor sandboxer did not listen");
      await new Promise((r) => setTimeout(r, 50));
    }
    const dropIn = containerdDropIn(floorKind, helperDir)
      .replaceAll(floorKind.defaultListen, listen);
    e = await startE2E("runc", { entry: join(ROOT, "dist/kuasar.js"), extraDropIns: [dropIn] });
    await Deno.symlink(e.ctd.ttrpcAddress, events);
    const handlers = ["runc", e.fifo, "kuasar-floor"];
    for (const h of handlers) await podStart(e, h);
    const out: Record<string, Phases[]> = Object.fromEntries(handlers.map((h) => [h, []]));
    for (let i = 0; i < n; i++) {
      for (const h of handlers) out[h].push(await podStart(e, h));
    }
    return out;
  } finally {
    await e?.cleanup();
    floor.kill("SIGTERM");
    await floor.status;
    await Deno.remove(base, { recursive: true }).catch(() => {});
  }
}
