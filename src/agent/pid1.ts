/**
 * What PID 1 of a VM must do that Deno cannot do by itself: reap orphans and
 * power the machine off, through libc (FFI).
 *
 * @module
 */
const WNOHANG = 1;
const LINUX_REBOOT_CMD_POWER_OFF = 0x4321fedc;

interface Libc {
  waitpid(pid: number, status: Deno.PointerValue, options: number): number;
  reboot(cmd: number): number;
  sync(): void;
}

let libc: Libc | undefined;

function lib(): Libc {
  if (libc) return libc;
  const l = Deno.dlopen("libc.so.6", {
    waitpid: { parameters: ["i32", "pointer", "i32"], result: "i32" },
    reboot: { parameters: ["i32"], result: "i32" },
    sync: { parameters: [], result: "void" },
  });
  libc = {
    waitpid: (pid, st, o) => l.symbols.waitpid(pid, st, o) as number,
    reboot: (cmd) => l.symbols.reboot(cmd) as number,
    sync: () => l.symbols.sync(),
  };
  return libc;
}

/** Reaps every exited child; as PID 1 that includes every orphan of the guest. */
export function reapZombies(): number {
  let n = 0;
  while (lib().waitpid(-1, null, WNOHANG) > 0) n++;
  return n;
}

/** Reaps on every SIGCHLD (and once a second, as signals coalesce). */
export function startReaper(): void {
  Deno.addSignalListener("SIGCHLD", () => reapZombies());
  const t = setInterval(() => reapZombies(), 1000);
  Deno.unrefTimer(t);
}

/** Flushes the file systems and powers the VM off (QEMU then exits). */
export function powerOff(): never {
  lib().sync();
  lib().reboot(LINUX_REBOOT_CMD_POWER_OFF);
  Deno.exit(0);
}
