// kuasar-helper probe-kvm: whether KVM can run a guest here, not only whether
// /dev/kvm opens. Some hosts (nested setups without VMX passed through) let a
// process create a VM and a vCPU whose first instruction then never returns.
// So a one-page guest runs a single HLT, under alarm(2): exit 0 and "ok …"
// when the vCPU stops at the HLT, exit 1 and the reason otherwise.
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "helper.h"

// From <linux/kvm.h> (musl builds without the kernel headers).
#define KVM_GET_API_VERSION 0xAE00
#define KVM_CREATE_VM 0xAE01
#define KVM_GET_VCPU_MMAP_SIZE 0xAE04
#define KVM_CREATE_VCPU 0xAE41
#define KVM_SET_USER_MEMORY_REGION 0x4020AE46
#define KVM_RUN 0xAE80
#define KVM_API_VERSION 12
#define KVM_EXIT_HLT 5

struct kvm_userspace_memory_region {
  uint32_t slot;
  uint32_t flags;
  uint64_t guest_phys_addr;
  uint64_t memory_size;
  uint64_t userspace_addr;
};

static void on_alarm(int sig) { (void)sig; }

static int fail(const char *what) {
  dprintf(1, "fail %s: %s\n", what, strerror(errno));
  return 1;
}

int cmd_probe_kvm(void) {
  int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) return fail("open /dev/kvm");
  int api = ioctl(kvm, KVM_GET_API_VERSION, 0);
  if (api != KVM_API_VERSION) {
    dprintf(1, "fail KVM API version %d, expected %d\n", api, KVM_API_VERSION);
    return 1;
  }
  int vm = ioctl(kvm, KVM_CREATE_VM, 0);
  if (vm < 0) return fail("KVM_CREATE_VM");
  // After reset a vCPU fetches from 0xfffffff0 (CS base 0xffff0000, IP 0xfff0):
  // map the top 64 KiB of the 4 GiB space with a HLT there.
  size_t size = 0x10000;
  uint8_t *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return fail("mmap guest memory");
  memset(mem, 0xf4, size);  // hlt everywhere
  struct kvm_userspace_memory_region region = {
      .slot = 0, .guest_phys_addr = 0xffff0000, .memory_size = size,
      .userspace_addr = (uint64_t)(uintptr_t)mem};
  if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) return fail("KVM_SET_USER_MEMORY_REGION");
  int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
  if (vcpu < 0) return fail("KVM_CREATE_VCPU");
  int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  if (run_size <= 0) return fail("KVM_GET_VCPU_MMAP_SIZE");
  uint8_t *run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
  if (run == MAP_FAILED) return fail("mmap kvm_run");
  struct sigaction sa = {0};
  sa.sa_handler = on_alarm;  // no SA_RESTART: the alarm interrupts KVM_RUN
  sigaction(SIGALRM, &sa, NULL);
  alarm(3);
  if (ioctl(vcpu, KVM_RUN, 0) < 0) {
    if (errno == EINTR) {
      dprintf(1, "fail a vCPU did not reach its first HLT in 3 s (no usable VMX/SVM?)\n");
      return 1;
    }
    return fail("KVM_RUN");
  }
  alarm(0);
  uint32_t reason;
  memcpy(&reason, run + 8, sizeof reason);  // struct kvm_run: exit_reason after 8 bytes
  if (reason != KVM_EXIT_HLT) {
    dprintf(1, "fail the test vCPU exited with reason %u, expected HLT (%d)\n", reason,
            KVM_EXIT_HLT);
    return 1;
  }
  dprintf(1, "ok KVM API %d: a test vCPU ran to its HLT\n", api);
  return 0;
}
