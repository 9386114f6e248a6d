/**
 * Structured logging: one JSON object per line on stderr, filtered by level.
 * `--log-level` (trace, debug, info, warn, error) sets the threshold.
 *
 * @module
 */

/** Log levels, least to most severe. */
export type LogLevel = "trace" | "debug" | "info" | "warn" | "error";

const RANK: Record<LogLevel, number> = { trace: 0, debug: 1, info: 2, warn: 3, error: 4 };

/** Fields attached to a log line. */
export type LogFields = Record<string, unknown>;

/** Parses a level name; throws `RangeError` for anything else. */
export function parseLogLevel(s: string): LogLevel {
  const l = s.toLowerCase();
  if (l in RANK) return l as LogLevel;
  throw new RangeError(`Unknown log level "${s}": expected trace, debug, info, warn or error`);
}

/** A logger bound to a set of fields (e.g. the sandbox id). */
export class Logger {
  #fields: LogFields;
  static #threshold = RANK.info;
  static #sink: (line: string) => void = (line) => {
    try {
      Deno.stderr.writeSync(new TextEncoder().encode(line + "\n"));
    } catch {
      // stderr gone (daemon detached): nothing sensible to do
    }
  };

  constructor(fields: LogFields = {}) {
    this.#fields = fields;
  }

  /** Sets the process-wide threshold. */
  static setLevel(level: LogLevel): void {
    Logger.#threshold = RANK[level];
  }

  /** The process-wide threshold (passed on to processes this one starts). */
  static get level(): LogLevel {
    return (Object.keys(RANK) as LogLevel[]).find((l) => RANK[l] === Logger.#threshold)!;
  }

  /** Replaces the output (tests). */
  static setSink(sink: (line: string) => void): void {
    Logger.#sink = sink;
  }

  /** Whether lines of `level` are written. */
  static enabled(level: LogLevel): boolean {
    return RANK[level] >= Logger.#threshold;
  }

  /** A logger that adds `fields` to every line. */
  with(fields: LogFields): Logger {
    return new Logger({ ...this.#fields, ...fields });
  }

  trace(msg: string, fields?: LogFields): void {
    this.#write("trace", msg, fields);
  }
  debug(msg: string, fields?: LogFields): void {
    this.#write("debug", msg, fields);
  }
  info(msg: string, fields?: LogFields): void {
    this.#write("info", msg, fields);
  }
  warn(msg: string, fields?: LogFields): void {
    this.#write("warn", msg, fields);
  }
  error(msg: string, fields?: LogFields): void {
    this.#write("error", msg, fields);
  }

  #write(level: LogLevel, msg: string, fields?: LogFields): void {
    if (RANK[level] < Logger.#threshold) return;
    const line: LogFields = { time: new Date().toISOString(), level, msg, ...this.#fields };
    if (fields) {
      for (const [k, v] of Object.entries(fields)) {
        line[k] = v instanceof Error ? v.message : typeof v === "bigint" ? v.toString() : v;
      }
    }
    Logger.#sink(JSON.stringify(line));
  }
}

/** The root logger. */
export const log: Logger = new Logger();
