/**
 * The task-socket relay (native/relay.c): a helper process that owns every
 * pod's task socket, so containerd's task connections outlive a restart of
 * this daemon (containerd takes a dropped task connection for a dead shim
 * and marks its containers exited). The daemon serves the relayed
 * connections on one backend socket; each starts with the line
 * `KUASAR-RELAY 1 <sandbox id>`.
 *
 * @module
 */
import { InternalError, UnavailableError } from "../../domain/errors.ts";
import { log } from "../../lib/log.ts";
import { startHelper } from "./helper.ts";
import type { StateLayout } from "../os/state_layout.ts";

/** Where a daemon's relay lives. */
export interface RelayPaths {
  readonly control: string;
  readonly backend: string;
  readonly log: string;
}

/** The relay paths under a sandboxer's --dir. */
export function relayPaths(layout: StateLayout): RelayPaths {
  return {
    control: layout.path("relayControl"),
    backend: layout.path("relayBackend"),
    log: layout.path("relayLog"),
  };
}

/** Client of a relay; starts one when none answers. */
export class Relay {
  readonly paths: RelayPaths;
  #helper: string;

  constructor(helper: string, paths: RelayPaths) {
    this.#helper = helper;
    this.paths = paths;
  }

  /** Makes sure a relay serves the control socket (an existing one is kept, with its connections). */
  async ensure(): Promise<void> {
    if (await this.#try("ping") === "ok") return;
    await startHelper(this.#helper, [
      "relay",
      "--control",
      this.paths.control,
      "--backend",
      this.paths.backend,
      "--log",
      this.paths.log,
    ]);
    if (await this.#try("ping") !== "ok") {
      throw new UnavailableError(`Task relay does not answer on "${this.paths.control}"`);
    }
    log.info("task relay started", { control: this.paths.control });
  }

  /** Whether a relay answers. */
  async alive(): Promise<boolean> {
    return await this.#try("ping") === "ok";
  }

  /** Serves pod `scope`'s task socket at `path` (idempotent). */
  async listen(scope: string, path: string): Promise<void> {
    await this.#command(`listen ${scope} ${path}`);
  }

  /** Stops serving pod `scope` and drops its connections. */
  async close(scope: string): Promise<void> {
    await this.#command(`close ${scope}`);
  }

  /** Removes pod `scope`'s task socket and keeps its open connections. */
  async unlisten(scope: string): Promise<void> {
    await this.#command(`unlisten ${scope}`);
  }

  /**
   * Keeps the FIFO `path` open for writing for pod `scope` (until `release`, or `close` of the
   * pod): false when it cannot (no reader, not a FIFO, or a relay from before this command).
   */
  async hold(scope: string, path: string): Promise<boolean> {
    let answer = await this.#try(`hold ${scope} ${path}`);
    if (answer === undefined) {
      await this.ensure();
      answer = await this.#try(`hold ${scope} ${path}`);
    }
    if (answer !== "ok") log.debug("relay does not hold an output", { path, answer });
    return answer === "ok";
  }

  /** Lets a held FIFO go. */
  async release(path: string): Promise<void> {
    await this.#try(`release ${path}`);
  }

  /** Ends the relay (only when no pod is left). */
  async quit(): Promise<void> {
    await this.#try("quit");
  }

  async #command(line: string): Promise<void> {
    let answer = await this.#try(line);
    if (answer === undefined) {
      await this.ensure();
      answer = await this.#try(line);
    }
    if (answer !== "ok") {
      throw new InternalError(
        `Task relay refused "${line.split(" ")[0]}": ${answer ?? "no answer"}`,
      );
    }
  }

  /** One command on a fresh control connection; undefined if nobody answers. */
  async #try(line: string): Promise<string | undefined> {
    let conn: Deno.Conn;
    try {
      conn = await Deno.connect({ transport: "unix", path: this.paths.control });
    } catch {
      return undefined;
    }
    try {
      await conn.write(new TextEncoder().encode(line + "\n"));
      const buf = new Uint8Array(256);
      let text = "";
      for (;;) {
        const n = await conn.read(buf);
        if (n === null) break;
        text += new TextDecoder().decode(buf.subarray(0, n));
        if (text.includes("\n")) break;
      }
      return text.trim() || undefined;
    } catch {
      return undefined;
    } finally {
      try {
        conn.close();
      } catch { /* closed */ }
    }
  }
}

const PREAMBLE = "KUASAR-RELAY 1 ";
/** The first line of a shim request (native/shim_v2.c): `KUASAR-SHIM 1 <verb> <args…>`. */
const SHIM_PREAMBLE = "KUASAR-SHIM 1 ";

/** What a backend connection is: a relayed task connection, or a one-line shim request. */
export type Preamble =
  | { readonly kind: "relay"; readonly scope: string; readonly rest: Uint8Array }
  | { readonly kind: "shim"; readonly args: readonly string[] };

/**
 * Reads the first line of a backend connection: the relay's preamble (the pod
 * it serves, and the bytes read past the line) or a shim request; throws on
 * anything else.
 */
export async function readPreamble(conn: Deno.Conn, timeoutMs = 5000): Promise<Preamble> {
  const buf = new Uint8Array(256);
  let have = new Uint8Array(0);
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const nl = have.indexOf(10);
    if (nl >= 0) {
      const line = new TextDecoder().decode(have.subarray(0, nl));
      if (line.startsWith(PREAMBLE)) {
        return {
          kind: "relay",
          scope: line.slice(PREAMBLE.length).trim(),
          rest: have.slice(nl + 1),
        };
      }
      if (line.startsWith(SHIM_PREAMBLE)) {
        return { kind: "shim", args: line.slice(SHIM_PREAMBLE.length).trim().split(" ") };
      }
      break;
    }
    if (have.length > 400) break;
    const n = await conn.read(buf);
    if (n === null) break;
    const merged = new Uint8Array(have.length + n);
    merged.set(have);
    merged.set(buf.subarray(0, n), have.length);
    have = merged;
  }
  throw new InternalError("Backend connection without relay preamble");
}
