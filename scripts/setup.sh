#!/usr/bin/env bash
# Installs everything kuasar needs to build, run and test on a Debian/Ubuntu node:
# Debian packages, a pinned Deno (from the npm registry) under .tools/, the project's
# npm dependencies, and containerd 2.x, crictl and critest built with Go (a failure there is
# only a warning, as the containerd end-to-end tests then skip; with --e2e it is an error).
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DENO_VERSION=2.9.6
TOOLS_CACHE=${KUASAR_TOOLS_CACHE:-$HOME/.cache/kuasar-tools}

want_e2e=0
for a in "$@"; do
  case "$a" in
    --e2e) want_e2e=1 ;;
    *) echo "usage: $0 [--e2e]" >&2; exit 2 ;;
  esac
done

log() { printf '[setup] %s\n' "$*" >&2; }

# --- Debian packages -------------------------------------------------------------
PKGS=(runc runsc crun containerd busybox-static containernetworking-plugins iproute2
      util-linux procps psmisc protobuf-compiler musl-tools wabt clang lld wasi-libc
      libclang-rt-14-dev-wasm32 qemu-system-x86 qemu-utils cpio jq socat kmod lz4 zstd)
# shellcheck source=debian_packages.sh
. "$ROOT/scripts/debian_packages.sh"
install_debian_packages "${PKGS[@]}"

# --- Deno (pinned, from the npm registry) ----------------------------------------------
if ! "$ROOT/.tools/bin/deno" --version 2>/dev/null | grep -q "^deno $DENO_VERSION "; then
  log "installing deno $DENO_VERSION from the npm registry"
  rm -rf "$ROOT/.tools/npm"
  mkdir -p "$ROOT/.tools/npm" "$ROOT/.tools/bin"
  npm install --prefix "$ROOT/.tools/npm" --no-audit --no-fund --silent "deno@$DENO_VERSION"
  bin=$(find "$ROOT/.tools/npm/node_modules/@deno" -maxdepth 2 -type f -name deno | head -n1)
  [ -x "$bin" ] || { echo "deno binary not found in the npm package" >&2; exit 1; }
  ln -sf "$bin" "$ROOT/.tools/bin/deno"
fi
"$ROOT/.tools/bin/deno" --version | head -n1 >&2

# --- protobuf generator: pinned ts-proto (npm) and protoc (PyPI grpcio-tools) ---------
if [ ! -x scripts/proto/node_modules/.bin/protoc-gen-ts_proto ]; then
  log "installing the pinned protobuf generator"
  npm ci --prefix scripts/proto --no-audit --no-fund --silent
fi
if ! .tools/protoc-venv/bin/python -c 'import grpc_tools' 2>/dev/null; then
  log "installing protoc (grpcio-tools) into .tools/protoc-venv"
  rm -rf .tools/protoc-venv
  python3 -m venv .tools/protoc-venv
  .tools/protoc-venv/bin/pip install -q --disable-pip-version-check grpcio-tools==1.85.1
fi

# --- npm dependencies of the project (deno.lock pins them) ------------------------------
"$ROOT/.tools/bin/deno" install --frozen >/dev/null

# --- containerd 2.x, crictl, critest (Go, cached) ---------------------------------------
if ! "$ROOT/scripts/install_go_tools.sh" "$TOOLS_CACHE"; then
  ((want_e2e)) && exit 1
  log "warning: containerd/crictl/critest are not installed; the containerd e2e tests will skip"
fi
# --- Wasmtime's C library for the wasmtime Wasm engine (PyPI wheel, cached) -------------
if ! wasmtime_lib=$("$ROOT/scripts/install_wasmtime.sh" "$TOOLS_CACHE") || [ -z "$wasmtime_lib" ]; then
  log "warning: libwasmtime is not installed; the wasmtime engine's tests will skip"
fi
log "ok"
