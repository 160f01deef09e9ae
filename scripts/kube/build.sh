#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager and kube-scheduler v1.20.2 from Debian's
# `kubernetes` source package (bookworm has no binary package for them) and installs etcd and Go
# from Debian. Everything lands in $KUBE_CACHE (outside the repository); a second run finds the
# binaries and does nothing. Cold: about 10 minutes on 2 cores. See shared/PRODUCTION.md.
set -euo pipefail
KUBE_VERSION=1.20.2
KUBE_CACHE=${KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/criteo-mlops/kube-$KUBE_VERSION}
BIN=$KUBE_CACHE/bin
COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler)

have_all() { for c in "${COMPONENTS[@]}"; do [ -x "$BIN/$c" ] || return 1; done; }
if have_all && command -v etcd >/dev/null && command -v openssl >/dev/null; then
  echo "control plane binaries cached in $BIN"; exit 0
fi
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
mkdir -p "$KUBE_CACHE" "$BIN"

# etcd and Go as Debian binary packages; dpkg-dev unpacks the source package.
missing=()
command -v etcd >/dev/null || missing+=(etcd-server)
command -v openssl >/dev/null || missing+=(openssl)
command -v dpkg-source >/dev/null || missing+=(dpkg-dev)
[ -x /usr/lib/go-1.19/bin/go ] || missing+=(golang-1.19-go)
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's etcd-server starts a system service on install; ours are started by scripts/kube/up.py.
$SUDO systemctl disable --now etcd >/dev/null 2>&1 || true
have_all && exit 0

# The source package, through a private apt setup that mirrors the machine's sources as deb-src:
# the system's own apt configuration stays untouched.
APT=$KUBE_CACHE/apt
SRC=$KUBE_CACHE/src
if [ ! -d "$SRC/kubernetes" ]; then
  mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$APT/sources.list.d" "$SRC"
  : > "$APT/sources.list"
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -e "$f" ] || continue
    sed -e 's/^Types: .*/Types: deb-src/' "$f" > "$APT/sources.list.d/$(basename "$f")"
  done
  if [ -f /etc/apt/sources.list ]; then
    grep -E '^deb ' /etc/apt/sources.list | sed 's/^deb /deb-src /' >> "$APT/sources.list" || true
  fi
  APT_OPTS=(-o Dir::Etc::sourcelist="$APT/sources.list" -o Dir::Etc::sourceparts="$APT/sources.list.d"
            -o Dir::State::Lists="$APT/lists" -o Dir::Cache="$APT/cache" -o APT::Sandbox::User=root)
  apt-get "${APT_OPTS[@]}" update -qq
  (cd "$SRC" && apt-get "${APT_OPTS[@]}" source --download-only kubernetes -qq)
  (cd "$SRC" && dpkg-source --no-check -x kubernetes_*.dsc unpacked >/dev/null && mv unpacked kubernetes)
fi

# GOPATH mode: the tree at $GOPATH/src/k8s.io/kubernetes with its vendor/ (module mode fails with
# "updates to go.mod needed").
export GOPATH=$KUBE_CACHE/gopath GOCACHE=$KUBE_CACHE/gocache
export GO111MODULE=off GOPROXY=off CGO_ENABLED=0 GOFLAGS=
export PATH=/usr/lib/go-1.19/bin:$PATH
mkdir -p "$GOPATH/src/k8s.io"
ln -sfn "$SRC/kubernetes" "$GOPATH/src/k8s.io/kubernetes"
cd "$GOPATH/src/k8s.io/kubernetes"

# 1.20's tree lacks the generated OpenAPI definitions the apiserver needs.
OPENAPI=pkg/generated/openapi/zz_generated.openapi.go
if [ "$(grep -c '^func schema_' "$OPENAPI" 2>/dev/null || echo 0)" -lt 500 ]; then
  go build -o "$KUBE_CACHE/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
  # vendor/k8s.io/* are symlinks into staging/: scan staging, name the packages as vendored ones.
  inputs=$( { grep -rl --include='*.go' '+k8s:openapi-gen=' pkg staging/src/k8s.io 2>/dev/null || true; } \
            | xargs -n1 dirname | sed 's|^staging/src/|vendor/|' | LC_ALL=C sort -u \
            | sed 's|^|k8s.io/kubernetes/|' | paste -sd, -)
  "$KUBE_CACHE/openapi-gen" --logtostderr -v 1 -i "$inputs" \
      -p k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi \
      -h hack/boilerplate/boilerplate.generatego.txt -r /dev/null \
      -o "$GOPATH/src" 2> "$KUBE_CACHE/openapi-gen.log" \
    || { tail -20 "$KUBE_CACHE/openapi-gen.log"; exit 1; }
fi

# Clients (the kubernetes Python client, the provider) read the server version: stamp it.
V=k8s.io/kubernetes/vendor/k8s.io/component-base/version
LDFLAGS="-s -w -X $V.gitVersion=v$KUBE_VERSION -X $V.gitMajor=1 -X $V.gitMinor=20 \
 -X $V.gitTreeState=clean -X $V.buildDate=2021-01-13T00:00:00Z"
for c in "${COMPONENTS[@]}"; do
  [ -x "$BIN/$c" ] && continue
  echo "building $c"
  go build -ldflags "$LDFLAGS" -o "$BIN/$c.tmp" "./cmd/$c"
  mv "$BIN/$c.tmp" "$BIN/$c"
done
echo "control plane binaries built in $BIN"
