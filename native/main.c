// kuasar-helper: the few process-level jobs a Deno daemon cannot do itself.
//
// Deno cannot fork without exec, place arbitrary file descriptors on a
// child's stdio, receive descriptors over SCM_RIGHTS, or leave behind a
// process that outlives it. Sandboxers still need all of that: a
// namespace-holding process per pod; for every container process a parent
// that owns its stdio and captures its exact exit status even after the
// daemon was killed and restarted; and task sockets whose connections to
// containerd survive that restart. This helper does those jobs. It is small
// and static (musl) because one runs per pod and per container process.
//
//   kuasar-helper hold    --exit-file F [--netns P | --new-netns | --host-netns]
//                         [--host-ipc] [--host-uts] [--hostname H] [--log L]
//   kuasar-helper monitor --exit-file F [--pid-file P] [--stdin S] [--stdout O]
//                         [--stderr E] [--console-socket C] [--control K]
//                         [--io-socket I] [--log L] [--wait N <N args>]
//                         [--rootfs-mount TARGET SOURCE FSTYPE FLAGS DATA ...]
//                         [--runtime-log R]
//                         -- <runtime argv...>   (--wait: exit status from the
//                         {"exitStatus":N} that command prints; --rootfs-mount:
//                         mounted in the runtime's own mount namespace)
//   kuasar-helper relay   --control C --backend B [--log L]
//   kuasar-helper notify  READY=1 [MAINPID=N ...]
//   kuasar-helper detach  [--log L] -- <argv...>
//   kuasar-helper exec    -- <argv...>   (runs argv without the daemon's descriptors)
//   kuasar-helper pause   (a sandbox's root process: reaps, exits on TERM/INT)
//   kuasar-helper pty-shell --port DEV -- <argv...>   (a VM guest's debug console)
//   kuasar-helper sandbox-wait <runsc-root> <sandbox> <container> -- <runsc wait argv>
//                         (a gVisor container's exit, asked of its sandbox)
//   containerd-shim-kuasar-<kind>-v1 ...   (this binary under that name: containerd 2.x)
//   containerd-shim-kuasar-<kind>-v2 ...   (containerd 1.7 shim mode, shim_v2.c)
//
// Exit records: {"pid":N,"status":S,"exited_sec":T,"exited_nsec":U}; status is
// the exit code, or 128+signal for a killed process.
#include "helper.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

// close_inherited_fds drops every descriptor but stdio: the daemon's runtime
// does not mark all of its sockets close-on-exec, and a helper that outlives
// the daemon must not keep its listening socket (or anything else) alive.
static void close_inherited_fds(void) {
#ifdef SYS_close_range
  if (syscall(SYS_close_range, 3, ~0U, 0) == 0) return;
#endif
  for (int fd = 3; fd < 65536; fd++) close(fd);
}

int main(int argc, char **argv) {
  close_inherited_fds();
  const char *base = strrchr(argv[0], '/');
  base = base ? base + 1 : argv[0];
  if (!strncmp(base, "containerd-shim-", 16)) return cmd_shim_stub(argc, argv);
  if (argc >= 2 && !strcmp(argv[1], "hold")) return cmd_hold(argc - 2, argv + 2);
  if (argc >= 2 && !strcmp(argv[1], "monitor")) return cmd_monitor(argc - 2, argv + 2);
  if (argc >= 2 && !strcmp(argv[1], "relay")) return cmd_relay(argc - 2, argv + 2);
  if (argc >= 2 && !strcmp(argv[1], "notify")) return cmd_notify(argc - 2, argv + 2);
  if (argc >= 2 && !strcmp(argv[1], "detach")) return cmd_detach(argc - 2, argv + 2);
  if (argc >= 2 && !strcmp(argv[1], "pause")) return cmd_pause();
  if (argc >= 2 && !strcmp(argv[1], "probe-kvm")) return cmd_probe_kvm();
  if (argc >= 2 && !strcmp(argv[1], "probe-shm")) return cmd_probe_shm(argc - 2, argv + 2);
  if (argc >= 2 && !strcmp(argv[1], "pty-shell")) return cmd_pty_shell(argc - 2, argv + 2);
  if (argc >= 2 && !strcmp(argv[1], "sandbox-wait")) return cmd_sandbox_wait(argc - 2, argv + 2);
  // exec: for runtimes that leave long-lived processes behind (runsc's
  // sandbox and gofer), which would otherwise keep the daemon's sockets.
  if (argc >= 4 && !strcmp(argv[1], "exec") && !strcmp(argv[2], "--")) {
    execvp(argv[3], argv + 3);
    dprintf(2, "kuasar-helper exec %s: %s\n", argv[3], strerror(errno));
    return 127;
  }
  if (argc >= 2 && !strcmp(argv[1], "version")) {
    dprintf(1, "kuasar-helper 2\n");
    return 0;
  }
  dprintf(2, "usage: kuasar-helper hold|monitor|relay|notify|detach|exec|pause|probe-kvm|probe-shm|pty-shell|sandbox-wait|version ...\n");
  return 2;
}
