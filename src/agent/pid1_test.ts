import assert from "node:assert/strict";
import { reseedKernelRandom } from "./pid1.ts";

/** Whether this process has CAP_SYS_ADMIN (bit 21 of its effective set). */
function sysAdmin(): boolean {
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(Deno.readTextFileSync("/proc/self/status"));
  return m !== null && (BigInt(`0x${m[1]}`) & (1n << 21n)) !== 0n;
}

// RNDADDENTROPY needs CAP_SYS_ADMIN; the host's own pool takes the same ioctls as a guest's.
Deno.test({
  name: "pid1: reseedKernelRandom credits the bytes and reseeds (the ioctls are accepted)",
  ignore: !sysAdmin(),
  fn() {
    const path = "/proc/sys/kernel/random/entropy_avail";
    reseedKernelRandom(crypto.getRandomValues(new Uint8Array(64)));
    // The pool is full (256 bits) on kernels since 5.18 whatever was credited; it never drops.
    assert.ok(Number(Deno.readTextFileSync(path)) > 0);
  },
});
