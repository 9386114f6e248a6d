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
# --- gVisor: a current runsc and gVisor's own containerd shim, optional ------------------------
# Debian's runsc is a 2022 build (no netstack in a CNI netns on this kernel, no systrap). The suites
# and the bench use this one when it is here (tests/support/env.ts TEST_RUNSC), and the bench runs
# containerd-shim-runsc-v1 beside the gVisor sandboxer. Static, as gVisor releases it: the sandbox
# re-executes /proc/self/exe inside a chroot that has no dynamic loader (a cgo build fails there
# with "error executing umounter: ... no such file or directory").
GVISOR_VERSION=v0.0.0-20260905035102-160fafc42237
GVISOR_MOD=gvisor.dev/gvisor
GVBIN=$CACHE/gvisor/bin
# The shim sets its own OOM score to -999 and fails to start when it cannot, which needs
# CAP_SYS_RESOURCE; root on these machines lacks it (containerd's runc shim only raises its score).
# The shim is built with that one failure ignored (not logged: what `shim start` prints is read
# by containerd as its address), nothing else changed; the stamp records version and change.
SHIM_OOM_FROM='return shim.BootstrapParams{}, fmt.Errorf("failed to set OOM Score on shim: %w", err)'
SHIM_OOM_TO='_ = err'
SHIM_STAMP="$GVISOR_VERSION oom-score-error-ignored"
static_go() { # static_go <binary>: built with CGO_ENABLED=0
  if [ -n "$GO" ]; then "$GO" version -m "$1" 2>/dev/null | grep -qP '^\s*build\s+CGO_ENABLED=0$'
  else grep -qaF "$(printf 'build\tCGO_ENABLED=0\n')" "$1"; fi
}
gvisor_ok() {
  has_build_info "$GVBIN/runsc" "$GVISOR_MOD/runsc" "$GVISOR_MOD" "$GVISOR_VERSION" &&
    static_go "$GVBIN/runsc" && [ -x "$GVBIN/containerd-shim-runsc-v1" ] &&
    [ "$(cat "$GVBIN/containerd-shim-runsc-v1.stamp" 2>/dev/null)" = "$SHIM_STAMP" ]
}
build_gvisor() {
  local tmp=$1
  CGO_ENABLED=0 GOBIN=$tmp "$GO" install "$GVISOR_MOD/runsc@$GVISOR_VERSION" >&2 || return 1
  local src
  src=$("$GO" env GOMODCACHE)/$GVISOR_MOD@$GVISOR_VERSION
  cp -r "$src" "$tmp/gvisor" && chmod -R u+w "$tmp/gvisor"
  local f=$tmp/gvisor/pkg/shim/v1/manager.go
  grep -qF "$SHIM_OOM_FROM" "$f" || { log "gVisor's shim: the OOM-score line moved"; return 1; }
  FROM=$SHIM_OOM_FROM TO=$SHIM_OOM_TO perl -0pi -e 's/\Q$ENV{FROM}\E/$ENV{TO}/' "$f"
  (cd "$tmp/gvisor" && CGO_ENABLED=0 GOFLAGS=-mod=mod "$GO" build -o "$tmp/shim" ./shim) >&2 ||
    return 1
  mkdir -p "$GVBIN"
  mv -f "$tmp/runsc" "$GVBIN/runsc"
  mv -f "$tmp/shim" "$GVBIN/containerd-shim-runsc-v1"
  echo "$SHIM_STAMP" >"$GVBIN/containerd-shim-runsc-v1.stamp"
}
if gvisor_ok; then
  log "runsc $GVISOR_VERSION: cached ($GVBIN)"
elif [ -z "$GO" ]; then
  log "runsc $GVISOR_VERSION: not built (no Go); the suites use the runsc on PATH"
else
  log "runsc $GVISOR_VERSION: building runsc and containerd-shim-runsc-v1 (a few minutes)"
  gvtmp=$(mktemp -d)
  build_gvisor "$gvtmp" || true
  chmod -R u+w "$gvtmp" 2>/dev/null; rm -rf "$gvtmp"
  if gvisor_ok; then log "runsc $GVISOR_VERSION: installed ($GVBIN)"
  else log "runsc $GVISOR_VERSION: build failed; the suites use the runsc on PATH"; fi
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
