// sandbox-wait: the exit of a container inside a gVisor sandbox, asked of the
// sandbox itself, for the monitor's waiter mode.
//
//   kuasar-helper sandbox-wait <runsc-root> <sandbox-id> <container-id> -- <fallback argv...>
//
// runsc's own `runsc wait <id>` is a whole Go process (~3 MiB of PSS) alive for
// as long as the container runs; this asks the same question of the sandbox's
// control socket (gVisor's urpc: one JSON call {"method":..., "arg":...}, one
// JSON answer {"success":..., "err":..., "result": <wait status>}) and prints
// what `runsc wait` prints, {"exitStatus":N}. The socket is where runsc makes
// it: runsc-<sandbox-id>.sock in its root, else /var/run, /run or /tmp (owned
// by this user). When
// there is none (a runsc that keeps it elsewhere) or the sandbox hangs up
// before it answers, the fallback (`runsc wait`) is executed in its place.
#include "helper.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

// connect_path connects to a unix socket at any path length (a long one
// through /proc/self/fd, as runsc itself does).
static int connect_path(const char *path) {
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  int pfd = -1;
  if (strlen(path) >= sizeof sa.sun_path) {
    pfd = open(path, O_PATH | O_CLOEXEC);
    if (pfd < 0) return -1;
    snprintf(sa.sun_path, sizeof sa.sun_path, "/proc/self/fd/%d", pfd);
  } else {
    memcpy(sa.sun_path, path, strlen(path));
  }
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int ok = s >= 0 && connect(s, (struct sockaddr *)&sa, sizeof sa) == 0;
  if (pfd >= 0) close(pfd);
  if (!ok) {
    if (s >= 0) close(s);
    return -1;
  }
  return s;
}

// json_end is the length of the first complete JSON object in p[0..n), or 0.
static size_t json_end(const char *p, size_t n) {
  int depth = 0, str = 0;
  for (size_t i = 0; i < n; i++) {
    char c = p[i];
    if (str) {
      if (c == '\\') i++;
      else if (c == '"') str = 0;
    } else if (c == '"') {
      str = 1;
    } else if (c == '{') {
      depth++;
    } else if (c == '}' && --depth == 0) {
      return i + 1;
    }
  }
  return 0;
}

// An id as runsc accepts it, and safe to put in a JSON string as is.
static int plain_id(const char *s) {
  if (!*s || strlen(s) > 128) return 0;
  for (; *s; s++) {
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
          *s == '-' || *s == '_' || *s == '.'))
      return 0;
  }
  return 1;
}

static int fallback(char **argv) {
  if (!argv[0]) {
    dprintf(1, "sandbox-wait: no control socket and no fallback\n");
    return 1;
  }
  execvp(argv[0], argv);
  dprintf(1, "sandbox-wait: exec %s: %s\n", argv[0], strerror(errno));
  return 127;
}

int cmd_sandbox_wait(int argc, char **argv) {
  if (argc < 4 || strcmp(argv[3], "--") != 0) {
    dprintf(2, "usage: kuasar-helper sandbox-wait <runsc-root> <sandbox-id> <container-id> -- "
               "<fallback argv...>\n");
    return 2;
  }
  const char *root = argv[0], *sid = argv[1], *cid = argv[2];
  char **fb = argv + 4;
  if (!plain_id(sid) || !plain_id(cid)) return fallback(fb);
  const char *dirs[] = {root, "/var/run", "/run", "/tmp"};
  int s = -1;
  for (size_t k = 0; k < sizeof dirs / sizeof *dirs && s < 0; k++) {
    char path[4096];
    if (snprintf(path, sizeof path, "%s/runsc-%s.sock", dirs[k], sid) >= (int)sizeof path) continue;
    struct stat st;
    // Only a socket of this user, as runsc makes it: /tmp is anyone's to plant a
    // socket in that would answer with a made-up exit.
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_uid == geteuid()) {
      s = connect_path(path);
    }
  }
  if (s < 0) return fallback(fb);
  char req[512];
  int n = snprintf(req, sizeof req, "{\"method\":\"containerManager.Wait\",\"arg\":\"%s\"}", cid);
  // MSG_NOSIGNAL: a sandbox hanging up on us (on its way down) is a reason to
  // fall back, not SIGPIPE (the monitor runs its waiter with SIGPIPE's default).
  for (int off = 0; off < n;) {
    ssize_t w = send(s, req + off, (size_t)(n - off), MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      close(s);
      return fallback(fb);
    }
    off += (int)w;
  }
  struct buf b = {0};
  size_t end = 0;
  char tmp[4096];
  while (!(end = json_end(b.p, b.len))) {
    ssize_t r = read(s, tmp, sizeof tmp);
    if (r < 0 && errno == EINTR) continue;
    // The sandbox went away before answering (its root container's end, a
    // killed sandbox): runsc wait knows what to make of that.
    if (r <= 0 || b.len > (1 << 20)) return fallback(fb);
    buf_append(&b, tmp, (size_t)r);
  }
  close(s);
  buf_append(&b, "", 1);
  b.p[end] = 0;
  if (!strstr(b.p, "\"success\":true")) {
    // The sandbox's own words (e.g. a container not started yet), for the monitor.
    dprintf(1, "%s\n", b.p);
    return 1;
  }
  const char *r = strstr(b.p, "\"result\":");
  if (!r) return fallback(fb);
  unsigned long ws = strtoul(r + 9, NULL, 10);
  // What `runsc wait` prints: 128 + the signal of a killed process, else its exit code.
  int sig = (int)(ws & 0x7f);
  int code = sig != 0 && sig != 0x7f ? 128 + sig : (int)((ws >> 8) & 0xff);
  dprintf(1, "{\"exitStatus\":%d}\n", code);
  return 0;
}
