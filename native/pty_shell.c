// pty-shell: the guest's opt-in debug console (as Kuasar's agent offers on
// vsock port 1025), on a virtio-serial port the host exposes as a unix
// socket. Each time a host client says hello, a shell runs on a new pty,
// relayed to and from the port; when it exits, a trailer with its exit status
// follows, and when the host goes first, the shell is hung up.
//
// A session begins on the hello, not on the port's connected state: that
// state can only be polled, and a client that leaves and a next one that
// comes within one poll look like no change at all.
//
//   kuasar-helper pty-shell --port /dev/vportNpM -- <argv...>
#include "helper.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

// A virtio-serial port polls POLLHUP while no host is connected, and
// POLLOUT (without POLLHUP) once one is.
static int host_connected(int port) {
  struct pollfd p = {.fd = port, .events = POLLOUT};
  if (poll(&p, 1, 0) < 0) return 0;
  return (p.revents & POLLOUT) && !(p.revents & POLLHUP);
}

// The client's first bytes (SHELL_HELLO in src/ports/agent_protocol.ts).
static const char HELLO[] = "\0kuasar-shell-open\n";
#define HELLO_LEN (sizeof HELLO - 1)
#define READ_CAP 4096

// wait_hello discards what the port brings (a previous client's leftover
// input) until a hello; the bytes that followed it are left in buf.
static size_t wait_hello(int port, char buf[READ_CAP + HELLO_LEN]) {
  char seen[HELLO_LEN + READ_CAP];
  size_t have = 0;
  for (;;) {
    if (!host_connected(port)) {
      // What a client sent and left behind is not the next client's: drop it.
      struct pollfd d = {.fd = port, .events = POLLIN};
      while (poll(&d, 1, 0) > 0 && (d.revents & POLLIN) && read(port, seen, sizeof seen) > 0) {
      }
      have = 0;
      usleep(200 * 1000);
      continue;
    }
    struct pollfd p = {.fd = port, .events = POLLIN};
    if (poll(&p, 1, 200) <= 0 || !(p.revents & POLLIN)) continue;
    ssize_t n = read(port, seen + have, sizeof seen - have);
    if (n <= 0) {
      have = 0;
      continue;
    }
    have += (size_t)n;
    for (size_t i = 0; i + HELLO_LEN <= have; i++) {
      if (memcmp(seen + i, HELLO, HELLO_LEN)) continue;
      // A departed client's hello may still precede this one's (a reconnect faster than the
      // poll above): one session for the lot, each hello dropped.
      char *p = seen + i + HELLO_LEN;
      size_t rest = have - i - HELLO_LEN;
      while (rest >= HELLO_LEN && !memcmp(p, HELLO, HELLO_LEN)) {
        p += HELLO_LEN;
        rest -= HELLO_LEN;
      }
      memcpy(buf, p, rest);
      return rest;
    }
    // Keep only what could still begin a hello split across reads.
    size_t keep = have < HELLO_LEN - 1 ? have : HELLO_LEN - 1;
    memmove(seen, seen + have - keep, keep);
    have = keep;
  }
}

// session runs one shell for one client; `first` is input that came with
// its hello. Returns once the shell exited or the client left.
static void session(int port, char **argv, const char *first, size_t first_len) {
  int master, slave;
  struct winsize ws = {.ws_row = 24, .ws_col = 80};
  if (openpty(&master, &slave, NULL, NULL, &ws) < 0) die("openpty");
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    close(master);
    close(port);
    setsid();
    ioctl(slave, TIOCSCTTY, 0);
    for (int fd = 0; fd < 3; fd++) dup2(slave, fd);
    if (slave > 2) close(slave);
    setenv("TERM", "xterm", 0);
    execvp(argv[0], argv);
    dprintf(2, "pty-shell: %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  close(slave);
  if (first_len) write_all(master, first, first_len);
  char buf[16384];
  int host_left = 0;
  for (;;) {
    struct pollfd p[2] = {{.fd = port, .events = POLLIN}, {.fd = master, .events = POLLIN}};
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = read(master, buf, sizeof buf);
      if (n <= 0) break;  // EIO: the shell and all it started closed the pty
      write_all(port, buf, (size_t)n);
    }
    if (p[0].revents & POLLHUP) {
      host_left = 1;
      break;
    }
    if (p[0].revents & POLLIN) {
      ssize_t n = read(port, buf, sizeof buf);
      if (n <= 0) {
        host_left = 1;
        break;
      }
      write_all(master, buf, (size_t)n);
    }
  }
  if (host_left) {
    kill(-pid, SIGHUP);
    kill(pid, SIGHUP);
  }
  close(master);
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  if (!host_left) {
    char trailer[64];
    int n = snprintf(trailer, sizeof trailer, "\r\n%ckuasar-shell-exit=%d\r\n", 0,
                     status_code(st));
    write_all(port, trailer, (size_t)n);
  }
}

int cmd_pty_shell(int argc, char **argv) {
  const char *path = NULL;
  int i = 0;
  for (; i < argc && strcmp(argv[i], "--"); i++) {
    if (!strcmp(argv[i], "--port") && i + 1 < argc) path = argv[++i];
  }
  if (!path || i + 1 >= argc) {
    dprintf(2, "usage: kuasar-helper pty-shell --port DEV -- argv...\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  int port = open(path, O_RDWR | O_CLOEXEC);
  if (port < 0) die(path);
  char first[READ_CAP + HELLO_LEN];
  for (;;) {
    size_t n = wait_hello(port, first);
    session(port, argv + i + 1, first, n);
  }
}
