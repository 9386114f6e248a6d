// relay: keeps containerd's task connections alive across sandboxer restarts.
//
// containerd treats the loss of a task connection as the death of the shim
// behind it: it marks every container of that connection exited (255). A
// sandboxer daemon that restarts would therefore kill the pods it meant to
// keep. So the daemon does not own the task sockets; this relay does. It
// listens on each pod's task socket and, for every connection containerd
// makes, opens one to the daemon's backend socket (first line:
// "KUASAR-RELAY 1 <sandbox id>\n"), then copies ttrpc frames both ways.
//
// When the daemon goes away, client connections stay open: the relay stops
// reading from them, retries the backend every 100 ms, and on reconnection
// replays every request that has not been answered yet (a Task.Wait, say),
// in stream-id order, each marked with ttrpc metadata `kuasar-replay: 1` (a mark
// only the relay makes: it takes the key out of every request a client sends,
// see strip_replay). For a client stream it replays the request and the
// first data frame (containerd's StreamInit) and drops the new daemon's
// second acknowledgement. Only whole frames are forwarded to the client, so
// a daemon that dies mid-frame never corrupts a connection. Frames a client
// sent before it closed still reach the daemon (containerd writes the last
// stdin bytes, ends the stream and closes its connection at once).
//
// Control socket, one line per connection: "listen <id> <path>", "close <id>",
// "unlisten <id>" (the socket goes, its connections stay),
// "ping", "quit" (refused while a pod is served); answers "ok" or "err <reason>". With no pod left for 60 s
// and no control traffic, the relay exits.
//
// "hold <id> <path>" opens the FIFO <path> for writing and keeps it open until "release <path>" or
// "close <id>": the daemon copies a VM process's output into containerd's FIFO itself, and
// containerd's reader takes the close of the last writer for the end of the output. Held here, a
// daemon that restarts (or crashes) does not end it: the next one opens the FIFO again and goes
// on where the guest's stream left off.
#include "helper.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define HDR 10
#define MAX_PAYLOAD (4u << 20)
#define T_REQUEST 1
#define T_RESPONSE 2
#define T_DATA 3
#define F_REMOTE_CLOSED 1
#define F_REMOTE_OPEN 2
// Bytes a connection may hold per direction: what was read and not yet
// forwarded, parsed or not (in + out buffers). Past it the relay stops reading
// that side, so a client that never reads its answers stops the daemon's
// writes and, through the daemon's own bound, its requests. Larger than the
// largest frame, so a frame can always be completed once the out buffer has
// drained: a peer that reads always makes progress.
#define BUF_LIMIT (8u << 20)
#define RETRY_MS 100
#define IDLE_EXIT_MS 60000

enum kind { K_CONTROL, K_LISTENER, K_CLIENT, K_BACKEND };

struct tag {
  enum kind kind;
  void *obj;
};

struct listener {
  struct tag tag;
  int fd;
  char scope[96];
  char path[108];
  struct listener *next;
};

// An unanswered request: replayed to a new daemon.
struct pending {
  uint32_t id;
  int streaming;        // the client keeps sending data (REMOTE_OPEN)
  int acked;            // the server already answered with data once
  int drop_next;        // drop the next server data frame (a replayed ack)
  struct buf req;       // the request frame
  struct buf first;     // the stream's first client data frame
  struct pending *next;
};

struct conn {
  struct tag ctag, btag;
  int cfd, bfd;
  char scope[96];
  struct buf cin, tob, bin, toc;
  uint32_t cskip, bskip;  // bytes of an oversized frame still to pass through
  struct pending *pend;
  long long retry_at;
  struct conn *next;
};

static int ep;
static const char *backend_path, *control_path;
static struct listener *listeners;
static struct conn *conns;
static long long last_activity;
static struct tag control_tag = {K_CONTROL, NULL};

static uint32_t be32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void watch(int fd, struct tag *t, uint32_t events, int add) {
  struct epoll_event ev = {.events = events, .data.ptr = t};
  epoll_ctl(ep, add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &ev);
}

static void update_events(struct conn *c) {
  if (c->cfd >= 0) {
    uint32_t cev = EPOLLRDHUP;
    if (c->bfd >= 0 && c->cin.len + c->tob.len < BUF_LIMIT) cev |= EPOLLIN;
    if (c->toc.len) cev |= EPOLLOUT;
    watch(c->cfd, &c->ctag, cev, 0);
  }
  if (c->bfd >= 0) {
    uint32_t bev = 0;
    if (c->bin.len + c->toc.len < BUF_LIMIT) bev |= EPOLLIN;
    if (c->tob.len) bev |= EPOLLOUT;
    watch(c->bfd, &c->btag, bev, 0);
  }
}

static struct pending *find_pending(struct conn *c, uint32_t id) {
  for (struct pending *p = c->pend; p; p = p->next) {
    if (p->id == id) return p;
  }
  return NULL;
}

static void drop_pending(struct conn *c, uint32_t id) {
  for (struct pending **pp = &c->pend; *pp; pp = &(*pp)->next) {
    if ((*pp)->id == id) {
      struct pending *p = *pp;
      *pp = p->next;
      buf_free(&p->req);
      buf_free(&p->first);
      free(p);
      return;
    }
  }
}

// Only the relay may mark a request as a replay (the daemon then answers a
// call that already took effect with its outcome), so it takes every
// `kuasar-replay` entry out of what clients send. The daemon's decoder
// (ts-proto over @bufbuild/protobuf) is lenient: it stops at a zero or
// end-group tag, lets a field overrun its enclosing message, skips unknown
// wire types. Rather than imitate each of those, the relay strips from
// payloads that parse strictly (every field whole, within its message) and
// puts a poison entry {key "kuasar-replay", value ""} first in any other:
// the daemon honours a replay only when "1" is the key's one value, so an
// entry hidden where the relay could not find it is never honoured.
static const char REPLAY_POISON[] = "\x2a\x0f\x0a\x0dkuasar-replay";
#define REPLAY_POISON_LEN (sizeof REPLAY_POISON - 1)

// Reads a varint of at most `max` bytes from p[*pos..end).
static int pb_varint(const unsigned char *p, size_t end, size_t *pos, int max, uint64_t *v) {
  uint64_t r = 0;
  for (int i = 0; i < max && *pos < end; i++) {
    unsigned char b = p[(*pos)++];
    r |= (uint64_t)(b & 0x7f) << (7 * i);
    if (!(b & 0x80)) {
      *v = r;
      return 1;
    }
  }
  return 0;
}

// Reads one field at p[*pos..end), leaving *pos after it: its field number,
// and for a length-delimited one where its value starts and its length.
// Refuses what is not plainly well formed: tag 0, groups, a value past `end`.
static int pb_field(const unsigned char *p, size_t end, size_t *pos, uint32_t *field, int *wt,
                    size_t *vs, size_t *vl) {
  uint64_t tag, v;
  if (!pb_varint(p, end, pos, 5, &tag) || tag > 0xffffffffu || (tag >> 3) == 0) return 0;
  *field = (uint32_t)(tag >> 3);
  *wt = (int)(tag & 7);
  switch (*wt) {
    case 0:
      return pb_varint(p, end, pos, 10, &v);
    case 1:
    case 5: {
      size_t n = *wt == 1 ? 8 : 4;
      if (end - *pos < n) return 0;
      *pos += n;
      return 1;
    }
    case 2:
      if (!pb_varint(p, end, pos, 5, &v) || v > end - *pos) return 0;
      *vs = *pos;
      *vl = (size_t)v;
      *pos += (size_t)v;
      return 1;
    default:
      return 0;
  }
}

// Whether key bytes decode to "kuasar-replay" once the daemon has lower-cased
// them: ASCII in any case, a leading BOM (TextDecoder drops it) and the
// KELVIN SIGN (U+212A, lower-cased to "k"; no other code point lower-cases
// to a letter of the key).
static int is_replay_key(const unsigned char *k, size_t n) {
  static const char want[] = "kuasar-replay";
  size_t i = 0;
  if (n >= 3 && k[0] == 0xef && k[1] == 0xbb && k[2] == 0xbf) i = 3;
  for (const char *w = want; *w; w++) {
    unsigned char c = i < n ? k[i] : 0;
    if (c >= 'A' && c <= 'Z') c = (unsigned char)(c + 32);
    if (i < n && c == (unsigned char)*w) {
      i++;
    } else if (*w == 'k' && n - i >= 3 && k[i] == 0xe2 && k[i + 1] == 0x84 && k[i + 2] == 0xaa) {
      i += 3;
    } else {
      return 0;
    }
  }
  return i == n;
}

// A KeyValue at p[0..n): 1 when it parses, with *mark set when a key (any of
// them: the decoder keeps the last) is the replay key.
static int pb_keyvalue(const unsigned char *p, size_t n, int *mark) {
  size_t pos = 0, vs = 0, vl = 0;
  uint32_t field;
  int wt;
  *mark = 0;
  while (pos < n) {
    if (!pb_field(p, n, &pos, &field, &wt, &vs, &vl)) return 0;
    if (field == 1 && wt == 2 && is_replay_key(p + vs, vl)) *mark = 1;
  }
  return 1;
}

// Writes request frame `f` (whole, header included) to `out` without the
// replay entries a client put in its metadata (Request field 5).
static void strip_replay(struct buf *out, const char *f, size_t n) {
  const unsigned char *p = (const unsigned char *)f + HDR;
  size_t len = n - HDR, pos = 0, vs = 0, vl = 0;
  struct buf body = {0};
  int ok = 1;
  while (ok && pos < len) {
    size_t start = pos;
    uint32_t field;
    int wt, mark = 0;
    ok = pb_field(p, len, &pos, &field, &wt, &vs, &vl);
    if (ok && field == 5) ok = wt == 2 && pb_keyvalue(p + vs, vl, &mark);
    if (ok && !mark) buf_append(&body, p + start, pos - start);
  }
  unsigned char h[HDR];
  memcpy(h, f, HDR);
  uint32_t m = (uint32_t)(ok ? body.len : REPLAY_POISON_LEN + len);
  h[0] = (unsigned char)(m >> 24);
  h[1] = (unsigned char)(m >> 16);
  h[2] = (unsigned char)(m >> 8);
  h[3] = (unsigned char)m;
  buf_append(out, h, HDR);
  if (ok) {
    buf_append(out, body.p, body.len);
  } else {
    buf_append(out, REPLAY_POISON, REPLAY_POISON_LEN);
    buf_append(out, p, len);
  }
  buf_free(&body);
}

// A whole frame from containerd: remember what a new daemon would need.
static void client_frame(struct conn *c, const char *f, size_t n) {
  const unsigned char *h = (const unsigned char *)f;
  uint32_t id = be32(h + 4);
  if (h[8] == T_REQUEST) {
    struct pending *p = calloc(1, sizeof *p);
    if (!p) die("out of memory");
    p->id = id;
    p->streaming = (h[9] & F_REMOTE_OPEN) != 0;
    // What is forwarded and kept for a replay carries no client-made mark.
    strip_replay(&p->req, f, n);
    struct pending **pp = &c->pend;
    while (*pp) pp = &(*pp)->next;
    *pp = p;
    if (c->bfd >= 0) buf_append(&c->tob, p->req.p, p->req.len);
    return;
  }
  if (h[8] == T_DATA) {
    struct pending *p = find_pending(c, id);
    if (p && p->streaming && !p->first.len) buf_append(&p->first, f, n);
  }
  if (c->bfd >= 0) buf_append(&c->tob, f, n);
}

// A whole frame from the daemon: settle what it answers, then pass it on.
static void backend_frame(struct conn *c, const char *f, size_t n) {
  const unsigned char *h = (const unsigned char *)f;
  uint32_t id = be32(h + 4);
  struct pending *p = find_pending(c, id);
  if (p && h[8] == T_DATA && p->drop_next) {
    p->drop_next = 0;
    return;
  }
  if (p && h[8] == T_DATA) p->acked = 1;
  if (h[8] == T_RESPONSE || (h[8] == T_DATA && (h[9] & F_REMOTE_CLOSED))) drop_pending(c, id);
  buf_append(&c->toc, f, n);
}

// parse takes whole frames out of `in`; oversized ones pass through raw to `raw`.
static void parse(struct conn *c, struct buf *in, uint32_t *skip, struct buf *raw,
                  void (*frame)(struct conn *, const char *, size_t)) {
  for (;;) {
    if (*skip) {
      size_t n = in->len < *skip ? in->len : *skip;
      if (!n) return;
      if (raw) buf_append(raw, in->p, n);
      buf_consume(in, n);
      *skip -= (uint32_t)n;
      continue;
    }
    if (in->len < HDR) return;
    uint32_t len = be32((unsigned char *)in->p);
    if (len > MAX_PAYLOAD) {
      if (raw) buf_append(raw, in->p, HDR);
      buf_consume(in, HDR);
      *skip = len;
      continue;
    }
    if (in->len < HDR + (size_t)len) return;
    frame(c, in->p, HDR + len);
    buf_consume(in, HDR + len);
  }
}

static void close_conn(struct conn *c) {
  if (c->cfd >= 0) close(c->cfd);
  if (c->bfd >= 0) close(c->bfd);
  buf_free(&c->cin);
  buf_free(&c->tob);
  buf_free(&c->bin);
  buf_free(&c->toc);
  while (c->pend) drop_pending(c, c->pend->id);
  for (struct conn **pp = &conns; *pp; pp = &(*pp)->next) {
    if (*pp == c) {
      *pp = c->next;
      break;
    }
  }
  free(c);
}

static void backend_down(struct conn *c) {
  if (c->bfd >= 0) close(c->bfd);
  c->bfd = -1;
  buf_free(&c->tob);
  buf_free(&c->bin);
  c->bskip = 0;
  c->retry_at = now_ms() + RETRY_MS;
  update_events(c);
}

// ttrpc metadata marking a replayed request: a Request's field 5 (repeated
// KeyValue, so appending one more is valid protobuf) holding
// {key "kuasar-replay", value "1"}. The daemon answers a replay of a call
// that already took effect (a Create whose answer was lost with the old
// daemon) with its outcome, where a genuine second call would be refused.
static const char REPLAY_MARK[] =
    "\x2a\x12\x0a\x0dkuasar-replay\x12\x01\x31";
#define REPLAY_MARK_LEN (sizeof REPLAY_MARK - 1)

// Appends request frame `req` to `out`, marked as a replay when it still fits a frame.
static void append_replay(struct buf *out, const struct buf *req) {
  uint32_t len = be32((const unsigned char *)req->p);
  if (req->len != HDR + (size_t)len || len + REPLAY_MARK_LEN > MAX_PAYLOAD) {
    buf_append(out, req->p, req->len);
    return;
  }
  unsigned char h[HDR];
  memcpy(h, req->p, HDR);
  uint32_t n = len + (uint32_t)REPLAY_MARK_LEN;
  h[0] = (unsigned char)(n >> 24);
  h[1] = (unsigned char)(n >> 16);
  h[2] = (unsigned char)(n >> 8);
  h[3] = (unsigned char)n;
  buf_append(out, h, HDR);
  buf_append(out, req->p + HDR, len);
  buf_append(out, REPLAY_MARK, REPLAY_MARK_LEN);
}

static int backend_up(struct conn *c) {
  int fd = connect_unix(backend_path);
  if (fd < 0) {
    c->retry_at = now_ms() + RETRY_MS;
    return 0;
  }
  set_nonblock(fd);
  c->bfd = fd;
  char line[160];
  int n = snprintf(line, sizeof line, "KUASAR-RELAY 1 %s\n", c->scope);
  buf_append(&c->tob, line, (size_t)n);
  // Replay what the previous daemon never answered, oldest first, marked as replays.
  for (struct pending *p = c->pend; p; p = p->next) {
    append_replay(&c->tob, &p->req);
    if (p->first.len) buf_append(&c->tob, p->first.p, p->first.len);
    p->drop_next = p->streaming && p->acked;
  }
  watch(fd, &c->btag, EPOLLIN, 1);
  update_events(c);
  return 1;
}

static void accept_client(struct listener *l) {
  for (;;) {
    int fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) return;
    struct conn *c = calloc(1, sizeof *c);
    if (!c) die("out of memory");
    c->ctag = (struct tag){K_CLIENT, c};
    c->btag = (struct tag){K_BACKEND, c};
    c->cfd = fd;
    c->bfd = -1;
    snprintf(c->scope, sizeof c->scope, "%s", l->scope);
    c->next = conns;
    conns = c;
    watch(fd, &c->ctag, EPOLLRDHUP, 1);
    backend_up(c);
    update_events(c);
  }
}

// Reads into `b` until EAGAIN or until `b` and `out` (where its frames go)
// hold BUF_LIMIT bytes; update_events stops polling the fd past that.
static int pump_read(int fd, struct buf *b, const struct buf *out) {
  char tmp[65536];
  for (;;) {
    if (b->len + (out ? out->len : 0) >= BUF_LIMIT) return 1;
    ssize_t r = read(fd, tmp, sizeof tmp);
    if (r > 0) {
      buf_append(b, tmp, (size_t)r);
      continue;
    }
    if (r == 0) return 0;
    return errno == EAGAIN || errno == EINTR ? 1 : 0;
  }
}

static int pump_write(int fd, struct buf *b) {
  while (b->len) {
    ssize_t w = send(fd, b->p, b->len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) return errno == EAGAIN || errno == EINTR ? 1 : 0;
    buf_consume(b, (size_t)w);
  }
  return 1;
}

// The client closed: its last frames (stdin data and the stream's close, say)
// still go to the daemon, and the backend connection closes once they are
// written. With no daemon up there is nobody to deliver to: it closes at once.
static void client_closed(struct conn *c) {
  close(c->cfd);
  c->cfd = -1;
  buf_free(&c->toc);
  if (c->bfd >= 0 && pump_write(c->bfd, &c->tob) && c->tob.len) return update_events(c);
  close_conn(c);
}

static void on_client(struct conn *c, uint32_t ev) {
  if (ev & EPOLLIN) {
    int open = pump_read(c->cfd, &c->cin, &c->tob);
    // Frames read before the end are forwarded, even when the end came with them.
    parse(c, &c->cin, &c->cskip, c->bfd >= 0 ? &c->tob : NULL, client_frame);
    if (!open) return client_closed(c);
  } else if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
    return client_closed(c);
  }
  if ((ev & EPOLLOUT) && !pump_write(c->cfd, &c->toc)) return close_conn(c);
  if (c->bfd >= 0 && !pump_write(c->bfd, &c->tob)) backend_down(c);
  update_events(c);
}

static void on_backend(struct conn *c, uint32_t ev) {
  if (c->cfd < 0) {
    // Only the client's last frames are left to write; answers have no reader.
    struct buf answers = {0};
    int alive = !(ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) || pump_read(c->bfd, &answers, NULL);
    buf_free(&answers);
    if (alive && pump_write(c->bfd, &c->tob) && c->tob.len) return update_events(c);
    return close_conn(c);
  }
  if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
    // A daemon that went away left a finite rest: read it all (its answers
    // still reach the client), or a full buffer would make epoll report the
    // hang-up forever without anything being read.
    int hup = (ev & (EPOLLHUP | EPOLLERR)) != 0;
    int alive = pump_read(c->bfd, &c->bin, hup ? NULL : &c->toc);
    parse(c, &c->bin, &c->bskip, &c->toc, backend_frame);
    if (!alive) {
      backend_down(c);
    }
  }
  if (c->bfd >= 0 && (ev & EPOLLOUT) && !pump_write(c->bfd, &c->tob)) backend_down(c);
  if (!pump_write(c->cfd, &c->toc)) return close_conn(c);
  update_events(c);
}

static struct listener *find_listener(const char *scope) {
  for (struct listener *l = listeners; l; l = l->next) {
    if (!strcmp(l->scope, scope)) return l;
  }
  return NULL;
}

// Write ends of FIFOs held for the daemon ("hold").
struct hold {
  char scope[96];
  char *path;
  int fd;
  struct hold *next;
};
static struct hold *holds;

static void drop_holds(const char *scope, const char *path) {
  for (struct hold **pp = &holds; *pp;) {
    struct hold *h = *pp;
    if ((scope && !strcmp(h->scope, scope)) || (path && !strcmp(h->path, path))) {
      *pp = h->next;
      close(h->fd);
      free(h->path);
      free(h);
    } else {
      pp = &h->next;
    }
  }
}

static const char *hold_fifo(const char *scope, const char *path) {
  for (struct hold *h = holds; h; h = h->next) {
    if (!strcmp(h->path, path)) return "ok";
  }
  // Non-blocking: a FIFO without a reader fails (ENXIO) instead of waiting for one.
  int fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return errno == ENXIO ? "err no reader" : "err cannot open";
  struct stat st;
  if (fstat(fd, &st) < 0 || !S_ISFIFO(st.st_mode)) {
    close(fd);
    return "err not a fifo";
  }
  struct hold *h = calloc(1, sizeof *h);
  if (!h || !(h->path = strdup(path))) die("out of memory");
  size_t n = strnlen(scope, sizeof h->scope - 1);  // zero-ended by calloc
  memcpy(h->scope, scope, n);
  h->fd = fd;
  h->next = holds;
  holds = h;
  return "ok";
}

static const char *control_command(char *line) {
  char scope[96], path[108];
  line[strcspn(line, "\r\n")] = 0;
  if (!strcmp(line, "ping")) return "ok";
  // Paths of any length, spaces included: the rest of the line.
  if (!strncmp(line, "hold ", 5)) {
    char *sp = strchr(line + 5, ' ');
    if (!sp || sp - (line + 5) >= (long)sizeof scope || !sp[1]) return "err usage: hold <id> <path>";
    *sp = 0;
    return hold_fifo(line + 5, sp + 1);
  }
  if (!strncmp(line, "release ", 8)) {
    drop_holds(NULL, line + 8);
    return "ok";
  }
  if (!strcmp(line, "quit")) {
    // Only an idle relay quits: a pod opened while the daemon decided to
    // stop it must keep its socket.
    if (listeners || holds) return "err pods are still served";
    unlink(control_path);
    exit(0);
  }
  if (sscanf(line, "listen %95s %107s", scope, path) == 2) {
    struct listener *l = find_listener(scope);
    if (l && !strcmp(l->path, path)) return "ok";
    if (l) return "err scope listens on another path";
    int fd = listen_unix(path, 1);
    if (fd < 0) return "err cannot listen";
    l = calloc(1, sizeof *l);
    if (!l) die("out of memory");
    l->tag = (struct tag){K_LISTENER, l};
    l->fd = fd;
    snprintf(l->scope, sizeof l->scope, "%s", scope);
    snprintf(l->path, sizeof l->path, "%s", path);
    l->next = listeners;
    listeners = l;
    watch(fd, &l->tag, EPOLLIN, 1);
    return "ok";
  }
  // "unlisten" takes the socket away and keeps the connections: a pod whose
  // Shutdown travels on one of them (containerd 1.7's shim mode) must get its
  // answer; "close" later ends what the client has not closed itself.
  int unlisten = sscanf(line, "unlisten %95s", scope) == 1;
  if (unlisten || sscanf(line, "close %95s", scope) == 1) {
    for (struct listener **pp = &listeners; *pp; pp = &(*pp)->next) {
      if (!strcmp((*pp)->scope, scope)) {
        struct listener *l = *pp;
        *pp = l->next;
        close(l->fd);
        unlink(l->path);
        free(l);
        break;
      }
    }
    if (unlisten) return "ok";
    drop_holds(scope, NULL);
    for (struct conn *c = conns, *next; c; c = next) {
      next = c->next;
      if (!strcmp(c->scope, scope)) close_conn(c);
    }
    return "ok";
  }
  return "err unknown command";
}

static void on_control(int lfd) {
  int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
  if (c < 0) return;
  char line[4400];
  ssize_t n = 0;
  struct pollfd p = {c, POLLIN, 0};
  if (poll(&p, 1, 1000) > 0) n = read(c, line, sizeof line - 1);
  if (n > 0) {
    line[n] = 0;
    const char *answer = control_command(line);
    write_all(c, answer, strlen(answer));
    write_all(c, "\n", 1);
  }
  close(c);
}

int cmd_relay(int argc, char **argv) {
  const char *log = NULL;
  for (int i = 0; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--control")) control_path = argv[i + 1];
    else if (!strcmp(argv[i], "--backend")) backend_path = argv[i + 1];
    else if (!strcmp(argv[i], "--log")) log = argv[i + 1];
    else {
      dprintf(2, "kuasar-helper relay: unknown argument \"%s\"\n", argv[i]);
      return 2;
    }
  }
  if (!control_path || !backend_path) {
    dprintf(2, "kuasar-helper relay: --control and --backend are required\n");
    return 2;
  }
  setsid();
  signal(SIGPIPE, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  signal(SIGINT, SIG_IGN);
  ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll");
  int lfd = listen_unix(control_path, 1);
  if (lfd < 0) die("listen control socket");
  watch(lfd, &control_tag, EPOLLIN, 1);
  report("ready", getpid());
  detach_stdio(log);
  last_activity = now_ms();
  for (;;) {
    long long now = now_ms(), next = now + 1000;
    for (struct conn *c = conns; c; c = c->next) {
      if (c->bfd < 0 && c->retry_at < next) next = c->retry_at;
    }
    struct epoll_event evs[64];
    int timeout = next > now ? (int)(next - now) : 0;
    int n = epoll_wait(ep, evs, 64, timeout);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    for (int i = 0; i < n; i++) {
      struct tag *t = evs[i].data.ptr;
      enum kind k = t->kind;  // `t` may be freed by the handler (close_conn)
      last_activity = now_ms();
      switch (k) {
        case K_CONTROL:
          on_control(lfd);
          break;
        case K_LISTENER:
          accept_client(t->obj);
          break;
        case K_CLIENT:
          on_client(t->obj, evs[i].events);
          break;
        case K_BACKEND:
          on_backend(t->obj, evs[i].events);
          break;
      }
      // Handling a connection or a control command may free connections that
      // later events of this batch point at; level-triggered epoll reports
      // those events again on the next wait.
      if (k != K_LISTENER) break;
    }
    now = now_ms();
    for (struct conn *c = conns; c; c = c->next) {
      if (c->bfd < 0 && c->retry_at <= now) backend_up(c);
    }
    if (!listeners && !conns && !holds && now - last_activity > IDLE_EXIT_MS) {
      unlink(control_path);
      return 0;
    }
  }
}
