#!/usr/bin/env bash
# Builds a single-node Kubernetes control plane for the end-to-end suite (tests/k8s/) and
# caches it in <cache-dir>/kubernetes-<version>/bin: kubelet, kube-apiserver, kubectl and etcd.
# No release tarballs are reachable from the test machines, only the Go module proxy: the
# binaries are built from a scratch module requiring k8s.io/kubernetes, whose staging modules
# (k8s.io/api, client-go, ...) are replaced by their published v0.<minor>.<patch> releases, as
# its own go.mod replaces them by ./staging. etcd builds in the same module, at the version
# Kubernetes requires. ~8 min on 2 cores the first time; a second run only checks.
# Exit 0: all four are there. Exit 3: Go or the module proxy is not there (the reason is left in
# <dir>/unavailable, which the suite's skip message shows). Exit 1: the build failed.
set -euo pipefail

CACHE=${1:?usage: $0 <cache-dir>}
K8S_VERSION=v1.37.2
STAGING_VERSION=v0.${K8S_VERSION#v1.}
DIR=$CACHE/kubernetes-$K8S_VERSION
BIN=$DIR/bin
K8S_MOD=k8s.io/kubernetes
ETCD_MOD=go.etcd.io/etcd/server/v3

log() { printf '[install_k8s_tools] %s\n' "$*" >&2; }

GO=$(command -v go || true)
if [ -z "$GO" ] && [ -x /usr/local/go/bin/go ]; then GO=/usr/local/go/bin/go; fi

# built_by <binary> <module>: its main package is from <module> at the pinned version (Go embeds
# `mod <module> <version>`; without Go the same text is in the file). etcd's is the version
# Kubernetes requires, recorded in <dir>/etcd-version when it was built.
built_by() {
  local bin=$1 mod=$2 ver=$3
  [ -x "$bin" ] || return 1
  grep -qaF "$(printf 'mod\t%s\t%s\t' "$mod" "$ver")" "$bin"
}

all_cached() {
  local p
  for p in kubelet kube-apiserver kubectl; do built_by "$BIN/$p" "$K8S_MOD" "$K8S_VERSION" || return 1; done
  [ -f "$DIR/etcd-version" ] && built_by "$BIN/etcd" "$ETCD_MOD" "$(cat "$DIR/etcd-version")"
}

# unavailable <reason>: nothing to build with; the suite skips, saying why.
unavailable() {
  mkdir -p "$DIR"
  printf '%s\n' "$1" >"$DIR/unavailable"
  log "$1"
  exit 3
}

if all_cached; then
  rm -f "$DIR/unavailable"
  log "kubernetes $K8S_VERSION: cached ($BIN)"
  exit 0
fi
[ -n "$GO" ] || unavailable "Go is not installed (needed to build kubernetes $K8S_VERSION)"

work=$(mktemp -d)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
log "kubernetes $K8S_VERSION: resolving modules"
# Kubernetes' go.mod names its staging modules (`k8s.io/x => ./staging/src/k8s.io/x`): each is
# published as k8s.io/x at v0.<minor>.<patch>.
k8s_gomod=$(cd "$work" && "$GO" mod download -json "$K8S_MOD@$K8S_VERSION" |
  sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p') || true
[ -f "$k8s_gomod" ] ||
  unavailable "the Go module proxy did not serve $K8S_MOD@$K8S_VERSION ($("$GO" env GOPROXY))"
staging=$(sed -n 's#^\t\(k8s\.io/[a-z0-9-]*\) => \./staging/.*#\1#p' "$k8s_gomod")
[ -n "$staging" ] || { log "no staging modules found in $k8s_gomod"; exit 1; }
{
  printf 'module kuasar.local/kubernetes\n\ngo 1.26\n\nrequire %s %s\n\n' "$K8S_MOD" "$K8S_VERSION"
  for m in $staging; do printf 'replace %s => %s %s\n' "$m" "$m" "$STAGING_VERSION"; done
} >"$work/go.mod"
printf '//go:build tools\n\npackage tools\n\nimport (\n' >"$work/tools.go"
for p in kubelet kube-apiserver kubectl; do printf '\t_ "%s/cmd/%s"\n' "$K8S_MOD" "$p" >>"$work/tools.go"; done
printf '\t_ "%s"\n)\n' "$ETCD_MOD" >>"$work/tools.go"

# The version the binaries report (kubectl version, the node's kubeletVersion), as a release
# build sets it.
minor=${K8S_VERSION#v1.}
minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean"
done

mkdir -p "$BIN"
(
  cd "$work"
  export GOFLAGS=-mod=mod
  "$GO" mod tidy >&2
  for p in kubelet kube-apiserver kubectl; do
    log "kubernetes $K8S_VERSION: building $p"
    "$GO" build -trimpath -ldflags "$ldflags" -o "$BIN/$p.tmp" "$K8S_MOD/cmd/$p"
    mv -f "$BIN/$p.tmp" "$BIN/$p"
  done
  etcd_version=$("$GO" list -m -f '{{.Version}}' "$ETCD_MOD")
  log "kubernetes $K8S_VERSION: building etcd ($etcd_version)"
  "$GO" build -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" "$ETCD_MOD"
  mv -f "$BIN/etcd.tmp" "$BIN/etcd"
  printf '%s\n' "$etcd_version" >"$DIR/etcd-version"
) || { log "kubernetes $K8S_VERSION: build failed"; exit 1; }
all_cached || { log "kubernetes $K8S_VERSION: built binaries lack the pinned version"; exit 1; }
rm -f "$DIR/unavailable"
log "kubernetes $K8S_VERSION: installed ($BIN)"
