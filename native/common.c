// Small utilities shared by the helper's modes.
#include "helper.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

void buf_append(struct buf *b, const void *data, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) die("out of memory");
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, data, n);
  b->len += n;
}

void buf_consume(struct buf *b, size_t n) {
  if (n >= b->len) {
    b->len = 0;
  } else {
    memmove(b->p, b->p + n, b->len - n);
    b->len -= n;
  }
  // Give large buffers back once drained (one burst must not pin memory).
  if (b->len == 0 && b->cap > 65536) {
    free(b->p);
    b->p = NULL;
    b->cap = 0;
  }
}

void buf_free(struct buf *b) {
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
}

void die(const char *what) {
  dprintf(2, "kuasar-helper: %s: %s\n", what, strerror(errno));
  _exit(125);
}

int status_code(int st) {
  if (WIFEXITED(st)) return WEXITSTATUS(st);
  if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
  return 255;
}

// write_exit_record stores the record under a temporary name and renames it
// into place, so a reader never sees a partial file.
void write_exit_record(const char *path, pid_t pid, int status) {
  struct timespec ts;
  char tmp[4096], buf[256];
  clock_gettime(CLOCK_REALTIME, &ts);
  int n = snprintf(buf, sizeof buf, "{\"pid\":%d,\"status\":%d,\"exited_sec\":%lld,\"exited_nsec\":%ld}\n",
                   (int)pid, status, (long long)ts.tv_sec, ts.tv_nsec);
  if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return;
  if (write(fd, buf, n) == n) {
    fsync(fd);
    close(fd);
    rename(tmp, path);
  } else {
    close(fd);
    unlink(tmp);
  }
}

// detach_stdio closes the pipe to the daemon (which may die at any time) and
// points fds 0-2 at /dev/null or the helper's own log file.
void detach_stdio(const char *log) {
  int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
  int out = log ? open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600) : -1;
  if (out < 0) out = nul;
  dup2(nul, 0);
  dup2(nul, 1);
  dup2(out, 2);
  if (out != nul) close(out);
  close(nul);
}

void report(const char *word, long value) { dprintf(1, "%s %ld\n", word, value); }

// leave_parent forks; the daemon's child exits at once and the grandchild goes
// on as the helper, first naming its pid ("pid <n>"). A helper lives as long as
// its pod: as the daemon's child it would keep a child process, its pidfd and
// its pipes open in the daemon all that time (measured: ~4 KiB of the daemon's
// heap per helper), for an exit the helper's exit record reports anyway.
// Under a parent that is PID 1 the orphan would be that parent's again: a
// daemon run as a container's own init does not wait for orphans (a zombie for
// good), the guest agent does but need not. There the helper stays its child,
// reaped by Deno as before. (A PID 1 above the daemon that reaps nothing, a
// container entrypoint that is not an init, needs one: docker --init, tini.)
void leave_parent(void) {
  if (getppid() != 1) {
    pid_t p = fork();
    if (p < 0) die("fork");
    if (p > 0) _exit(0);
  }
  report("pid", getpid());
}

static int unix_addr(const char *path, struct sockaddr_un *sa) {
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  if (strlen(path) >= sizeof sa->sun_path) {
    errno = ENAMETOOLONG;
    return -1;
  }
  strcpy(sa->sun_path, path);
  return 0;
}

// listen_unix binds a fresh 0600 socket at path (a stale file is replaced).
int listen_unix(const char *path, int nonblock) {
  struct sockaddr_un sa;
  if (unix_addr(path, &sa) < 0) return -1;
  unlink(path);
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
  if (s < 0) return -1;
  if (bind(s, (struct sockaddr *)&sa, sizeof sa) < 0 || chmod(path, 0600) < 0 || listen(s, 1024) < 0) {
    int e = errno;
    close(s);
    errno = e;
    return -1;
  }
  return s;
}

int connect_unix(const char *path) {
  struct sockaddr_un sa;
  if (unix_addr(path, &sa) < 0) return -1;
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -1;
  if (connect(s, (struct sockaddr *)&sa, sizeof sa) < 0) {
    int e = errno;
    close(s);
    errno = e;
    return -1;
  }
  return s;
}

void write_all(int fd, const char *buf, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, buf, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return;
    }
    buf += w;
    n -= (size_t)w;
  }
}

int set_nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL);
  return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
