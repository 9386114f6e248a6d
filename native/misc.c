// notify (sd_notify on the daemon's behalf) and the containerd shim stub.
#include "helper.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
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
// for the runc kind, "-info" reports what `runc features` says (so CRI knows
// what the runtime supports, e.g. recursive read-only mounts); "delete" has
// nothing to clean (the sandboxer owns the task); "start" is refused, since
// no shim process exists in this model.

static void put_varint(struct buf *b, uint64_t v) {
  unsigned char c[10];
  int n = 0;
  do {
    c[n] = v & 0x7f;
    v >>= 7;
    if (v) c[n] |= 0x80;
    n++;
  } while (v);
  buf_append(b, c, n);
}

// put_bytes appends a length-delimited protobuf field.
static void put_bytes(struct buf *b, int field, const void *data, size_t n) {
  put_varint(b, (uint64_t)field << 3 | 2);
  put_varint(b, n);
  buf_append(b, data, n);
}

// capture runs argv and returns its stdout (empty on failure).
static void capture(char *const argv[], struct buf *out) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0) return;
  pid_t pid = fork();
  if (pid < 0) return;
  if (pid == 0) {
    dup2(p[1], 1);
    int nul = open("/dev/null", O_RDWR);
    dup2(nul, 0);
    dup2(nul, 2);
    execvp(argv[0], argv);
    _exit(127);
  }
  close(p[1]);
  char tmp[4096];
  ssize_t r;
  while ((r = read(p[0], tmp, sizeof tmp)) > 0) buf_append(out, tmp, (size_t)r);
  close(p[0]);
  int st;
  waitpid(pid, &st, 0);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) out->len = 0;
}

static int runtime_info(const char *base) {
  struct buf info = {0}, any = {0}, features = {0};
  char name[128];
  // containerd-shim-kuasar-runc-v1 -> io.containerd.kuasar-runc.v1
  const char *kind = base + 16;
  const char *v = strrchr(kind, '-');
  int klen = v ? (int)(v - kind) : (int)strlen(kind);
  snprintf(name, sizeof name, "io.containerd.%.*s.%s", klen, kind, v ? v + 1 : "v1");
  put_bytes(&info, 1, name, strlen(name));
  if (!strncmp(kind, "kuasar-runc-", 12)) {
    char *argv[] = {"runc", "features", NULL};
    capture(argv, &features);
    if (features.len) {
      static const char url[] = "types.containerd.io/opencontainers/runtime-spec/1/features/Features";
      put_bytes(&any, 1, url, sizeof url - 1);
      put_bytes(&any, 2, features.p, features.len);
      put_bytes(&info, 4, any.p, any.len);
    }
  }
  write_all(1, info.p, info.len);
  return 0;
}

int cmd_shim_stub(int argc, char **argv) {
  const char *base = strrchr(argv[0], '/');
  base = base ? base + 1 : argv[0];
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-info")) return runtime_info(base);
  }
  // containerd-shim-kuasar-<kind>-v2: containerd 1.7's shim mode (shim_v2.c).
  size_t blen = strlen(base);
  if (blen > 3 && !strcmp(base + blen - 3, "-v2")) return cmd_shim_v2(argc, argv);
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "delete")) return 0;  // empty DeleteResponse: status 0
    if (!strcmp(argv[i], "start")) {
      dprintf(2, "%s: kuasar sandboxers serve tasks themselves; the sandboxer must report task API version 3\n",
              argv[0]);
      return 1;
    }
  }
  return 0;
}

// cmd_detach starts a long-lived process outside the daemon's session (so it
// survives the daemon and its process group), prints "ready <pid>" and
// returns. Used for the Wasm host, which keeps modules running while the
// daemon restarts.
int cmd_detach(int argc, char **argv) {
  const char *log = NULL;
  int i = 0;
  for (; i < argc; i++) {
    if (!strcmp(argv[i], "--")) {
      i++;
      break;
    }
    if (!strcmp(argv[i], "--log") && i + 1 < argc) log = argv[++i];
    else {
      dprintf(2, "kuasar-helper detach: unknown argument \"%s\"\n", argv[i]);
      return 2;
    }
  }
  if (i >= argc) {
    dprintf(2, "kuasar-helper detach: a command is required\n");
    return 2;
  }
  pid_t child = fork();
  if (child < 0) die("fork");
  if (child == 0) {
    setsid();
    detach_stdio(log);
    execvp(argv[i], argv + i);
    dprintf(2, "kuasar-helper: exec %s: %s\n", argv[i], strerror(errno));
    _exit(127);
  }
  report("ready", child);
  return 0;
}

// cmd_pause is a pod's root process where the runtime needs one (the init of
// a gVisor sandbox): it reaps children and exits 0 on SIGTERM or SIGINT.
int cmd_pause(void) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGCHLD);
  sigprocmask(SIG_BLOCK, &set, NULL);
  for (;;) {
    int sig;
    if (sigwait(&set, &sig) != 0) continue;
    if (sig == SIGCHLD) {
      while (waitpid(-1, NULL, WNOHANG) > 0) {
      }
      continue;
    }
    return 0;
  }
}
