// monitor: the parent of one container process (init or exec).
//
// Leaves the daemon (leave_parent: "pid <own pid>"), becomes a child
// subreaper, runs the OCI runtime (runc create / exec --detach, which writes
// the pid file) with the container's stdio, prints
// "ready <pid>" (or "failed <status>"), then waits for that process and
// writes its exit record. Without --pid-file the command is the process
// itself (a Wasm engine's CLI, say): it is reported ready once started. Stdio is either
//   - a path (FIFO or file) handed straight to the container, so the daemon
//     stays out of the data path (containerd's default FIFO IO), or
//   - "@stream": a pipe the monitor owns and serves on --io-socket, framed as
//     [tag u8][length u32 BE][data] with tag 0 stdin (daemon → monitor),
//     1 stdout, 2 stderr, and length 0 meaning end of that stream. Output is
//     kept until the daemon acknowledges it (tag 3 for stdout, 4 for stderr,
//     data a u32 BE count of bytes newly passed on to the reader), so what a
//     daemon killed mid-stream had received but not passed on is sent again
//     to the next one: nothing is lost. At most IO_WINDOW bytes of each
//     stream are unacknowledged, so an unread stream never holds up the other
//     on the shared socket. The monitor lingers after the exit until its
//     output is acknowledged. Stdin is acknowledged the other way (tag 0
//     from the monitor, a u32 BE count of bytes passed on to the process),
//     so the daemon's unacknowledged stdin is bounded and the socket is
//     always read: acknowledgements never wait behind stdin the process
//     does not take.
// With --console-socket it receives the pty master from the runtime and
// copies between it and the stdio; --control takes "resize <w> <h>" and
// "close-stdin" lines.
#include "helper.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#define MAX_EARLY 64
#define OUT_LIMIT (1 << 20)    // buffered output per stream before the container is made to wait
#define IO_WINDOW (256 << 10)  // unacknowledged output per stream on the io socket
#define IO_FRAME (32 << 10)    // largest output frame payload
#define STDIN_ACK 5            // cur_tag of a stdin acknowledgement (sent with tag 0)
#define DRAIN_MS 2000          // how long output may trail the process exit
#define LINGER_MS 60000        // how long undelivered output waits for a daemon

static const char STREAM[] = "@stream";

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
  // runc sends the pty name as data; the descriptor arrives with the first byte.
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
// blocks on open while containerd (the reader) restarts; files are appended to.
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

static int is_stream(const char *p) { return p && !strcmp(p, STREAM); }

// Output of one stream (tag 1 or 2) on its way to the daemon.
struct outq {
  struct buf b;               // bytes from off on: read from the process, not yet acknowledged
  size_t off;
  size_t sent;                // of those, bytes sent on the current connection
  int ended;                  // the process's side ended: an end frame follows the data
  int end_sent;               // that end frame was sent on the current connection
};

// The monitor's state after the runtime has run.
struct mon {
  int master;                 // pty master, or -1
  int out_fd;                 // terminal output to a path (FIFO/file), or -1
  int src[3];                 // fds read for stdin (FIFO) / stdout / stderr (pipes or master), -1 if none
  int src_open[3];            // tag whose stream has not ended yet
  int stdin_fifo;             // terminal stdin from a FIFO (read and copied to the master)
  int in_w;                   // where stdin data goes: pipe write end or the master, -1 if none
  int in_closing;             // close in_w once inq drains
  struct buf inq;             // stdin bytes waiting for in_w
  struct outq out[3];         // output of tags 1 and 2 not yet acknowledged
  uint32_t in_ack;            // stdin bytes from the io socket passed on, not yet acknowledged
  unsigned char ack_frame[9]; // the stdin acknowledgement being sent
  int cur_tag;                // tag of the frame being sent (0: none; STDIN_ACK: ack_frame)
  uint32_t cur_len;           // its payload length (0: an end frame)
  size_t head_sent;           // bytes of that frame already sent
  int next_tag;               // which stream goes first next (round robin)
  int io_listen, io_client;   // io socket
  struct buf ioin;            // partial frame from the io client
  int streamed[3];            // which stdio go through the io socket
};

static size_t q_len(const struct outq *q) { return q->b.len - q->off; }

// q_drop forgets the first n acknowledged bytes; the buffer is compacted
// only when the dead head is large, so each byte is moved about once.
static void q_drop(struct outq *q, size_t n) {
  q->off += n;
  if (q->off >= q->b.len) {
    buf_consume(&q->b, q->b.len);  // gives a large buffer back
    q->off = 0;
  } else if (q->off > 65536 && q->off * 2 > q->b.len) {
    buf_consume(&q->b, q->off);
    q->off = 0;
  }
}

// A new (or no) io connection: nothing is in flight on it. Unacknowledged
// output is sent again from its start, and each end frame once more. The
// daemon that gets it may already have passed on what it had received but
// not acknowledged (killed between the two): at most that is duplicated.
static void io_reset(struct mon *m) {
  m->cur_tag = 0;
  m->in_ack = 0;  // the next daemon starts with an empty stdin window
  m->head_sent = 0;
  for (int t = 1; t < 3; t++) {
    m->out[t].sent = 0;
    m->out[t].end_sent = 0;
  }
  buf_free(&m->ioin);
}

static void io_drop(struct mon *m) {
  close(m->io_client);
  m->io_client = -1;
  io_reset(m);
}

// next_frame picks the next frame to send: data of a stream within its
// window, or its end once all of it was sent. Streams take turns.
static int next_frame(struct mon *m) {
  if (m->in_ack) {
    uint32_t a = m->in_ack;
    unsigned char f[9] = {0, 0, 0, 0, 4, a >> 24, a >> 16, a >> 8, a};
    memcpy(m->ack_frame, f, sizeof f);
    m->in_ack = 0;
    m->cur_tag = STDIN_ACK;
    m->head_sent = 0;
    return 1;
  }
  for (int k = 0; k < 2; k++) {
    int t = k == 0 ? m->next_tag : 3 - m->next_tag;
    struct outq *q = &m->out[t];
    size_t avail = q_len(q) - q->sent;
    if (avail && q->sent < IO_WINDOW) {
      size_t n = IO_WINDOW - q->sent;
      if (n > avail) n = avail;
      if (n > IO_FRAME) n = IO_FRAME;
      m->cur_tag = t;
      m->cur_len = (uint32_t)n;
    } else if (!avail && q->ended && !q->end_sent) {
      m->cur_tag = t;
      m->cur_len = 0;
    } else {
      continue;
    }
    m->head_sent = 0;
    m->next_tag = 3 - t;
    return 1;
  }
  return 0;
}

// out_ready: there is a frame to send (or one half sent).
static int out_ready(struct mon *m) {
  if (m->cur_tag || m->in_ack) return 1;
  for (int t = 1; t < 3; t++) {
    struct outq *q = &m->out[t];
    size_t avail = q_len(q) - q->sent;
    if ((avail && q->sent < IO_WINDOW) || (!avail && q->ended && !q->end_sent)) return 1;
  }
  return 0;
}

// flush_out sends frames to the io client. A frame is never split across
// connections: one left half sent is dropped with its connection, and its
// bytes (not acknowledged) go again from a frame start on the next.
static void flush_out(struct mon *m) {
  while (m->io_client >= 0 && (m->cur_tag || next_frame(m))) {
    if (m->cur_tag == STDIN_ACK) {
      ssize_t w = send(m->io_client, m->ack_frame + m->head_sent, sizeof m->ack_frame - m->head_sent,
                       MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w < 0) {
        if (errno == EAGAIN || errno == EINTR) return;
        io_drop(m);
        return;
      }
      m->head_sent += (size_t)w;
      if (m->head_sent < sizeof m->ack_frame) return;
      m->cur_tag = 0;
      m->head_sent = 0;
      continue;
    }
    struct outq *q = &m->out[m->cur_tag];
    uint32_t n = m->cur_len;
    unsigned char h[5] = {(unsigned char)m->cur_tag, n >> 24, n >> 16, n >> 8, n};
    size_t flen = 5 + (size_t)n;
    struct iovec iov[2];
    int niov = 0;
    if (m->head_sent < 5) iov[niov++] = (struct iovec){h + m->head_sent, 5 - m->head_sent};
    size_t doff = m->head_sent < 5 ? 0 : m->head_sent - 5;
    if (n) iov[niov++] = (struct iovec){q->b.p + q->off + q->sent + doff, n - doff};
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = iov;
    msg.msg_iovlen = (size_t)niov;
    ssize_t w = sendmsg(m->io_client, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
      if (errno == EAGAIN || errno == EINTR) return;
      io_drop(m);
      return;
    }
    m->head_sent += (size_t)w;
    if (m->head_sent < flen) return;
    if (n) q->sent += n;
    else q->end_sent = 1;
    m->cur_tag = 0;
    m->head_sent = 0;
  }
}

// on_ack: the daemon passed n more bytes of stream t on to its reader.
static void on_ack(struct mon *m, int t, uint32_t n) {
  struct outq *q = &m->out[t];
  if (n > q->sent) n = (uint32_t)q->sent;  // only whole frames sent on this connection
  q_drop(q, n);
  q->sent -= n;
}

// stdin_done: n stdin bytes were passed on (or let go): the daemon may send more.
static void stdin_done(struct mon *m, size_t n) {
  if (m->streamed[0] && m->io_client >= 0) m->in_ack += (uint32_t)n;
}

static void flush_in(struct mon *m) {
  while (m->in_w >= 0 && m->inq.len) {
    ssize_t w = write(m->in_w, m->inq.p, m->inq.len);
    if (w < 0) {
      if (errno == EAGAIN || errno == EINTR) return;
      stdin_done(m, m->inq.len);
      m->inq.len = 0;  // the reader is gone
      break;
    }
    stdin_done(m, (size_t)w);
    buf_consume(&m->inq, (size_t)w);
  }
  if (m->in_w >= 0 && m->in_closing && !m->inq.len && m->in_w != m->master) {
    close(m->in_w);
    m->in_w = -1;
  }
}

// io_read takes stdin frames from the io client.
static void io_read(struct mon *m) {
  char tmp[32768];
  ssize_t r = read(m->io_client, tmp, sizeof tmp);
  if (r <= 0) {
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
    io_drop(m);
    return;
  }
  buf_append(&m->ioin, tmp, (size_t)r);
  while (m->ioin.len >= 5) {
    unsigned char *h = (unsigned char *)m->ioin.p;
    uint32_t n = (uint32_t)h[1] << 24 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 8 | h[4];
    if (m->ioin.len < 5 + (size_t)n) break;
    if (h[0] == 0 && m->streamed[0]) {
      if (n && m->in_w >= 0) buf_append(&m->inq, m->ioin.p + 5, n);
      else if (n) stdin_done(m, n);  // nowhere to go: let go
      else m->in_closing = 1;
    } else if ((h[0] == 3 || h[0] == 4) && n == 4) {
      unsigned char *a = (unsigned char *)m->ioin.p + 5;
      on_ack(m, h[0] - 2, (uint32_t)a[0] << 24 | (uint32_t)a[1] << 16 | (uint32_t)a[2] << 8 | a[3]);
    }
    buf_consume(&m->ioin, 5 + n);
  }
  flush_in(m);
  flush_out(m);  // acknowledgements open the window
}

static void handle_control(int lsock, struct mon *m) {
  int c = accept4(lsock, NULL, NULL, SOCK_CLOEXEC);
  if (c < 0) return;
  struct pollfd p = {c, POLLIN, 0};
  char buf[128];
  ssize_t n = 0;
  if (poll(&p, 1, 1000) > 0) n = read(c, buf, sizeof buf - 1);
  if (n > 0) {
    buf[n] = 0;
    unsigned w, h;
    if (sscanf(buf, "resize %u %u", &w, &h) == 2 && m->master >= 0) {
      struct winsize ws;
      memset(&ws, 0, sizeof ws);
      ws.ws_col = w;
      ws.ws_row = h;
      ioctl(m->master, TIOCSWINSZ, &ws);
    } else if (!strncmp(buf, "close-stdin", 11)) {
      if (m->stdin_fifo >= 0) {
        close(m->stdin_fifo);
        m->stdin_fifo = m->src[0] = -1;
      }
      if (m->streamed[0]) m->in_closing = 1;
      flush_in(m);
    }
    write_all(c, "ok\n", 3);
  }
  close(c);
}

// pump reads one source: output goes to the io queue or the output path.
static void pump(struct mon *m, int tag) {
  char buf[32768];
  ssize_t r = read(m->src[tag], buf, sizeof buf);
  if (r > 0) {
    if (tag == 0) {  // terminal stdin from a FIFO
      buf_append(&m->inq, buf, (size_t)r);
      flush_in(m);
    } else if (m->streamed[tag]) {
      buf_append(&m->out[tag].b, buf, (size_t)r);
      flush_out(m);
    } else {
      write_all(m->out_fd, buf, (size_t)r);
    }
    return;
  }
  if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
  // EOF, or EIO on a master whose every slave is closed.
  if (tag == 0) {  // the stdin FIFO's writer went away
    close(m->src[0]);
    m->src[0] = m->stdin_fifo = -1;
    return;
  }
  if (m->src[tag] == m->master) {
    close(m->master);
    if (m->in_w == m->master) m->in_w = -1;
    m->master = -1;
  } else {
    close(m->src[tag]);
  }
  m->src[tag] = -1;
  if (m->src_open[tag] && m->streamed[tag]) m->out[tag].ended = 1;
  m->src_open[tag] = 0;
  flush_out(m);
}

// start_waiter runs the wait command (every "{pid}" argument replaced by the
// process's pid) with its stdout on a pipe returned in *out.
static pid_t start_waiter(char **cmd, long pid, int *out) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0) die("pipe");
  char pidstr[24];
  snprintf(pidstr, sizeof pidstr, "%ld", pid);
  pid_t w = fork();
  if (w < 0) die("fork");
  if (w == 0) {
    // Replaced in the child's copy only: the parent's cmd keeps its "{pid}"
    // marks for a later waiter, and pidstr lives until the exec.
    for (char **a = cmd; *a; a++) {
      if (!strcmp(*a, "{pid}")) *a = pidstr;
    }
    int nul = open("/dev/null", O_RDWR);
    dup2(nul, 0);
    dup2(p[1], 1);
    dup2(p[1], 2);
    signal(SIGPIPE, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execvp(cmd[0], cmd);
    _exit(127);
  }
  close(p[1]);
  set_nonblock(p[0]);
  *out = p[0];
  return w;
}

// read_some appends what is readable; returns 0 at end of file or error.
static int read_some(int fd, struct buf *b) {
  char tmp[1024];
  ssize_t n = read(fd, tmp, sizeof tmp);
  if (n > 0) {
    if (b->len < 65536) buf_append(b, tmp, (size_t)n);
    return 1;
  }
  return n < 0 && errno == EAGAIN;
}

// waited_status is the "exitStatus" the waiter printed, or 255 when it
// printed none (the waiter failed: the status is unknown).
static int waited_status(struct buf *b, int waiter_status) {
  buf_append(b, "", 1);
  const char *k = strstr(b->p, "\"exitStatus\":");
  if (!k) {
    (void)waiter_status;
    return 255;
  }
  long v = strtol(k + 13, NULL, 10);
  return v < 0 || v > 255 ? 255 : (int)v;
}

#define MAX_ROOTFS_MOUNTS 8

// The monitor's command line.
struct opts {
  const char *exit_file, *pid_file, *in, *out, *err;
  const char *console, *control, *iosock, *log;
  // Waiter mode: "--wait N <N args>". For runtimes whose container processes
  // are not host processes (gVisor), the exit comes from a waiter command that
  // prints {"exitStatus":N} when the container ends. Counted, so the runtime
  // command after "--" may hold any argument ("--" of nsenter included).
  char **wait_cmd;
  // cgroup.procs files the command starts in (a VM pod's QEMU): joined by the
  // monitor before it forks, so all the command allocates is charged there.
  const char *cgroups[16];
  int ncgroups;
  // "--rootfs-mount TARGET SOURCE FSTYPE FLAGS DATA": mounts made, in order, in
  // a mount namespace of the runtime's own before it runs (see
  // enter_rootfs_ns); a failure is written to --runtime-log in runc's JSON form.
  // Kept as the first TARGET's place in argv (the groups follow one another,
  // 6 arguments each): every container's monitor keeps this frame for its life.
  char **mounts;
  int nmounts;
  const char *runtime_log;
  char **cmd;  // the runtime command (or, without --pid-file, the process)
};

// parse_args fills o; returns 0, or the exit code of a usage error.
static int parse_args(int argc, char **argv, struct opts *o) {
  memset(o, 0, sizeof *o);
  int i = 0;
  for (; i < argc; i++) {
    if (!strcmp(argv[i], "--")) {
      i++;
      break;
    }
    if (i + 1 >= argc) break;
    if (!strcmp(argv[i], "--exit-file")) o->exit_file = argv[++i];
    else if (!strcmp(argv[i], "--pid-file")) o->pid_file = argv[++i];
    else if (!strcmp(argv[i], "--stdin")) o->in = argv[++i];
    else if (!strcmp(argv[i], "--stdout")) o->out = argv[++i];
    else if (!strcmp(argv[i], "--stderr")) o->err = argv[++i];
    else if (!strcmp(argv[i], "--console-socket")) o->console = argv[++i];
    else if (!strcmp(argv[i], "--control")) o->control = argv[++i];
    else if (!strcmp(argv[i], "--io-socket")) o->iosock = argv[++i];
    else if (!strcmp(argv[i], "--log")) o->log = argv[++i];
    else if (!strcmp(argv[i], "--runtime-log")) o->runtime_log = argv[++i];
    else if (!strcmp(argv[i], "--rootfs-mount")) {
      if (o->nmounts == MAX_ROOTFS_MOUNTS || i + 5 >= argc) {
        dprintf(2, "kuasar-helper monitor: --rootfs-mount needs 5 arguments (at most 8 mounts)\n");
        return 2;
      }
      if (!o->mounts) o->mounts = argv + i + 1;
      if (argv + i + 1 != o->mounts + 6 * o->nmounts) {
        dprintf(2, "kuasar-helper monitor: --rootfs-mount groups must follow one another\n");
        return 2;
      }
      o->nmounts++;
      i += 5;
    } else if (!strcmp(argv[i], "--cgroup")) {
      if (o->ncgroups == (int)(sizeof o->cgroups / sizeof *o->cgroups)) {
        dprintf(2, "kuasar-helper monitor: too many --cgroup\n");
        return 2;
      }
      o->cgroups[o->ncgroups++] = argv[++i];
    } else if (!strcmp(argv[i], "--wait")) {
      int n = atoi(argv[++i]);
      if (n < 1 || i + n >= argc) {
        dprintf(2, "kuasar-helper monitor: --wait needs a count and that many arguments\n");
        return 2;
      }
      o->wait_cmd = calloc((size_t)n + 1, sizeof *o->wait_cmd);
      if (!o->wait_cmd) die("out of memory");
      for (int k = 0; k < n; k++) o->wait_cmd[k] = argv[i + 1 + k];
      i += n;
    } else {
      dprintf(2, "kuasar-helper monitor: unknown argument \"%s\"\n", argv[i]);
      return 2;
    }
  }
  if (!o->exit_file || i >= argc) {
    dprintf(2, "kuasar-helper monitor: --exit-file and a command are required\n");
    return 2;
  }
  if ((is_stream(o->in) || is_stream(o->out) || is_stream(o->err)) && !o->iosock) {
    dprintf(2, "kuasar-helper monitor: @stream stdio needs --io-socket\n");
    return 2;
  }
  o->cmd = argv + i;
  return 0;
}

// join_cgroups moves the monitor into each --cgroup; returns 0, or 1 when one
// cannot be joined.
static int join_cgroups(const struct opts *o) {
  for (int k = 0; k < o->ncgroups; k++) {
    int fd = open(o->cgroups[k], O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, "0\n", 2) != 2) {
      dprintf(2, "kuasar-helper monitor: cannot join cgroup %s: %s\n", o->cgroups[k], strerror(errno));
      return 1;
    }
    close(fd);
  }
  return 0;
}

// mon_init: nothing open yet; which stdio go through the io socket.
static void mon_init(struct mon *m, const struct opts *o) {
  memset(m, 0, sizeof *m);
  m->next_tag = 1;
  m->streamed[0] = is_stream(o->in);
  m->streamed[1] = is_stream(o->out);
  m->streamed[2] = is_stream(o->err);
  m->master = m->out_fd = m->stdin_fifo = m->in_w = m->io_listen = m->io_client = -1;
  for (int t = 0; t < 3; t++) m->src[t] = -1;
}

// setup_terminal_stdio: the container's stdio is the pty (the runtime gets
// /dev/null); the monitor copies between its master and the stdio paths.
static void setup_terminal_stdio(struct mon *m, const struct opts *o, int child_fd[3], int nul) {
  if (m->streamed[0]) {
    // stdin frames are copied to the master once it arrives
  } else if (o->in && *o->in) {
    m->stdin_fifo = open_input(o->in, 1);
  }
  if (!m->streamed[1]) m->out_fd = open_output(o->out);
  for (int t = 0; t < 3; t++) child_fd[t] = nul;
}

// setup_pipe_stdio: a path is handed to the container as it is; a @stream
// stdio is a pipe whose other end the monitor serves on the io socket.
static void setup_pipe_stdio(struct mon *m, const struct opts *o, int child_fd[3]) {
  int p[2];
  if (m->streamed[0]) {
    if (pipe2(p, O_CLOEXEC) < 0) die("pipe");
    child_fd[0] = p[0];
    m->in_w = p[1];
    set_nonblock(m->in_w);
  } else {
    child_fd[0] = open_input(o->in, 0);
  }
  const char *paths[3] = {NULL, o->out, o->err};
  for (int t = 1; t < 3; t++) {
    if (m->streamed[t]) {
      if (pipe2(p, O_CLOEXEC) < 0) die("pipe");
      child_fd[t] = p[1];
      m->src[t] = p[0];
      m->src_open[t] = 1;
      set_nonblock(p[0]);
    } else {
      child_fd[t] = open_output(paths[t]);
    }
  }
}

// sigchld_fd blocks SIGCHLD and returns a signalfd for it, so children's
// exits are polled for with everything else.
static int sigchld_fd(sigset_t *chld) {
  sigemptyset(chld);
  sigaddset(chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, chld, NULL);
  int sfd = signalfd(-1, chld, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) die("signalfd");
  return sfd;
}

// json_string writes s to fd as the inside of a JSON string.
static void json_string(int fd, const char *s) {
  for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
    if (*c == '"' || *c == '\\') dprintf(fd, "\\%c", *c);
    else if (*c < 0x20) dprintf(fd, "\\u%04x", *c);
    else dprintf(fd, "%c", *c);
  }
}

// runtime_failed appends {"level":"error","msg":"<what> <path>[ on <target>]: <errno>"}
// to the runtime's log (where the daemon looks for why a runtime failed) and
// ends the child.
static void runtime_failed(const struct opts *o, const char *what, const char *path,
                           const char *target) {
  const char *why = strerror(errno);
  if (o->runtime_log) {
    int fd = open(o->runtime_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd >= 0) {
      dprintf(fd, "{\"level\":\"error\",\"msg\":\"%s ", what);
      json_string(fd, path);
      if (target) {
        dprintf(fd, " on ");
        json_string(fd, target);
      }
      dprintf(fd, ": %s\"}\n", why);
      close(fd);
    }
  }
  _exit(1);
}

// containing_mount writes to mp the mount point under which path lies (the
// longest of /proc/self/mountinfo's at a path boundary); 0 when found.
static int containing_mount(const char *path, char *mp, size_t size) {
  FILE *f = fopen("/proc/self/mountinfo", "re");
  if (!f) return -1;
  char *line = NULL, point[PATH_MAX];
  size_t cap = 0, best = 0;
  while (getline(&line, &cap, f) > 0) {
    // "ID PARENT MAJ:MIN ROOT MOUNTPOINT ...": the fifth field, octal escapes undone.
    char *p = line;
    for (int field = 0; field < 4 && p; field++) p = strchr(p, ' '), p = p ? p + 1 : NULL;
    if (!p) continue;
    size_t n = 0;
    for (; *p && *p != ' ' && n + 1 < sizeof point; p++) {
      if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] && p[3]) {
        point[n++] = (char)(((p[1] - '0') << 6) | ((p[2] - '0') << 3) | (p[3] - '0'));
        p += 3;
      } else {
        point[n++] = *p;
      }
    }
    point[n] = 0;
    if (*p && *p != ' ') continue;  // longer than PATH_MAX: not a prefix of a real path
    int under = !strcmp(point, "/") ||
                (!strncmp(path, point, n) && (path[n] == '/' || path[n] == 0));
    if (under && n >= best && n < size) {
      best = n;
      memcpy(mp, point, n + 1);
    }
  }
  free(line);
  fclose(f);
  return best ? 0 : -1;
}

// enter_rootfs_ns gives the child a mount namespace of its own and makes the
// rootfs mounts in it. Only the mount holding the rootfs directory becomes a
// slave there (receives from the node's, sends nothing back), so the rootfs
// reaches no other namespace; every other mount keeps its propagation, so a
// container's rshared volume (Bidirectional in Kubernetes) still reaches the node.
// Not inlined: its path buffers (12 KiB) would then deepen the frame of the
// monitor's main loop, whose stack would touch three more pages for its life.
__attribute__((noinline)) static void enter_rootfs_ns(const struct opts *o) {
  if (!o->nmounts) return;
  const char *target = o->mounts[0];
  char real[PATH_MAX], mp[PATH_MAX];
  if (!realpath(target, real)) runtime_failed(o, "resolve", target, NULL);
  if (unshare(CLONE_NEWNS) < 0) runtime_failed(o, "unshare mount namespace for", target, NULL);
  if (containing_mount(real, mp, sizeof mp) < 0) {
    errno = ENOENT;
    runtime_failed(o, "find the mount holding", real, NULL);
  }
  if (mount(NULL, mp, NULL, MS_SLAVE, NULL) < 0) runtime_failed(o, "make slave", mp, NULL);
  for (int k = 0; k < o->nmounts; k++) {
    char **m = o->mounts + 6 * k;  // TARGET SOURCE FSTYPE FLAGS DATA
    unsigned long flags = strtoul(m[3], NULL, 10);
    if (mount(m[1], m[0], m[2], flags, m[4]) < 0) runtime_failed(o, "mount rootfs", m[1], m[0]);
    // The kernel ignores MS_RDONLY on a first bind: a read-only bind is a remount (as mount(8) does).
    if ((flags & MS_BIND) && (flags & MS_RDONLY) &&
        mount(NULL, m[0], NULL, flags | MS_REMOUNT, NULL) < 0) {
      runtime_failed(o, "remount read-only", m[0], NULL);
    }
  }
}

// start_runtime forks and execs the command with child_fd as its fds 0-2
// (after its rootfs mounts, if any), then closes the monitor's copies of them.
static pid_t start_runtime(const struct opts *o, const int child_fd[3], int nul,
                           const sigset_t *chld) {
  char **cmd = o->cmd;
  pid_t runtime = fork();
  if (runtime < 0) die("fork");
  if (runtime == 0) {
    sigprocmask(SIG_UNBLOCK, chld, NULL);
    signal(SIGPIPE, SIG_DFL);
    for (int t = 0; t < 3; t++) dup2(child_fd[t], t);
    enter_rootfs_ns(o);
    execvp(cmd[0], cmd);
    dprintf(2, "kuasar-helper: exec %s: %s\n", cmd[0], strerror(errno));
    _exit(127);
  }
  // The container holds its own copies of its stdio now.
  for (int t = 0; t < 3; t++) {
    if (child_fd[t] != nul) close(child_fd[t]);
  }
  close(nul);
  return runtime;
}

// Children reaped before the process's pid was known, by pid.
struct early {
  pid_t pid[MAX_EARLY];
  int st[MAX_EARLY];
  int n;
};

static void drain_signals(int sfd) {
  struct signalfd_siginfo si;
  while (read(sfd, &si, sizeof si) > 0) {
  }
}

// take_master accepts the runtime's connection on the console socket and
// receives the pty master; once it has, the socket is closed (-1).
static void take_master(struct mon *m, const char *console, int *console_sock) {
  int c = accept4(*console_sock, NULL, NULL, SOCK_CLOEXEC);
  if (c >= 0) {
    m->master = recv_fd(c);
    close(c);
  }
  if (m->master >= 0) {
    close(*console_sock);
    *console_sock = -1;
    unlink(console);
  }
}

// await_runtime reaps until the runtime exits, taking the pty master on the
// way, and returns its wait status. Processes that exit before their pid is
// known are remembered in e. In direct mode (no pid file) the command is the
// process: nothing to wait for. The console socket is closed on return.
static int await_runtime(struct mon *m, const struct opts *o, int sfd, pid_t runtime, int console_sock,
                         struct early *e) {
  int runtime_st = o->pid_file ? -1 : 0;
  while (runtime_st < 0) {
    struct pollfd p[2] = {{sfd, POLLIN, 0}, {console_sock, POLLIN, 0}};
    if (poll(p, console_sock >= 0 ? 2 : 1, -1) < 0 && errno != EINTR) die("poll");
    if (console_sock >= 0 && (p[1].revents & POLLIN)) take_master(m, o->console, &console_sock);
    drain_signals(sfd);
    int st;
    pid_t w;
    while ((w = waitpid(-1, &st, WNOHANG)) > 0) {
      if (w == runtime) runtime_st = st;
      else if (e->n < MAX_EARLY) {
        e->pid[e->n] = w;
        e->st[e->n++] = st;
      }
    }
  }
  if (console_sock >= 0) {
    close(console_sock);
    unlink(o->console);
  }
  return runtime_st;
}

// adopt_master: with a terminal, the master is the output and, when there is
// stdin, where it goes.
static void adopt_master(struct mon *m) {
  set_nonblock(m->master);
  m->src[1] = m->master;
  m->src_open[1] = 1;
  m->in_w = (m->streamed[0] || m->stdin_fifo >= 0) ? m->master : -1;
  m->src[0] = m->stdin_fifo;
}

static void unlink_sockets(const struct opts *o) {
  if (o->control) unlink(o->control);
  if (o->iosock) unlink(o->iosock);
}

// How the process's exit is learnt (waitpid, or a waiter command) and recorded.
struct exitw {
  const char *exit_file;
  char **wait_cmd;
  long pid;
  pid_t waiter;         // the waiter running, or -1
  int wait_out;         // its output, or -1
  struct buf wbuf;      // what it printed
  int done;             // the exit record is written
  long long exited_at;  // since when output may trail the exit
};

static void record_exit(struct exitw *x, int status) {
  x->done = 1;
  x->exited_at = now_ms();
  write_exit_record(x->exit_file, x->pid, status);
}

// start_exit_watch starts the waiter, or records an exit reaped already.
static void start_exit_watch(struct exitw *x, const struct early *e) {
  if (x->wait_cmd) {
    x->waiter = start_waiter(x->wait_cmd, x->pid, &x->wait_out);
    return;
  }
  int found = 0, status = 0;
  for (int k = 0; k < e->n; k++) {
    if (e->pid[k] == x->pid) {
      found = 1;
      status = status_code(e->st[k]);
    }
  }
  if (found) record_exit(x, status);
}

// waiter_exited takes the status the waiter printed before it ended (wait
// status st).
static void waiter_exited(struct exitw *x, int st) {
  if (x->wait_out >= 0) {
    while (read_some(x->wait_out, &x->wbuf)) {
    }
    close(x->wait_out);
    x->wait_out = -1;
  }
  // A created container cannot be waited for until it is started: ask
  // again until it is (or the answer is something else).
  buf_append(&x->wbuf, "", 1);
  if (!strstr(x->wbuf.p, "\"exitStatus\":") && strstr(x->wbuf.p, "not started")) {
    buf_free(&x->wbuf);
    usleep(100 * 1000);
    x->waiter = start_waiter(x->wait_cmd, x->pid, &x->wait_out);
    return;
  }
  record_exit(x, waited_status(&x->wbuf, st));
}

// reap collects exited children; the process's (or its waiter's) exit is
// recorded.
static void reap(struct exitw *x, int sfd) {
  drain_signals(sfd);
  int st;
  pid_t w;
  while ((w = waitpid(-1, &st, WNOHANG)) > 0) {
    if (w == x->waiter && !x->done) waiter_exited(x, st);
    else if (w == x->pid && !x->done && !x->wait_cmd) record_exit(x, status_code(st));
  }
}

// cut_off_output ends the output streams still open: output that trails the
// exit (an orphan holding the pipe) is not waited for any longer.
static void cut_off_output(struct mon *m) {
  for (int t = 1; t < 3; t++) {
    if (!m->src_open[t]) continue;
    if (m->src[t] >= 0 && m->src[t] != m->master) close(m->src[t]);
    m->src[t] = -1;
    if (m->streamed[t]) m->out[t].ended = 1;
    m->src_open[t] = 0;
  }
  flush_out(m);
}

// finished, once the exit is recorded: the output has ended and been
// acknowledged, or is given up on.
static int finished(struct mon *m, struct exitw *x) {
  int outputs_open = m->src_open[1] || m->src_open[2];
  // A connected daemon that is behind (its reader is slow) is not an
  // orphan holding the pipe: the output still moves, so the clock waits.
  // Nor is output it has yet to acknowledge given up on while it is connected.
  int backlog = q_len(&m->out[1]) > OUT_LIMIT || q_len(&m->out[2]) > OUT_LIMIT;
  int unacked = q_len(&m->out[1]) || q_len(&m->out[2]);
  if (m->io_client >= 0 && (backlog || (!outputs_open && unacked))) x->exited_at = now_ms();
  long long since = now_ms() - x->exited_at;
  if (outputs_open && since > DRAIN_MS) {
    cut_off_output(m);
    outputs_open = 0;
  }
  return !outputs_open && (!unacked || since > LINGER_MS);
}

// The descriptors one turn of the main loop polls, with the index of each in
// p (-1: not polled this turn).
struct pollset {
  struct pollfd p[8];
  int n, isig, ictl, ilis, icli, isrc[3], iin, iwait;
};

static void pollset_add(struct pollset *s, int *slot, int fd, short events) {
  *slot = s->n;
  s->p[s->n++] = (struct pollfd){fd, events, 0};
}

static void build_pollset(struct pollset *s, struct mon *m, int sfd, int control_sock, int wait_out) {
  s->n = 0;
  s->ictl = s->ilis = s->icli = s->iin = s->iwait = -1;
  for (int t = 0; t < 3; t++) s->isrc[t] = -1;
  pollset_add(s, &s->isig, sfd, POLLIN);
  if (control_sock >= 0) pollset_add(s, &s->ictl, control_sock, POLLIN);
  if (m->io_listen >= 0) pollset_add(s, &s->ilis, m->io_listen, POLLIN);
  if (m->io_client >= 0) {
    short ev = m->inq.len < OUT_LIMIT ? POLLIN : 0;
    if (out_ready(m)) ev |= POLLOUT;
    pollset_add(s, &s->icli, m->io_client, ev);
  }
  for (int t = 0; t < 3; t++) {
    if (m->src[t] < 0) continue;
    if (t > 0 && q_len(&m->out[t]) > OUT_LIMIT) continue;  // backpressure, per stream
    pollset_add(s, &s->isrc[t], m->src[t], POLLIN);
  }
  if (m->in_w >= 0 && m->inq.len && m->in_w != m->master) pollset_add(s, &s->iin, m->in_w, POLLOUT);
  if (wait_out >= 0) pollset_add(s, &s->iwait, wait_out, POLLIN);
}

// accept_io: a new daemon connection replaces the old one; output is sent
// again from a frame start. Returns 0 when there was none to accept.
static int accept_io(struct mon *m) {
  int c = accept4(m->io_listen, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (c < 0) return 0;
  if (m->io_client >= 0) close(m->io_client);
  m->io_client = c;
  io_reset(m);
  flush_out(m);
  return 1;
}

// move_data serves the ready io client, stdio and waiter output.
static void move_data(struct mon *m, struct exitw *x, const struct pollset *s) {
  if (s->icli >= 0 && m->io_client >= 0) {
    if (s->p[s->icli].revents & (POLLIN | POLLHUP | POLLERR)) io_read(m);
    if (m->io_client >= 0 && (s->p[s->icli].revents & POLLOUT)) flush_out(m);
  }
  for (int t = 0; t < 3; t++) {
    if (s->isrc[t] >= 0 && m->src[t] >= 0 && s->p[s->isrc[t]].revents) pump(m, t);
  }
  if (s->iin >= 0 && s->p[s->iin].revents) flush_in(m);
  if (s->iwait >= 0 && s->p[s->iwait].revents && !read_some(x->wait_out, &x->wbuf)) {
    close(x->wait_out);
    x->wait_out = -1;
  }
  if (m->in_w == m->master && m->master >= 0 && m->inq.len) flush_in(m);
  flush_out(m);  // stdin acknowledgements of what flush_in passed on
}

// serve copies the stdio and watches for the exit until the monitor may go.
static void serve(struct mon *m, struct exitw *x, int sfd, int control_sock) {
  for (;;) {
    if (x->done && finished(m, x)) return;
    struct pollset s;
    build_pollset(&s, m, sfd, control_sock, x->wait_out);
    if (poll(s.p, s.n, x->done ? 200 : -1) < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    if (s.ictl >= 0 && (s.p[s.ictl].revents & POLLIN)) handle_control(control_sock, m);
    // The rest of this turn's events are stale for the new connection.
    if (s.ilis >= 0 && (s.p[s.ilis].revents & POLLIN) && accept_io(m)) continue;
    move_data(m, x, &s);
    if (s.p[s.isig].revents & POLLIN) reap(x, sfd);
  }
}

int cmd_monitor(int argc, char **argv) {
  struct opts o;
  int rc = parse_args(argc, argv, &o);
  if (rc == 0) rc = join_cgroups(&o);
  if (rc) return rc;
  leave_parent();
  setsid();
  if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0) die("set child subreaper");
  signal(SIGPIPE, SIG_IGN);

  int terminal = o.console != NULL;
  struct mon m;
  mon_init(&m, &o);
  // What the runtime (and so the container) gets as fds 0-2.
  int child_fd[3] = {-1, -1, -1};
  int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (terminal) setup_terminal_stdio(&m, &o, child_fd, nul);
  else setup_pipe_stdio(&m, &o, child_fd);
  for (int t = 0; t < 3; t++) {
    if (child_fd[t] < 0) die("open stdio");
  }
  int console_sock = -1, control_sock = -1;
  if (terminal && (console_sock = listen_unix(o.console, 1)) < 0) die("listen console socket");
  if (o.control && (control_sock = listen_unix(o.control, 1)) < 0) die("listen control socket");
  if (o.iosock && (m.io_listen = listen_unix(o.iosock, 1)) < 0) die("listen io socket");

  sigset_t chld;
  int sfd = sigchld_fd(&chld);
  pid_t runtime = start_runtime(&o, child_fd, nul, &chld);
  struct early e;
  e.n = 0;
  int runtime_st = await_runtime(&m, &o, sfd, runtime, console_sock, &e);
  long pid = o.pid_file ? read_pid_file(o.pid_file) : runtime;
  if (runtime_st != 0 || pid <= 0 || (terminal && m.master < 0)) {
    report("failed", runtime_st != 0 ? status_code(runtime_st) : 255);
    unlink_sockets(&o);
    return 1;
  }
  report("ready", pid);
  detach_stdio(o.log);
  if (terminal) adopt_master(&m);

  struct exitw x;
  memset(&x, 0, sizeof x);
  x.exit_file = o.exit_file;
  x.wait_cmd = o.wait_cmd;
  x.pid = pid;
  x.waiter = -1;
  x.wait_out = -1;
  start_exit_watch(&x, &e);
  serve(&m, &x, sfd, control_sock);
  if (m.master >= 0) close(m.master);
  unlink_sockets(&o);
  buf_free(&x.wbuf);
  return 0;
}
