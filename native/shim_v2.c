// The containerd 1.7 shim of a sandboxer: containerd-shim-kuasar-<kind>-v2.
//
// containerd 1.7 with `sandbox_mode = "shim"` runs "<shim> -id <pod> start"
// in the pod's bundle directory once per pod, dials the address it prints and
// speaks the shim's Sandbox API (containerd.runtime.sandbox.v1.Sandbox) and
// the Task API v2 there, for the pod and every container in it. A shim
// process per pod is what kuasar exists to avoid, so this binary only asks the
// sandboxer for the pod's address (the sandboxer serves both services on a
// per-pod socket held by its task relay, which survives sandboxer restarts),
// writes it where containerd reads it back, prints it and exits.
//
// "... delete" is what containerd runs when it gives up on a shim (its
// connection died, or it cannot be reloaded after a containerd restart): the
// sandboxer then stops and removes the pod, as containerd now takes it for
// dead, and the exit is printed as a task DeleteResponse.
//
// The sandboxer is found through "<this binary's path>.sandboxer", a file the
// sandboxer writes next to the link it installs: one line, the path of its
// backend socket. The exchange on that socket is one line each way:
//   -> "KUASAR-SHIM 1 start <namespace> <id>"  <- "ok <address>" | "err <why>"
//   -> "KUASAR-SHIM 1 delete <namespace> <id>" <- "ok <status> <exited at, ms>" | "err <why>"
#include "helper.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LINE_MAX_LEN 512

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

// backend_path reads the sandboxer's backend socket from the sidecar file.
// A link to the installed stub (on containerd's PATH, say) finds the sidecar
// next to the link it points to: links are followed until one has a sidecar.
static FILE *open_sidecar(const char *self, char *sidecar, size_t len) {
  char cur[4096], next[4096];
  snprintf(cur, sizeof cur, "%s", self);
  for (int hop = 0; hop < 8; hop++) {
    if (snprintf(sidecar, len, "%s.sandboxer", cur) >= (int)len) return NULL;
    FILE *f = fopen(sidecar, "re");
    if (f || errno != ENOENT) return f;
    ssize_t n = readlink(cur, next, sizeof next - 1);
    if (n <= 0) break;
    next[n] = 0;
    if (next[0] == '/') {
      snprintf(cur, sizeof cur, "%s", next);
    } else {
      char *slash = strrchr(cur, '/');
      if (slash) {
        slash[1] = 0;
        if (strlen(cur) + strlen(next) >= sizeof cur) break;
        strcat(cur, next);
      } else {
        snprintf(cur, sizeof cur, "%s", next);
      }
    }
  }
  snprintf(sidecar, len, "%s.sandboxer", self);
  errno = ENOENT;
  return NULL;
}

static int backend_path(const char *self, char *out, size_t outlen) {
  char sidecar[4096];
  FILE *f = open_sidecar(self, sidecar, sizeof sidecar);
  if (!f) {
    dprintf(2, "%s: cannot read %s (%s): is the sandboxer of this kind running?\n", self, sidecar,
            strerror(errno));
    return -1;
  }
  char *ok = fgets(out, (int)outlen, f);
  fclose(f);
  if (ok) out[strcspn(out, "\r\n")] = 0;
  if (!ok || !*out) {
    dprintf(2, "%s: %s names no sandboxer socket\n", self, sidecar);
    return -1;
  }
  return 0;
}

// ask sends one request line to the sandboxer and reads its one-line answer
// (without "ok "); returns 0 on "ok", -1 otherwise (the reason is printed).
static int ask(const char *self, const char *request, char *answer, size_t alen) {
  char path[4096];
  if (backend_path(self, path, sizeof path) < 0) return -1;
  int fd = connect_unix(path);
  if (fd < 0) {
    dprintf(2, "%s: cannot reach the sandboxer at %s: %s\n", self, path, strerror(errno));
    return -1;
  }
  write_all(fd, request, strlen(request));
  char line[LINE_MAX_LEN];
  size_t n = 0;
  while (n < sizeof line - 1) {
    ssize_t r = read(fd, line + n, sizeof line - 1 - n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    n += (size_t)r;
    if (memchr(line, '\n', n)) break;
  }
  close(fd);
  line[n] = 0;
  line[strcspn(line, "\r\n")] = 0;
  if (!strncmp(line, "ok", 2) && (line[2] == 0 || line[2] == ' ')) {
    snprintf(answer, alen, "%s", line[2] ? line + 3 : "");
    return 0;
  }
  dprintf(2, "%s: the sandboxer refused: %s\n", self,
          !strncmp(line, "err ", 4) ? line + 4 : (n ? line : "no answer"));
  return -1;
}

// An id or namespace goes into a space-separated line: refuse what would split it.
static int plain_word(const char *s) {
  if (!s || !*s || strlen(s) > 200) return 0;
  for (; *s; s++) {
    if (*s <= ' ' || *s == 0x7f) return 0;
  }
  return 1;
}

static int shim_start(const char *self, const char *ns, const char *id) {
  char req[LINE_MAX_LEN], addr[LINE_MAX_LEN];
  snprintf(req, sizeof req, "KUASAR-SHIM 1 start %s %s\n", ns, id);
  if (ask(self, req, addr, sizeof addr) < 0) return 1;
  // containerd reads the pod's address back from its bundle (the cwd) when a
  // container joins the pod and when it reloads shims after a restart.
  int fd = open("address", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    dprintf(2, "%s: cannot write the address file in the bundle: %s\n", self, strerror(errno));
    return 1;
  }
  write_all(fd, addr, strlen(addr));
  close(fd);
  write_all(1, addr, strlen(addr));
  return 0;
}

static int shim_delete(const char *self, const char *ns, const char *id) {
  char req[LINE_MAX_LEN], ans[LINE_MAX_LEN];
  snprintf(req, sizeof req, "KUASAR-SHIM 1 delete %s %s\n", ns, id);
  if (ask(self, req, ans, sizeof ans) < 0) return 1;
  unsigned long status = 0;
  unsigned long long at_ms = 0;
  sscanf(ans, "%lu %llu", &status, &at_ms);
  // task.DeleteResponse{exit_status = 2, exited_at = 3 (Timestamp{seconds = 1, nanos = 2})}
  struct buf out = {0}, ts = {0};
  put_varint(&ts, 1 << 3);
  put_varint(&ts, at_ms / 1000);
  put_varint(&ts, 2 << 3);
  put_varint(&ts, (at_ms % 1000) * 1000000);
  put_varint(&out, 2 << 3);
  put_varint(&out, status);
  put_varint(&out, 3 << 3 | 2);
  put_varint(&out, ts.len);
  buf_append(&out, ts.p, ts.len);
  write_all(1, out.p, out.len);
  return 0;
}

int cmd_shim_v2(int argc, char **argv) {
  const char *self = argv[0];
  const char *id = NULL, *ns = getenv("NAMESPACE"), *action = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-id") && i + 1 < argc) id = argv[++i];
    else if (!strcmp(argv[i], "-namespace") && i + 1 < argc) ns = argv[++i];
    else if ((!strcmp(argv[i], "-address") || !strcmp(argv[i], "-publish-binary") ||
              !strcmp(argv[i], "-bundle")) && i + 1 < argc) i++;
    else if (argv[i][0] != '-') action = argv[i];
  }
  if (!action) {
    dprintf(2, "%s: an action (start, delete) is required\n", self);
    return 2;
  }
  if (!ns || !*ns) ns = "default";
  if (!plain_word(id) || !plain_word(ns)) {
    dprintf(2, "%s: -id and -namespace must be non-empty words\n", self);
    return 2;
  }
  if (!strcmp(action, "start")) return shim_start(self, ns, id);
  if (!strcmp(action, "delete")) return shim_delete(self, ns, id);
  dprintf(2, "%s: unknown action \"%s\"\n", self, action);
  return 2;
}
