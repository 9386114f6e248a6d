#!/usr/bin/env bash
# Builds runwasi's Wasmtime shim (containerd-shim-wasmtime-v1), the peer of the Wasm sandboxer in
# `deno task bench wasm-cri`, and caches it in <cache-dir>/runwasi/bin; prints its path on stdout.
# Its source is third_party/runwasi-wasmtime-shim (the binary crate is not published; its
# dependencies come from crates.io, pinned by the Cargo.lock there). One cargo build, 30-50
# minutes on 2 CPUs; the cached binary is kept while the source and lock are unchanged (a stamp
# of their sha256). Without cargo, or with --cached-only and nothing cached, nothing is printed
# and the bench says runwasi is missing.
set -euo pipefail

CACHE=${1:?usage: $0 <cache-dir> [--cached-only]}
CACHED_ONLY=${2:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SRC=$ROOT/third_party/runwasi-wasmtime-shim
DEST=$CACHE/runwasi/bin/containerd-shim-wasmtime-v1
STAMP=$DEST.stamp

log() { printf '[install_runwasi] %s\n' "$*" >&2; }

stamp=$(cd "$SRC" && find . -type f \( -name '*.rs' -o -name Cargo.toml -o -name Cargo.lock \) \
  -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
if [ -x "$DEST" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$stamp" ]; then
  log "cached ($DEST)"
  printf '%s\n' "$DEST"
  exit 0
fi

if [ "$CACHED_ONLY" = --cached-only ]; then
  log "not built yet (and --cached-only)"
  exit 0
fi

CARGO=$(command -v cargo || true)
if [ -z "$CARGO" ] && [ -x "$HOME/.cargo/bin/cargo" ]; then CARGO=$HOME/.cargo/bin/cargo; fi
if [ -z "$CARGO" ]; then
  log "cargo is not installed: runwasi's shim cannot be built here"
  exit 0
fi

# libcontainer (runwasi's container runner) links libseccomp; its -sys crates find it with
# pkg-config.
# shellcheck source=debian_packages.sh
. "$ROOT/scripts/debian_packages.sh"
install_debian_packages libseccomp-dev pkg-config

# The build tree stays in the cache: a second build (after a change) reuses what it can.
export CARGO_TARGET_DIR=$CACHE/runwasi/target
log "building containerd-shim-wasmtime-v1 with $("$CARGO" --version) (30-50 min on 2 CPUs)"
(cd "$SRC" && "$CARGO" build --release --locked --bin containerd-shim-wasmtime-v1)
mkdir -p "$(dirname "$DEST")"
install -m 0755 "$CARGO_TARGET_DIR/release/containerd-shim-wasmtime-v1" "$DEST.tmp"
mv "$DEST.tmp" "$DEST"
printf '%s\n' "$stamp" > "$STAMP"
log "installed $DEST"
printf '%s\n' "$DEST"
