#!/usr/bin/env bash
# The README's second command: installs what the tests need, then runs every
# check and the whole test suite (unit, integration with real runc, and the
# containerd end-to-end suites once their tools are installed).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "the test suite drives runc, mounts and namespaces: run it as root" >&2
  exit 2
fi
scripts/setup.sh "$@"
export PATH="$PWD/.tools/bin:$PATH"
deno fmt --check
deno lint
deno task check
# The microVM tests boot this image (kernel + initramfs with the guest agent); cached.
deno task guest-image
deno task test
