#!/usr/bin/env bash
# Builds the end-to-end tools with Go and caches them in <cache-dir>/bin: containerd, ctr and
# containerd-shim-runc-v2 v2.4.2 (Debian ships containerd 1.6, which has no Sandbox API),
# crictl and critest v1.37.0; and containerd 1.7.35 with its ctr in <cache-dir>/containerd-1.7/bin.
# No release tarballs are reachable from the test machines, only the Go module proxy, so
# everything is `go install`ed (critest is a Go test binary: `go test -c`).
# Idempotent: a binary whose embedded build info (or --version) already names the pinned
# version is kept, so a second run only checks.
set -euo pipefail

CACHE=${1:?usage: $0 <cache-dir>}
BIN=$CACHE/bin
CONTAINERD_VERSION=v2.4.2
CRI_TOOLS_VERSION=v1.37.0
CONTAINERD_MOD=github.com/containerd/containerd/v2
CRI_TOOLS_MOD=sigs.k8s.io/cri-tools

log() { printf '[install_go_tools] %s\n' "$*" >&2; }

GO=$(command -v go || true)
if [ -z "$GO" ] && [ -x /usr/local/go/bin/go ]; then GO=/usr/local/go/bin/go; fi

# has_build_info <binary> <main package> <module> <version>: the binary was built by
# `go install <main package>@<version>`. Go embeds this text in every binary it links; `go
# version -m` prints it, and without Go the same lines are found in the file itself.
has_build_info() {
  local bin=$1 pkg=$2 mod=$3 ver=$4
  [ -x "$bin" ] || return 1
  if [ -n "$GO" ]; then
    "$GO" version -m "$bin" 2>/dev/null | awk -v p="$pkg" -v m="$mod" -v v="$ver" '
      $1 == "path" && $2 == p { a = 1 }
      $1 == "mod" && $2 == m && $3 == v { b = 1 }
      END { exit !(a && b) }'
  else
    grep -qaF "$(printf 'path\t%s\n' "$pkg")" "$bin" &&
      grep -qaF "$(printf 'mod\t%s\t%s\t' "$mod" "$ver")" "$bin"
  fi
}

need_go() {
  [ -n "$GO" ] || { log "Go is not installed (needed to build $1)"; exit 1; }
}

# go_install <name> <main package> <module> <version>
go_install() {
  local name=$1 pkg=$2 mod=$3 ver=$4
  if has_build_info "$BIN/$name" "$pkg" "$mod" "$ver"; then
    log "$name $ver: cached ($BIN/$name)"
    return
  fi
  need_go "$name"
  log "$name $ver: building (go install $pkg@$ver)"
  GOBIN=$BIN "$GO" install "$pkg@$ver"
  has_build_info "$BIN/$name" "$pkg" "$mod" "$ver" || { log "$name: build info mismatch"; exit 1; }
  log "$name $ver: installed"
}

mkdir -p "$BIN"
go_install containerd "$CONTAINERD_MOD/cmd/containerd" "$CONTAINERD_MOD" "$CONTAINERD_VERSION"
go_install ctr "$CONTAINERD_MOD/cmd/ctr" "$CONTAINERD_MOD" "$CONTAINERD_VERSION"
# The runc shim of the same release: containerd's own default runtime, the baseline of the
# benchmarks. Debian's /usr/bin/containerd-shim-runc-v2 is the 1.6 one, two releases behind.
go_install containerd-shim-runc-v2 "$CONTAINERD_MOD/cmd/containerd-shim-runc-v2" \
  "$CONTAINERD_MOD" "$CONTAINERD_VERSION"
go_install crictl "$CRI_TOOLS_MOD/cmd/crictl" "$CRI_TOOLS_MOD" "$CRI_TOOLS_VERSION"

# critest: test binaries carry no module version, so a new build gets it linked in (as the
# Makefile does) and reports it with --version; an older build without it is recognised by
# the module-cache source paths of cri-tools@<version> compiled into it.
critest_ok() {
  local bin=$BIN/critest
  [ -x "$bin" ] || return 1
  # Captured first: `grep -q` would stop reading at the match, and critest's next line (it
  # prints PASS) would then die of SIGPIPE, which pipefail reports as a failure.
  local out
  out=$("$bin" --version 2>/dev/null || true)
  if grep -qxE "critest version: v?${CRI_TOOLS_VERSION#v}" <<<"$out"; then
    return 0
  fi
  grep -qaF "$(printf 'path\t%s/cmd/critest\n' "$CRI_TOOLS_MOD")" "$bin" &&
    grep -qaF "/$CRI_TOOLS_MOD@$CRI_TOOLS_VERSION/" "$bin"
}
if critest_ok; then
  log "critest $CRI_TOOLS_VERSION: cached ($BIN/critest)"
else
  need_go critest
  modcache=$("$GO" env GOMODCACHE)
  src=$modcache/$CRI_TOOLS_MOD@$CRI_TOOLS_VERSION
  if [ ! -f "$src/go.mod" ]; then
    log "critest: downloading $CRI_TOOLS_MOD@$CRI_TOOLS_VERSION"
    scratch=$(mktemp -d)
    (cd "$scratch" && "$GO" mod init kuasar.local/scratch >/dev/null 2>&1 &&
      "$GO" mod download "$CRI_TOOLS_MOD@$CRI_TOOLS_VERSION")
    rm -rf "$scratch"
  fi
  log "critest $CRI_TOOLS_VERSION: building (go test -c ./cmd/critest)"
  work=$(mktemp -d)
  trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
  # The module cache is read-only and has no vendor/ dir: build a writable copy with -mod=mod.
  # The copy keeps the name <module>@<version> so the binary is recognisable as above.
  cp -r "$src" "$work/cri-tools@$CRI_TOOLS_VERSION"
  chmod -R u+w "$work"
  (cd "$work/cri-tools@$CRI_TOOLS_VERSION" &&
    GOFLAGS=-mod=mod "$GO" test -c -o "$BIN/critest.tmp" \
      -ldflags "-X $CRI_TOOLS_MOD/pkg/version.Version=${CRI_TOOLS_VERSION#v}" ./cmd/critest)
  mv -f "$BIN/critest.tmp" "$BIN/critest"
  critest_ok || { log "critest: built binary does not report $CRI_TOOLS_VERSION"; exit 1; }
  log "critest $CRI_TOOLS_VERSION: installed"
fi
# --- containerd 1.7 and its ctr (the shim-mode engine of docs/engines.md), apart from 2.4 ------
# `go install ...@v1.7.x` refuses the module (its go.mod has exclude directives), so both are
# built from a scratch module that requires it: the same sources, the dependency versions its
# go.mod asks for or newer ones where the build list says so.
BIN17=$CACHE/containerd-1.7/bin
CONTAINERD17_VERSION=v1.7.35
CONTAINERD17_MOD=github.com/containerd/containerd
if has_build_info "$BIN17/containerd" "$CONTAINERD17_MOD/cmd/containerd" "$CONTAINERD17_MOD" "$CONTAINERD17_VERSION" &&
  has_build_info "$BIN17/ctr" "$CONTAINERD17_MOD/cmd/ctr" "$CONTAINERD17_MOD" "$CONTAINERD17_VERSION"; then
  log "containerd $CONTAINERD17_VERSION: cached ($BIN17)"
else
  need_go "containerd $CONTAINERD17_VERSION"
  log "containerd $CONTAINERD17_VERSION: building (containerd, ctr)"
  mod17=$(mktemp -d)
  printf 'module kuasar.local/containerd17\n\ngo 1.23\n\nrequire %s %s\n' \
    "$CONTAINERD17_MOD" "$CONTAINERD17_VERSION" >"$mod17/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "%s/cmd/containerd"\n\t_ "%s/cmd/ctr"\n)\n' \
    "$CONTAINERD17_MOD" "$CONTAINERD17_MOD" >"$mod17/tools.go"
  mkdir -p "$BIN17"
  (cd "$mod17" && GOFLAGS=-mod=mod "$GO" mod tidy &&
    GOFLAGS=-mod=mod "$GO" build -o "$BIN17/containerd" "$CONTAINERD17_MOD/cmd/containerd" &&
    GOFLAGS=-mod=mod "$GO" build -o "$BIN17/ctr" "$CONTAINERD17_MOD/cmd/ctr")
  rm -rf "$mod17"
  has_build_info "$BIN17/containerd" "$CONTAINERD17_MOD/cmd/containerd" "$CONTAINERD17_MOD" "$CONTAINERD17_VERSION" ||
    { log "containerd $CONTAINERD17_VERSION: build info mismatch"; exit 1; }
  log "containerd $CONTAINERD17_VERSION: installed ($BIN17)"
fi
# --- Jaeger (an OTLP collector with a query API) for the tracing test, optional ------------------
# `go install` refuses the module (replace directives), so it is built from a scratch module as a
# tool. A failure leaves the tracing test to skip with the reason; nothing else needs it.
JAEGER_BIN=$CACHE/jaeger/bin/jaeger
JAEGER_VERSION=v1.75.0
JAEGER_MOD=github.com/jaegertracing/jaeger
if has_build_info "$JAEGER_BIN" "$JAEGER_MOD/cmd/jaeger" "$JAEGER_MOD" "$JAEGER_VERSION"; then
  log "jaeger $JAEGER_VERSION: cached ($JAEGER_BIN)"
elif [ -z "$GO" ]; then
  log "jaeger $JAEGER_VERSION: not built (no Go); the tracing test will skip"
else
  log "jaeger $JAEGER_VERSION: building (a few minutes)"
  modj=$(mktemp -d)
  printf 'module kuasar.local/jaeger\n\ngo 1.25\n' >"$modj/go.mod"
  mkdir -p "$(dirname "$JAEGER_BIN")"
  if (cd "$modj" && GOFLAGS=-mod=mod "$GO" get -tool "$JAEGER_MOD/cmd/jaeger@$JAEGER_VERSION" &&
    GOFLAGS=-mod=mod "$GO" build -o "$JAEGER_BIN" "$JAEGER_MOD/cmd/jaeger") >&2; then
    log "jaeger $JAEGER_VERSION: installed ($JAEGER_BIN)"
  else
    log "jaeger $JAEGER_VERSION: build failed; the tracing test will skip"
  fi
  rm -rf "$modj"
fi
log "tools in $BIN: $(cd "$BIN" && echo *)"
