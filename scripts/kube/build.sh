#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kubectl v1.20.2 from
# Debian's `kubernetes` source package (bookworm has no binary package for them) and installs etcd,
# Go, containerd and the loopback CNI plugin from Debian. Everything lands in $KUBE_CACHE (outside
# the repository); a second run finds the binaries and does nothing. Cold: about 12 minutes on
# 2 cores.
set -euo pipefail
KUBE_VERSION=1.20.2
KUBE_CACHE=${KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/criteo-mlops/kube-$KUBE_VERSION}
BIN=$KUBE_CACHE/bin
COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)
# Bump when the recipe changes what a binary is: cached binaries of another revision are rebuilt.
# 2: reflect2 1.0.2 (the apiserver no longer dies pretty-printing a map), client-go's version stamped.
BUILD_REV=2

have_all() { for c in "${COMPONENTS[@]}"; do [ -x "$BIN/$c" ] || return 1; done
             [ "$(cat "$BIN/BUILD_REV" 2>/dev/null)" = "$BUILD_REV" ]; }
have_tools() { command -v etcd && command -v openssl && command -v containerd && command -v ctr \
               && [ -x /usr/lib/cni/loopback ]; } >/dev/null
if have_all && have_tools; then
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
# The node: Debian 12's containerd 1.6 and runc; the CNI loopback plugin is the only one it uses.
command -v containerd >/dev/null || missing+=(containerd)
command -v runc >/dev/null || missing+=(runc)
[ -x /usr/lib/cni/loopback ] || missing+=(containernetworking-plugins)
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's etcd-server starts a system service on install; ours are started by scripts/kube/up.py.
$SUDO systemctl disable --now etcd containerd >/dev/null 2>&1 || true
have_all && exit 0
[ "$(cat "$BIN/BUILD_REV" 2>/dev/null)" = "$BUILD_REV" ] || rm -f "${COMPONENTS[@]/#/$BIN/}" "$BIN/BUILD_REV"

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

# The vendored reflect2 v1.0.1 predates Go 1.18's map internals: built with Go 1.19, the apiserver
# dies (SIGSEGV in UnsafeMapType.UnsafeIterate) pretty-printing any object holding a map, which it
# does for curl's and browsers' user agents. Debian's reflect2 1.0.2 is the upstream fix.
R2=vendor/github.com/modern-go/reflect2
if [ ! -f "$R2/go_above_118.go" ]; then
  (cd "$KUBE_CACHE" && rm -rf reflect2-deb && mkdir reflect2-deb && cd reflect2-deb \
     && apt-get download golang-github-modern-go-reflect2-dev >/dev/null 2>&1 && dpkg-deb -x ./*.deb x)
  rm -rf "$R2" && cp -r "$KUBE_CACHE/reflect2-deb/x/usr/share/gocode/src/github.com/modern-go/reflect2" "$R2"
  rm -f "$R2/go.mod"   # GOPATH mode: a go.mod inside vendor/ would be read as a module
fi

# Clients (the kubernetes Python client, the provider, kubectl) read the server version: stamp
# both version packages, as hack/lib/version.sh does (client-go's feeds /version).
LDFLAGS="-s -w"
for V in k8s.io/kubernetes/vendor/k8s.io/component-base/version k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
  LDFLAGS="$LDFLAGS -X $V.gitVersion=v$KUBE_VERSION -X $V.gitMajor=1 -X $V.gitMinor=20 \
 -X $V.gitTreeState=clean -X $V.buildDate=2021-01-13T00:00:00Z"
done
for c in "${COMPONENTS[@]}"; do
  [ -x "$BIN/$c" ] && continue
  echo "building $c"
  go build -ldflags "$LDFLAGS" -o "$BIN/$c.tmp" "./cmd/$c"
  mv "$BIN/$c.tmp" "$BIN/$c"
done
echo "$BUILD_REV" > "$BIN/BUILD_REV"
echo "control plane binaries built in $BIN"
