// kuasar-helper reseed: a VM restored from a template makes its kernel's random number
// generator its own. Every clone starts with the template's generator state, so without this
// they would all draw the same numbers (and the same boot_id, keys, ASLR of new processes)
// until the kernel reseeds by itself, up to a minute later. The host's random bytes on stdin
// (16 to 512) go into the input pool with full credit (RNDADDENTROPY), then the generator is
// reseeded from the pool at once (RNDRESEEDCRNG). Needs CAP_SYS_ADMIN (the agent is PID 1).
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "helper.h"

// From <linux/random.h> (musl builds without the kernel headers).
#define RNDADDENTROPY 0x40085203
#define RNDRESEEDCRNG 0x5207
#define MAX_SEED 512

struct seed {
  int entropy_count;  // bits
  int buf_size;       // bytes
  uint8_t buf[MAX_SEED];
};

int cmd_reseed(void) {
  struct seed s = {0};
  size_t n = 0;
  while (n < MAX_SEED) {
    ssize_t r = read(0, s.buf + n, MAX_SEED - n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      dprintf(2, "reseed: read: %s\n", strerror(errno));
      return 1;
    }
    if (r == 0) break;
    n += (size_t)r;
  }
  if (n < 16) {
    dprintf(2, "reseed: %zu bytes on stdin, at least 16 needed\n", n);
    return 2;
  }
  s.buf_size = (int)n;
  s.entropy_count = (int)n * 8;
  int fd = open("/dev/random", O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    dprintf(2, "reseed: open /dev/random: %s\n", strerror(errno));
    return 1;
  }
  if (ioctl(fd, RNDADDENTROPY, &s) < 0) {
    dprintf(2, "reseed: RNDADDENTROPY: %s\n", strerror(errno));
    return 1;
  }
  if (ioctl(fd, RNDRESEEDCRNG) < 0) {
    dprintf(2, "reseed: RNDRESEEDCRNG: %s\n", strerror(errno));
    return 1;
  }
  close(fd);
  explicit_bzero(s.buf, sizeof s.buf);
  dprintf(1, "ok %zu bytes added, generator reseeded\n", n);
  return 0;
}
