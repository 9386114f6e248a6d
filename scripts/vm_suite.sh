#!/usr/bin/env bash
# The VM suites (VM pods through the Controller and Task APIs, through containerd and crictl)
# on every hypervisor this machine has, one after the other: QEMU always (under TCG without
# KVM), Cloud Hypervisor, StratoVirt and Firecracker where they are installed and KVM works
# (StratoVirt also needs vhost-vsock; Firecracker 1.8 or later, whose ACPI tables the guest's
# kernel finds its devices by). A hypervisor that cannot run here is reported with the reason and skipped,
# not failed. Run as root after scripts/setup.sh.
#
#   scripts/vm_suite.sh                      # every hypervisor
#   scripts/vm_suite.sh cloud-hypervisor     # one (KUASAR_TEST_VMM_PATH=<binary> if not in PATH)
#   scripts/vm_suite.sh --template           # QEMU with template = true and template_pool = 1:
#                                            # pods are clones of a template VM, restored or
#                                            # taken from the pool (tests of virtiofs skip)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.tools/bin:$PATH"
SUITE=(tests/integration/vmm_test.ts tests/integration/vmm_late_nics_test.ts
       tests/integration/cri_vmm_test.ts tests/integration/qemu_boot_test.ts
       tests/integration/cgroup_v2_vm_test.ts)
if [ "${1:-}" = --template ]; then
  shift
  export KUASAR_TEST_VM_TEMPLATE=1
  set -- qemu
fi
vmms=("$@")
((${#vmms[@]})) || vmms=(qemu cloud-hypervisor stratovirt firecracker)
deno task guest-image
failed=()
for vmm in "${vmms[@]}"; do
  echo "=== VM suite on $vmm"
  KUASAR_TEST_VMM=$vmm deno test -A --unstable-vsock "${SUITE[@]}" || failed+=("$vmm")
done
if ((${#failed[@]})); then
  echo "VM suite failed on: ${failed[*]}" >&2
  exit 1
fi
