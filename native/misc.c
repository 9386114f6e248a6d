// notify (sd_notify on the daemon's behalf) and the containerd shim stub.
#include "helper.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

// cmd_notify sends one sd_notify datagram ("READY=1", "WATCHDOG=1"...) to
// $NOTIFY_SOCKET, abstract ("@...") or a path. The unit needs
// NotifyAccess=all because the sender is this helper, not the daemon; the
// daemon passes MAINPID= so systemd still tracks the right process.
int cmd_notify(int argc, char **argv) {
  const char *sock = getenv("NOTIFY_SOCKET");
  if (!sock || !*sock || argc < 1) return 0;
  char msg[512];
  int n = 0;
  for (int i = 0; i < argc && n < (int)sizeof msg - 2; i++) {
    n += snprintf(msg + n, sizeof msg - n, "%s\n", argv[i]);
  }
  if (n >= (int)sizeof msg) n = sizeof msg - 1;
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  size_t len = strlen(sock);
  if (len >= sizeof sa.sun_path) return 2;
  memcpy(sa.sun_path, sock, len);
  if (sa.sun_path[0] == '@') sa.sun_path[0] = 0;
  int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return 1;
  socklen_t alen = offsetof(struct sockaddr_un, sun_path) + len;
  int rc = sendto(s, msg, n, 0, (struct sockaddr *)&sa, alen) < 0 ? 1 : 0;
  close(s);
  return rc;
}

// containerd (2.x) resolves a shim binary named after the runtime_type even
// when it attaches directly to a sandboxer's task address, and runs it with
// "-info" at start-up and "... delete" whenever a task connection closes.
// Installed as containerd-shim-kuasar-<kind>-v1, this binary answers those:
// nothing to report, nothing to clean (the sandboxer owns the task), and it
// refuses "start", since no shim process exists in this model.
int cmd_shim_stub(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "delete")) return 0;  // empty DeleteResponse: status 0
    if (!strcmp(argv[i], "start")) {
      dprintf(2, "%s: kuasar sandboxers serve tasks themselves; the sandboxer must report task API version 3\n",
              argv[0]);
      return 1;
    }
  }
  return 0;  // -info and anything else: nothing to say
}
