// kuasar-helper: the few process-level jobs a Deno daemon cannot do itself.
//
// Deno cannot fork without exec, place arbitrary file descriptors on a child's
// stdio, receive descriptors over SCM_RIGHTS, or leave behind a parent that
// outlives it. Sandboxers still need all of that: a namespace-holding process
// per pod, and for every container process a parent that captures its exact
// exit status even after the daemon itself was killed and restarted. This
// helper is that parent. It is deliberately tiny (static, no allocation in the
// steady state) because one of it runs per pod and per container process.
//
//   kuasar-helper hold    --exit-file F [--netns P | --new-netns | --host-netns]
//                         [--hostname H] [--log L]
//       Makes new pid/ipc/uts/mount namespaces (joining netns P, a new one, or
//       the host's), forks the namespace init (PID 1 of the new pid namespace,
//       reaps orphans until SIGTERM/SIGINT/SIGKILL), prints "ready <init pid>"
//       and waits for it, then writes the exit record to F.
//
//   kuasar-helper monitor --exit-file F --pid-file P [--stdin S] [--stdout O]
//                         [--stderr E] [--console-socket C] [--control K]
//                         [--log L] -- <runtime argv...>
//       Becomes a child subreaper, runs the OCI runtime (runc create/exec
//       --detach, which writes pid file P) with the container's stdio, prints
//       "ready <pid>" (or "failed <wait status>"), then waits for that process.
//       With --console-socket it receives the pty master from the runtime and
//       copies stdin->pty->stdout; --control accepts "resize <w> <h>" and
//       "close-stdin" lines. The exit record is written atomically to F.
//
//   kuasar-helper notify READY=1 [MAINPID=N ...]
//       Sends an sd_notify datagram to $NOTIFY_SOCKET.
//
// Exit record: {"pid":N,"status":S,"exited_sec":T,"exited_nsec":U}; status is
// the exit code, or 128+signal for a killed process (the shell convention
// containerd uses).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define MAX_EARLY 64

static void die(const char *what) {
  dprintf(2, "kuasar-helper: %s: %s\n", what, strerror(errno));
  _exit(125);
}

static int status_code(int st) {
  if (WIFEXITED(st)) return WEXITSTATUS(st);
  if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
  return 255;
}

// write_exit_record stores the record under a temporary name and renames it
// into place, so a reader never sees a partial file.
static void write_exit_record(const char *path, pid_t pid, int status) {
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
static void detach_stdio(const char *log) {
  int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
  int out = log ? open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600) : -1;
  if (out < 0) out = nul;
  dup2(nul, 0);
  dup2(nul, 1);
  dup2(out, 2);
  if (out != nul) close(out);
  close(nul);
}

// close_inherited_fds drops every descriptor but stdio: the daemon's runtime
// does not mark all of its sockets close-on-exec, and a helper that outlives
// the daemon must not keep its listening socket (or anything else) alive.
static void close_inherited_fds(void) {
#ifdef SYS_close_range
  if (syscall(SYS_close_range, 3, ~0U, 0) == 0) return;
#endif
  for (int fd = 3; fd < 65536; fd++) close(fd);
}

static void report(const char *word, long value) {
  dprintf(1, "%s %ld\n", word, value);
}

// ---------------------------------------------------------------- hold

static void loopback_up(void) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return;
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  strcpy(ifr.ifr_name, "lo");
  if (ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    ioctl(s, SIOCSIFFLAGS, &ifr);
  }
  close(s);
}

// namespace_init is PID 1 of the pod's pid namespace: it only reaps. Signals
// stay blocked and are taken synchronously, which also counts as "handled"
// for the kernel's protection of a namespace init.
static void namespace_init(void) {
  sigset_t all;
  sigfillset(&all);
  sigprocmask(SIG_BLOCK, &all, NULL);
  detach_stdio(NULL);
  for (int fd = 3; fd < 1024; fd++) close(fd);
  for (;;) {
    siginfo_t si;
    int sig = sigwaitinfo(&all, &si);
    if (sig == SIGCHLD) {
      while (waitpid(-1, NULL, WNOHANG) > 0) {
      }
    } else if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP) {
      _exit(0);
    }
  }
}

static int cmd_hold(int argc, char **argv) {
  const char *exit_file = NULL, *netns = NULL, *hostname = NULL, *log = NULL;
  int new_netns = 0;
  for (int i = 0; i < argc; i++) {
    if (!strcmp(argv[i], "--exit-file") && i + 1 < argc) exit_file = argv[++i];
    else if (!strcmp(argv[i], "--netns") && i + 1 < argc) netns = argv[++i];
    else if (!strcmp(argv[i], "--hostname") && i + 1 < argc) hostname = argv[++i];
    else if (!strcmp(argv[i], "--log") && i + 1 < argc) log = argv[++i];
    else if (!strcmp(argv[i], "--new-netns")) new_netns = 1;
    else if (!strcmp(argv[i], "--host-netns")) new_netns = 0;
    else {
      dprintf(2, "kuasar-helper hold: unknown argument \"%s\"\n", argv[i]);
      return 2;
    }
  }
  if (!exit_file) {
    dprintf(2, "kuasar-helper hold: --exit-file is required\n");
    return 2;
  }
  setsid();
  if (netns) {
    int fd = open(netns, O_RDONLY | O_CLOEXEC);
    if (fd < 0) die("open netns");
    if (setns(fd, CLONE_NEWNET) < 0) die("setns net");
    close(fd);
  }
  int flags = CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNS;
  if (new_netns) flags |= CLONE_NEWNET;
  if (unshare(flags) < 0) die("unshare");
  // Keep mounts made inside the pod from propagating back to the host.
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) die("make / private");
  if (hostname && sethostname(hostname, strlen(hostname)) < 0) die("sethostname");
  if (new_netns) loopback_up();

  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, NULL);
  pid_t child = fork();
  if (child < 0) die("fork");
  if (child == 0) namespace_init();

  signal(SIGINT, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  signal(SIGPIPE, SIG_IGN);
  report("ready", child);
  detach_stdio(log);
  int st = 0;
  while (waitpid(child, &st, 0) < 0 && errno == EINTR) {
  }
  write_exit_record(exit_file, child, status_code(st));
  return 0;
}

// ---------------------------------------------------------------- monitor

static int listen_unix(const char *path) {
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  if (strlen(path) >= sizeof sa.sun_path) {
    errno = ENAMETOOLONG;
    return -1;
  }
  strcpy(sa.sun_path, path);
  unlink(path);
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (s < 0) return -1;
  if (bind(s, (struct sockaddr *)&sa, sizeof sa) < 0 || chmod(path, 0600) < 0 || listen(s, 4) < 0) {
    close(s);
    return -1;
  }
  return s;
}

static int recv_fd(int conn) {
  char data[1];
  char ctl[CMSG_SPACE(sizeof(int))];
  struct iovec iov = {data, sizeof data};
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = ctl;
  msg.msg_controllen = sizeof ctl;
  // runc sends the pty name as data: a larger buffer is not needed, the
  // descriptor arrives with the first byte.
  if (recvmsg(conn, &msg, MSG_CMSG_CLOEXEC) < 0) return -1;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      int fd;
      memcpy(&fd, CMSG_DATA(c), sizeof fd);
      return fd;
    }
  }
  errno = EBADMSG;
  return -1;
}

// strip_scheme accepts containerd's "file://" stdio URIs as plain paths.
static const char *strip_scheme(const char *p) {
  if (p && !strncmp(p, "file://", 7)) return p + 7;
  return p;
}

// open_output gives FIFOs O_RDWR, so the container never gets SIGPIPE or
// blocks on open while containerd (the reader) restarts; regular files are
// appended to.
static int open_output(const char *path) {
  path = strip_scheme(path);
  if (!path || !*path) return open("/dev/null", O_WRONLY | O_CLOEXEC);
  struct stat st;
  if (stat(path, &st) == 0 && S_ISFIFO(st.st_mode)) return open(path, O_RDWR | O_CLOEXEC);
  return open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
}

static void on_alarm(int sig) { (void)sig; }

// open_input opens the stdin FIFO for reading. A blocking open meets the
// writer containerd has already queued, so the first read cannot see a false
// EOF; the alarm bounds the wait when no writer ever comes.
static int open_input(const char *path, int nonblock) {
  path = strip_scheme(path);
  if (!path || !*path) return open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (nonblock) return open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  struct sigaction sa, old;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_alarm;
  sigaction(SIGALRM, &sa, &old);
  alarm(10);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  alarm(0);
  sigaction(SIGALRM, &old, NULL);
  if (fd < 0 && errno == EINTR) return open("/dev/null", O_RDONLY | O_CLOEXEC);
  return fd;
}

static long read_pid_file(const char *path) {
  char buf[32];
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = 0;
  return strtol(buf, NULL, 10);
}

static void write_all(int fd, const char *buf, ssize_t n) {
  while (n > 0) {
    ssize_t w = write(fd, buf, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return;
    }
    buf += w;
    n -= w;
  }
}

static void handle_control(int lsock, int *master, int *in_fd) {
  int c = accept4(lsock, NULL, NULL, SOCK_CLOEXEC);
  if (c < 0) return;
  struct pollfd p = {c, POLLIN, 0};
  char buf[128];
  ssize_t n = 0;
  if (poll(&p, 1, 1000) > 0) n = read(c, buf, sizeof buf - 1);
  if (n > 0) {
    buf[n] = 0;
    unsigned w, h;
    if (sscanf(buf, "resize %u %u", &w, &h) == 2 && *master >= 0) {
      struct winsize ws;
      memset(&ws, 0, sizeof ws);
      ws.ws_col = w;
      ws.ws_row = h;
      ioctl(*master, TIOCSWINSZ, &ws);
    } else if (!strncmp(buf, "close-stdin", 11) && *in_fd >= 0) {
      close(*in_fd);
      *in_fd = -1;
    }
    write_all(c, "ok\n", 3);
  }
  close(c);
}

static int cmd_monitor(int argc, char **argv) {
  const char *exit_file = NULL, *pid_file = NULL, *in = NULL, *out = NULL, *err = NULL;
  const char *console = NULL, *control = NULL, *log = NULL;
  int i = 0;
  for (; i < argc; i++) {
    if (!strcmp(argv[i], "--")) {
      i++;
      break;
    }
    if (i + 1 >= argc) break;
    if (!strcmp(argv[i], "--exit-file")) exit_file = argv[++i];
    else if (!strcmp(argv[i], "--pid-file")) pid_file = argv[++i];
    else if (!strcmp(argv[i], "--stdin")) in = argv[++i];
    else if (!strcmp(argv[i], "--stdout")) out = argv[++i];
    else if (!strcmp(argv[i], "--stderr")) err = argv[++i];
    else if (!strcmp(argv[i], "--console-socket")) console = argv[++i];
    else if (!strcmp(argv[i], "--control")) control = argv[++i];
    else if (!strcmp(argv[i], "--log")) log = argv[++i];
    else {
      dprintf(2, "kuasar-helper monitor: unknown argument \"%s\"\n", argv[i]);
      return 2;
    }
  }
  if (!exit_file || !pid_file || i >= argc) {
    dprintf(2, "kuasar-helper monitor: --exit-file, --pid-file and a command are required\n");
    return 2;
  }
  char **cmd = argv + i;
  setsid();
  if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0) die("set child subreaper");

  int terminal = console != NULL;
  int in_fd = open_input(in, terminal);
  int out_fd = open_output(out);
  int err_fd = terminal ? -1 : open_output(err);
  if (in_fd < 0 || out_fd < 0 || (!terminal && err_fd < 0)) die("open stdio");
  int console_sock = -1, control_sock = -1, master = -1;
  if (terminal && (console_sock = listen_unix(console)) < 0) die("listen console socket");
  if (control && (control_sock = listen_unix(control)) < 0) die("listen control socket");

  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, NULL);
  int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) die("signalfd");

  pid_t runtime = fork();
  if (runtime < 0) die("fork");
  if (runtime == 0) {
    sigprocmask(SIG_UNBLOCK, &chld, NULL);
    int nul = open("/dev/null", O_RDWR);
    dup2(terminal ? nul : in_fd, 0);
    dup2(terminal ? nul : out_fd, 1);
    dup2(terminal ? nul : err_fd, 2);
    execvp(cmd[0], cmd);
    dprintf(2, "kuasar-helper: exec %s: %s\n", cmd[0], strerror(errno));
    _exit(127);
  }
  // The container holds its own copies of non-terminal stdio now.
  if (!terminal) {
    close(in_fd);
    close(out_fd);
    close(err_fd);
    in_fd = out_fd = -1;
  }

  // Reap until the runtime exits, taking the pty master on the way. Processes
  // that exit before their pid is known are remembered by pid.
  pid_t early_pid[MAX_EARLY];
  int early_st[MAX_EARLY], early_n = 0, runtime_st = -1;
  while (runtime_st < 0) {
    struct pollfd p[2] = {{sfd, POLLIN, 0}, {console_sock, POLLIN, 0}};
    if (poll(p, console_sock >= 0 ? 2 : 1, -1) < 0 && errno != EINTR) die("poll");
    if (console_sock >= 0 && (p[1].revents & POLLIN)) {
      int c = accept4(console_sock, NULL, NULL, SOCK_CLOEXEC);
      if (c >= 0) {
        fcntl(c, F_SETFL, 0);
        master = recv_fd(c);
        close(c);
      }
      if (master >= 0) {
        close(console_sock);
        console_sock = -1;
        unlink(console);
      }
    }
    struct signalfd_siginfo si;
    while (read(sfd, &si, sizeof si) > 0) {
    }
    int st;
    pid_t w;
    while ((w = waitpid(-1, &st, WNOHANG)) > 0) {
      if (w == runtime) runtime_st = st;
      else if (early_n < MAX_EARLY) {
        early_pid[early_n] = w;
        early_st[early_n++] = st;
      }
    }
  }
  if (console_sock >= 0) {
    close(console_sock);
    unlink(console);
  }
  long pid = read_pid_file(pid_file);
  if (runtime_st != 0 || pid <= 0 || (terminal && master < 0)) {
    report("failed", runtime_st != 0 ? status_code(runtime_st) : 255);
    if (control) unlink(control);
    return 1;
  }
  report("ready", pid);
  detach_stdio(log);

  int done = 0, status = 0;
  for (int k = 0; k < early_n; k++) {
    if (early_pid[k] == pid) {
      done = 1;
      status = status_code(early_st[k]);
    }
  }
  char buf[16384];
  while (!done) {
    struct pollfd p[4];
    int n = 0;
    p[n++] = (struct pollfd){sfd, POLLIN, 0};
    int ic = -1, im = -1, ii = -1;
    if (control_sock >= 0) { ic = n; p[n++] = (struct pollfd){control_sock, POLLIN, 0}; }
    if (master >= 0) { im = n; p[n++] = (struct pollfd){master, POLLIN, 0}; }
    if (in_fd >= 0 && master >= 0) { ii = n; p[n++] = (struct pollfd){in_fd, POLLIN, 0}; }
    if (poll(p, n, -1) < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    if (ic >= 0 && (p[ic].revents & POLLIN)) handle_control(control_sock, &master, &in_fd);
    if (im >= 0 && p[im].revents) {
      ssize_t r = read(master, buf, sizeof buf);
      if (r > 0) write_all(out_fd, buf, r);
      else if (r < 0 && errno != EAGAIN && errno != EINTR) {
        close(master);  // EIO: every slave is closed
        master = -1;
      }
    }
    if (ii >= 0 && p[ii].revents) {
      ssize_t r = read(in_fd, buf, sizeof buf);
      if (r > 0) write_all(master, buf, r);
      else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
        close(in_fd);
        in_fd = -1;
      }
    }
    if (p[0].revents & POLLIN) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) > 0) {
      }
      int st;
      pid_t w;
      while ((w = waitpid(-1, &st, WNOHANG)) > 0) {
        if (w == pid) {
          done = 1;
          status = status_code(st);
        }
      }
    }
  }
  // Drain what the pty still holds after the process exited.
  if (master >= 0) {
    fcntl(master, F_SETFL, O_NONBLOCK);
    ssize_t r;
    while ((r = read(master, buf, sizeof buf)) > 0) write_all(out_fd, buf, r);
  }
  write_exit_record(exit_file, pid, status);
  if (control) unlink(control);
  return 0;
}

// ---------------------------------------------------------------- notify

// cmd_notify sends one sd_notify datagram ("READY=1", "WATCHDOG=1"...) to
// $NOTIFY_SOCKET, abstract ("@...") or a path. The unit needs
// NotifyAccess=all because the sender is this helper, not the daemon; the
// daemon passes MAINPID= so systemd still tracks the right process.
static int cmd_notify(int argc, char **argv) {
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

int main(int argc, char **argv) {
  close_inherited_fds();
  if (argc >= 2 && !strcmp(argv[1], "hold")) return cmd_hold(argc - 2, argv + 2);
  if (argc >= 2 && !strcmp(argv[1], "monitor")) return cmd_monitor(argc - 2, argv + 2);
  if (argc >= 2 && !strcmp(argv[1], "notify")) return cmd_notify(argc - 2, argv + 2);
  if (argc >= 2 && !strcmp(argv[1], "version")) {
    dprintf(1, "kuasar-helper 1\n");
    return 0;
  }
  dprintf(2, "usage: kuasar-helper hold|monitor|notify|version ...\n");
  return 2;
}
