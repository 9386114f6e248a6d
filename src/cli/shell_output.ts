/**
 * The debug console's stream as `kuasar ctl shell` reads it: the shell's pty output, then
 * (when the shell exits) `\0kuasar-shell-exit=<status>\r\n`. The shell may print NUL bytes
 * of its own (binary output), so every NUL is a candidate trailer, not only the first.
 *
 * @module
 */
import { SHELL_EXIT_MARK } from "../ports/agent_protocol.ts";

const TRAILER = new RegExp(`^${SHELL_EXIT_MARK}(\\d{1,3})\\r\\n`);
/** Mark, up to 3 digits, CR LF. */
const MAX_TRAILER = SHELL_EXIT_MARK.length + 5;

/** Bytes as a string of char codes 0-255 (no decoding: only ASCII is compared). */
function latin1(b: Uint8Array): string {
  let s = "";
  for (const x of b) s += String.fromCharCode(x);
  return s;
}

/** Whether `tail` (from a NUL to the end of what came) may still become a trailer. */
function maybeTrailer(tail: string): boolean {
  if (tail.length >= MAX_TRAILER) return false;
  if (SHELL_EXIT_MARK.startsWith(tail)) return true;
  return tail.startsWith(SHELL_EXIT_MARK) &&
    /^\d{0,3}\r?$/.test(tail.slice(SHELL_EXIT_MARK.length));
}

/** Splits the stream into the shell's output and its exit status. */
export class ShellOutput {
  #held = new Uint8Array(0);

  /** What of `chunk` (after what was held back) is output, and the status once the trailer came. */
  push(chunk: Uint8Array): { out: Uint8Array; code?: number } {
    const b = new Uint8Array(this.#held.length + chunk.length);
    b.set(this.#held);
    b.set(chunk, this.#held.length);
    this.#held = new Uint8Array(0);
    for (let z = b.indexOf(0); z >= 0; z = b.indexOf(0, z + 1)) {
      const tail = latin1(b.subarray(z, z + MAX_TRAILER));
      const m = TRAILER.exec(tail);
      if (m) return { out: b.subarray(0, z), code: Number(m[1]) };
      if (z + tail.length === b.length && maybeTrailer(tail)) {
        this.#held = b.slice(z);
        return { out: b.subarray(0, z) };
      }
      // A NUL of the shell's own: output.
    }
    return { out: b };
  }
}
