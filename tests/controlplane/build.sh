#!/usr/bin/env bash
# Builds the control plane the end-to-end tests run on, from the Go module proxy only (no Docker, no
# release downloads): etcd, kube-apiserver, kube-controller-manager, kubectl (at the server's version)
# and helm. Prints the folder holding them on its last line; everything else goes to stderr.
#
#   bash tests/controlplane/build.sh          # cold: minutes (downloads, ~20 CPU-minutes of compiling); warm: ~0.05 s
#   bash tests/controlplane/build.sh --force  # rebuild this version's binaries
#
# Where: ${DATAOPS_CACHE:-$HOME/.cache/dataops}/controlplane/<version-key>/bin, with the Go module cache
# (~1.4 GB) and build cache (~3.5 GB) beside it, shared by every version key. The key changes when a
# go.mod, go.sum, main package, pinned version or the Go toolchain changes, so stale binaries are never
# reused. KUBEBUILDER_ASSETS (the envtest convention), when it names a folder holding some of these
# binaries, is honoured: those are used as they are and only the missing ones are built; the printed
# folder then holds links to both.
#
# Needs: Go >= 1.21 (one older than 1.26 fetches the 1.26 toolchain that etcd and helm ask for, through
# the module proxy: GOTOOLCHAIN=auto, the default) and the module proxy (GOPROXY). Nothing else.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
HELM_VERSION="v3.22.0"
# helm's own Makefile stamps the Kubernetes version it renders for (.Capabilities.KubeVersion) from its
# client-go (v0.37 -> 1.37); a plain `go install` would leave helm's default of 1.20.
HELM_KUBE_MINOR="37"
NAMES=(etcd kube-apiserver kube-controller-manager kubectl helm)

die() {
  echo "error: $*" >&2
  exit 1
}

command -v go >/dev/null || die "\`go\` is not on PATH: the test control plane is built with Go >= 1.21 \
(https://go.dev/doc/install; an older one than 1.26 fetches the 1.26 toolchain through the module proxy), \
with GOPROXY reaching the Go module proxy"

required() { # module go.mod: the version go.mod requires, in a require block or on one line
  awk -v m="$1" '$1 == m { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$2"
}
KUBE_VERSION="$(required k8s.io/kubernetes "$HERE/go.mod")"
[[ "$KUBE_VERSION" =~ ^v([0-9]+)\.([0-9]+)\.[0-9]+$ ]] || die "cannot read k8s.io/kubernetes's version in $HERE/go.mod"
KUBE_MAJOR="${BASH_REMATCH[1]}"
KUBE_MINOR="${BASH_REMATCH[2]}"
ETCD_VERSION="$(required go.etcd.io/etcd/server/v3 "$HERE/cmd/etcd/go.mod")"
[[ -n "$ETCD_VERSION" ]] || die "cannot read go.etcd.io/etcd/server/v3's version in $HERE/cmd/etcd/go.mod"

# kubectl (and client libraries) refuse a server whose /version is the default "v0.0.0-master".
KUBE_LDFLAGS="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  KUBE_LDFLAGS+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$KUBE_MAJOR -X $pkg.gitMinor=$KUBE_MINOR"
  KUBE_LDFLAGS+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
HELM_LDFLAGS="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  HELM_LDFLAGS+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$HELM_KUBE_MINOR"
done

GO_VERSION="$(go env GOVERSION)"
KEY_INPUT="$(cd "$HERE" && cat go.mod go.sum cmd/etcd/go.mod cmd/etcd/go.sum cmd/*/main.go
  echo "$HELM_VERSION $GO_VERSION $KUBE_LDFLAGS $HELM_LDFLAGS")"
HASH="$(printf '%s' "$KEY_INPUT" | sha256sum | cut -c1-12)"
KEY="kube-$KUBE_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION-$HASH"

ROOT="${DATAOPS_CACHE:-$HOME/.cache/dataops}/controlplane"
BIN="$ROOT/$KEY/bin"
export GOMODCACHE="$ROOT/gomod"
export GOCACHE="$ROOT/gocache"
export GOFLAGS="-modcacherw -buildvcs=false"  # a removable module cache; no VCS stamp from our clone
export CGO_ENABLED=0          # static binaries, no C toolchain needed
export GOWORK=off

mkdir -p "$BIN"
# One build at a time (make and a pytest fixture may both call this).
exec 9>"$ROOT/.lock"
flock 9

if [[ "${1:-}" == "--force" ]]; then
  rm -f "${BIN:?}"/*
fi

build() { # name: builds $BIN/name unless it is there, through a temporary name so a half build never counts
  local name="$1" tmp="$BIN/.$1.partial" started=$SECONDS
  [[ -x "$BIN/$name" ]] && return 0
  echo "building $name (cache: $ROOT)..." >&2
  case "$name" in
    etcd)
      (cd "$HERE/cmd/etcd" && go build -trimpath -ldflags "-s -w" -o "$tmp" .) ;;
    kube-apiserver | kube-controller-manager | kubectl)
      (cd "$HERE" && go build -trimpath -ldflags "$KUBE_LDFLAGS" -o "$tmp" "./cmd/$name") ;;
    helm)
      # helm's module pins k8s.io/* v0.37, which cannot share a build list with kube v1.34: its own build.
      local gobin="$BIN/.helm-gobin"
      rm -rf "$gobin"
      (cd "$HERE" && GOBIN="$gobin" go install -trimpath -ldflags "$HELM_LDFLAGS" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION")
      mv "$gobin/helm" "$tmp"
      rmdir "$gobin" ;;
  esac
  mv -f "$tmp" "$BIN/$name"
  echo "built $name in $((SECONDS - started)) s" >&2
}

# KUBEBUILDER_ASSETS counts when it holds etcd and kube-apiserver; then each binary found there is used
# as it is (envtest's folders also hold kubectl) and only the others are built.
ASSETS="${KUBEBUILDER_ASSETS:-}"
in_assets() { [[ -n "$ASSETS" && -x "$ASSETS/$1" && ! -d "$ASSETS/$1" ]]; }
if [[ -n "$ASSETS" ]] && ! { in_assets etcd && in_assets kube-apiserver; }; then
  echo "KUBEBUILDER_ASSETS=$ASSETS holds no etcd and kube-apiserver: building them" >&2
  ASSETS=""
fi

for name in "${NAMES[@]}"; do
  in_assets "$name" || build "$name"
done

OUT="$BIN"
if [[ -n "$ASSETS" ]]; then
  ASSETS="$(cd "$ASSETS" && pwd)"
  OUT="$ROOT/$KEY/assets-$(printf '%s' "$ASSETS" | sha256sum | cut -c1-12)"
  mkdir -p "$OUT"
  for name in "${NAMES[@]}"; do
    if in_assets "$name"; then src="$ASSETS/$name"; else src="$BIN/$name"; fi
    ln -sfn "$src" "$OUT/$name"
  done
  echo "using etcd and kube-apiserver from KUBEBUILDER_ASSETS=$ASSETS" >&2
fi
echo "$OUT"
