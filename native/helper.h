// Shared pieces of kuasar-helper (see main.c for what the helper is for).
#ifndef KUASAR_HELPER_H
#define KUASAR_HELPER_H
#define _GNU_SOURCE
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

// A growable byte buffer.
struct buf {
  char *p;
  size_t len, cap;
};
void buf_append(struct buf *b, const void *data, size_t n);
void buf_consume(struct buf *b, size_t n);
void buf_free(struct buf *b);

void die(const char *what);
int status_code(int wait_status);
void write_exit_record(const char *path, pid_t pid, int status);
void detach_stdio(const char *log);
void report(const char *word, long value);
void leave_parent(void);
int listen_unix(const char *path, int nonblock);
int connect_unix(const char *path);
void write_all(int fd, const char *buf, size_t n);
int set_nonblock(int fd);
long long now_ms(void);

// The fd at which a pod's namespace init holds the pod's /dev/shm (pod_shm.c).
#define POD_SHM_FD 63
// Makes a detached tmpfs of `size` at POD_SHM_FD; -1 and errno when it cannot.
int pod_shm(const char *size);

int cmd_hold(int argc, char **argv);
int cmd_monitor(int argc, char **argv);
int cmd_relay(int argc, char **argv);
int cmd_notify(int argc, char **argv);
int cmd_shim_stub(int argc, char **argv);
int cmd_shim_v2(int argc, char **argv);
int cmd_detach(int argc, char **argv);
int cmd_pause(void);
int cmd_probe_kvm(void);
int cmd_probe_shm(int argc, char **argv);
int cmd_pty_shell(int argc, char **argv);
int cmd_sandbox_wait(int argc, char **argv);
#endif
