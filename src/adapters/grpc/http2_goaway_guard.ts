/**
 * Works around a crash of Deno 2.9's node:http2 (denoland/deno#36788), on
 * which @grpc/grpc-js runs the Controller server and our clients.
 *
 * When an HTTP/2 session receives a GOAWAY while it has no open stream (a
 * client closing an idle connection: `kuasar ctl`, containerd; a server
 * shutting down with idle clients), Deno's handler closes the session from
 * inside the `goaway` event, and an idle session is destroyed on the spot:
 * the nghttp2 session is freed while nghttp2 is still processing that frame.
 * The process then aborts (`find_stream_on_goaway_func: Assertion ...`) or
 * dies of SIGSEGV, depending on what reuses the memory.
 *
 * The guard defers `close()` and `destroy()` called while a `goaway` is
 * handled to the next tick, when nghttp2 is done with the frame. That changes no
 * outcome, only its moment. Loaded (for its effect) by every module that
 * uses grpc-js; harmless on a runtime without the bug, remove it once the
 * pinned Deno has the fix.
 *
 * @module
 */
import http2 from "node:http2";
import process from "node:process";

interface Session {
  emit(event: string | symbol, ...args: unknown[]): boolean;
  close(...args: unknown[]): void;
  destroy(...args: unknown[]): void;
}

const GUARDED = Symbol.for("kuasar.http2GoawayGuard");

function install(): void {
  const proto = (http2 as unknown as { Http2Session?: { prototype: Session } }).Http2Session
    ?.prototype as (Session & { [GUARDED]?: true }) | undefined;
  if (!proto || proto[GUARDED]) return;
  const emit = proto.emit;
  proto.emit = function (this: Session, event: string | symbol, ...args: unknown[]): boolean {
    if (event !== "goaway" || Object.hasOwn(this, "close")) return emit.call(this, event, ...args);
    const { close, destroy } = this;
    // Own properties shadow the prototype's methods until the next tick:
    // Deno's handler closes the session right after emitting the event.
    Object.assign(this, {
      close: (...a: unknown[]) => process.nextTick(() => close.apply(this, a)),
      destroy: (...a: unknown[]) => process.nextTick(() => destroy.apply(this, a)),
    });
    process.nextTick(() => {
      delete (this as Partial<Session>).close;
      delete (this as Partial<Session>).destroy;
    });
    return emit.call(this, event, ...args);
  };
  proto[GUARDED] = true;
}

install();
