// hold: a pod's namespace holder.
//
// Makes new pid/ipc/uts namespaces (joining the CNI netns, a new one, or the
// host's; ipc and uts may stay the host's for host-network/host-IPC pods),
// forks the namespace init — PID 1 of the new pid namespace, which only reaps
// orphans until SIGTERM/SIGINT/SIGKILL — prints "pid <own pid>" (leave_parent)
// and "ready <init pid>", waits for it, and writes its exit record.
//
// With --shm-size, the init also holds the pod's /dev/shm, a detached tmpfs
// (pod_shm.c), at POD_SHM_FD.
//
// No mount namespace: no container joins one (runc gives each its own), and
// a holder's would pin a copy of every mount of the node for the pod's life
// (~384 bytes of kernel memory per mount: with 1000 pods, each beside the
// thousand pods' shm mounts, hundreds of MiB), and make each pod start copy
// the whole mount table.
#include "helper.h"

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <stdio.h>

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

// Signals stay blocked and are taken synchronously, which also counts as
// "handled" for the kernel's protection of a namespace init.
static void namespace_init(void) {
  sigset_t all;
  sigfillset(&all);
  sigprocmask(SIG_BLOCK, &all, NULL);
  detach_stdio(NULL);
  for (int fd = 3; fd < 1024; fd++) {
    if (fd != POD_SHM_FD) close(fd);
  }
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

// set_sysctl writes "key=value" under /proc/sys. Namespaced sysctls (net.*,
// kernel.shm*, ...) apply to the namespaces of the writing process: the
// pod's, once setns/unshare are done.
static void set_sysctl(const char *kv) {
  char path[512] = "/proc/sys/";
  const char *eq = strchr(kv, '=');
  if (!eq || eq == kv || (size_t)(eq - kv) >= sizeof path - 11) {
    errno = EINVAL;
    die("bad sysctl");
  }
  size_t n = strlen(path);
  for (const char *p = kv; p < eq; p++) path[n++] = *p == '.' ? '/' : *p;
  path[n] = 0;
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0 || write(fd, eq + 1, strlen(eq + 1)) < 0) {
    dprintf(2, "kuasar-helper hold: cannot set sysctl %.*s: %s\n", (int)(eq - kv), kv, strerror(errno));
    _exit(125);
  }
  close(fd);
}

int cmd_hold(int argc, char **argv) {
  const char *exit_file = NULL, *netns = NULL, *hostname = NULL, *log = NULL, *shm_size = NULL;
  const char *sysctls[64];
  int nsysctls = 0;
  int new_netns = 0, host_ipc = 0, host_uts = 0;
  for (int i = 0; i < argc; i++) {
    if (!strcmp(argv[i], "--exit-file") && i + 1 < argc) exit_file = argv[++i];
    else if (!strcmp(argv[i], "--netns") && i + 1 < argc) netns = argv[++i];
    else if (!strcmp(argv[i], "--hostname") && i + 1 < argc) hostname = argv[++i];
    else if (!strcmp(argv[i], "--log") && i + 1 < argc) log = argv[++i];
    else if (!strcmp(argv[i], "--shm-size") && i + 1 < argc) shm_size = argv[++i];
    else if (!strcmp(argv[i], "--new-netns")) new_netns = 1;
    else if (!strcmp(argv[i], "--host-netns")) new_netns = 0;
    else if (!strcmp(argv[i], "--host-ipc")) host_ipc = 1;
    else if (!strcmp(argv[i], "--host-uts")) host_uts = 1;
    else if (!strcmp(argv[i], "--sysctl") && i + 1 < argc && nsysctls < 64) sysctls[nsysctls++] = argv[++i];
    else {
      dprintf(2, "kuasar-helper hold: unknown argument \"%s\"\n", argv[i]);
      return 2;
    }
  }
  if (!exit_file) {
    dprintf(2, "kuasar-helper hold: --exit-file is required\n");
    return 2;
  }
  leave_parent();
  setsid();
  if (netns) {
    int fd = open(netns, O_RDONLY | O_CLOEXEC);
    if (fd < 0) die("open netns");
    if (setns(fd, CLONE_NEWNET) < 0) die("setns net");
    close(fd);
  }
  int flags = CLONE_NEWPID;
  if (!host_ipc) flags |= CLONE_NEWIPC;
  if (!host_uts) flags |= CLONE_NEWUTS;
  if (new_netns) flags |= CLONE_NEWNET;
  if (unshare(flags) < 0) die("unshare");
  if (hostname && !host_uts && sethostname(hostname, strlen(hostname)) < 0) die("sethostname");
  if (new_netns) loopback_up();
  for (int i = 0; i < nsysctls; i++) set_sysctl(sysctls[i]);
  if (shm_size && pod_shm(shm_size) < 0) die("make the pod's shm tmpfs");

  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, NULL);
  pid_t child = fork();
  if (child < 0) die("fork");
  if (child == 0) namespace_init();
  if (shm_size) close(POD_SHM_FD);  // the init's copy is the pod's

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
