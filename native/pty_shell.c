// pty-shell: the guest's opt-in debug console (as Kuasar's agent offers on
// vsock port 1025), on a virtio-serial port the host exposes as a unix
// socket. Each time the host connects, a shell runs on a new pty, relayed to
// and from the port; when it exits, a trailer with its exit status follows,
// and when the host goes first, the shell is hung up.
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

static void wait_host(int port, int connected) {
  while (host_connected(port) != connected) usleep(200 * 1000);
}

// session runs one shell for one host connection; returns once it is over.
static void session(int port, char **argv) {
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
    wait_host(port, 0);
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
  for (;;) {
    wait_host(port, 1);
    session(port, argv + i + 1);
  }
}
