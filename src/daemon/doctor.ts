/**
 * `kuasar doctor`: everything a kind needs of this node, checked the way the
 * sandboxer and containerd would meet it, without changing anything (the
 * embedded helper, needed for the KVM probe, goes to a temp dir that is
 * removed after).
 *
 * @module
 */
import type { NodeCheck } from "../domain/doctor.ts";
import { messageOf } from "../domain/errors.ts";
import type { HostKind } from "../adapters/kind_host.ts";
import {
  cgroupCheck,
  freeSpaceCheck,
  helperDirCheck,
  socketCheck,
} from "../adapters/doctor/probes.ts";
import {
  containerdHandlerChecks,
  type ContainerdInspection,
  inspectContainerd,
} from "../adapters/doctor/containerd_checks.ts";
import { installHelper } from "../adapters/supervisor/helper_install.ts";
import { loadConfig } from "./config.ts";
import { stateDirProblem } from "./state_dir.ts";

/** What to check. `listen`, `dir` and `config` apply when one kind is checked. */
export interface DoctorOptions {
  readonly kinds: readonly HostKind[];
  /**
   * The kinds were named (`--kind`): a kind whose engine is missing fails.
   * Otherwise it is reported once as skipped, and its other checks are not run.
   */
  readonly explicit: boolean;
  readonly listen?: string;
  readonly dir?: string;
  readonly config?: string;
  readonly helper?: string;
  readonly helperDir?: string;
  /** containerd's binary and main config; default `containerd` on PATH and /etc/containerd. */
  readonly containerd?: string;
  readonly containerdConfig?: string;
}

/** Runs every check; the result is in a stable order: the node, then kind by kind. */
export async function runDoctor(opts: DoctorOptions): Promise<NodeCheck[]> {
  const containerd = await inspectContainerd(opts.containerd, opts.containerdConfig);
  const checks: NodeCheck[] = [await cgroupCheck(), containerd.check];
  const scratch = await Deno.makeTempDir({ prefix: "kuasar-doctor-" });
  try {
    let helper: string | undefined;
    try {
      helper = await installHelper({ path: opts.helper, installDir: scratch });
    } catch (e) {
      checks.push({
        id: "helper",
        status: "fail",
        detail: messageOf(e),
        fix: "pass --helper with a kuasar-helper built from native/",
      });
    }
    for (const kind of opts.kinds) {
      checks.push(...await kindChecks(kind, opts, helper, containerd));
    }
  } finally {
    await Deno.remove(scratch, { recursive: true }).catch(() => {});
  }
  return checks;
}

async function kindChecks(
  kind: HostKind,
  opts: DoctorOptions,
  helper: string | undefined,
  containerd: ContainerdInspection,
): Promise<NodeCheck[]> {
  const name = kind.name;
  let config;
  const configPath = opts.config ?? kind.defaultConfig;
  try {
    config = await loadConfig(
      configPath,
      kind.configTable ?? name,
      kind.settingsSchema,
      !!opts.config,
    );
  } catch (e) {
    return [{
      id: "config",
      kind: name,
      status: "fail",
      detail: messageOf(e),
      fix: "the sandboxer refuses to start with it: fix the key it names",
    }];
  }
  const dir = opts.dir ?? kind.defaultDir;
  const own = await kind.nodeChecks({
    settings: config.kind,
    helper: helper ?? "kuasar-helper",
    dir,
  });
  const engine = own.find((c) => c.id === "engine");
  if (!opts.explicit && engine?.status === "fail") {
    return [{
      id: "engine",
      kind: name,
      status: "skip",
      detail: `not checked further: ${engine.detail} (kuasar doctor --kind ${name} for all)`,
      fix: engine.fix,
    }];
  }
  const listen = opts.listen ?? kind.defaultListen;
  const helperDir = opts.helperDir ?? config.sandbox.helper_dir ?? "/var/lib/kuasar/bin";
  return [
    ...(configPath ? [configCheck(name, configPath, !!opts.config)] : []),
    ...own,
    await socketCheck(name, listen),
    stateDirCheck(name, dir),
    await freeSpaceCheck(name, dir),
    await helperDirCheck(name, helperDir),
    ...containerdHandlerChecks(containerd, { kind: name, listen }),
  ];
}

function configCheck(kind: string, path: string, named: boolean): NodeCheck {
  try {
    Deno.statSync(path);
    return { id: "config", kind, status: "ok", detail: `${path} is valid` };
  } catch {
    // loadConfig has refused a named file that is missing: only a default one gets here.
    return {
      id: "config",
      kind,
      status: "ok",
      detail: `${path} is absent: the defaults apply${named ? "" : " (it is optional)"}`,
    };
  }
}

/** --dir as the sandboxer will judge it at start (state_dir.ts), without creating it. */
function stateDirCheck(kind: string, dir: string): NodeCheck {
  let st: Deno.FileInfo;
  try {
    st = Deno.lstatSync(dir);
  } catch {
    return { id: "state-dir", kind, status: "ok", detail: `${dir} is created (0700) at start` };
  }
  const problem = stateDirProblem(st, Deno.uid() ?? 0);
  return problem ? { id: "state-dir", kind, status: "fail", detail: `${dir}: ${problem}` } : {
    id: "state-dir",
    kind,
    status: "ok",
    detail: `${dir} (mode 0${((st.mode ?? 0) & 0o777).toString(8)})`,
  };
}
