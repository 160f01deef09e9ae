#!/usr/bin/env bash
# The container engine of the project's machines: Debian 12's Podman, as root, serving the Docker
# API on a socket of its own, for `make images`, `make test-containers` and docker-compose.
#
#   scripts/containers/engine.sh up      install (Debian packages), configure, start the API service
#   scripts/containers/engine.sh down    stop every container, the service and the health loop;
#                                        leaves no process or mount behind (images stay cached)
#   scripts/containers/engine.sh env     the variables a shell needs: eval "$(... env)"
#   scripts/containers/engine.sh check-stopped   fails if a process or mount of the engine is left
#
# Its state lives outside the repository (CRITEO_ENGINE_ROOT, default ~/.cache/criteo-mlops/engine):
# the storage there is the image cache that later runs reuse. Why each setting (measured on these
# machines, see docs/containers.md):
# - runc, not crun: crun 1.8 refuses this machine's hybrid cgroup layout; cgroupfs, not systemd
#   (there is none); the events log in a file.
# - default_ulimits: root here cannot raise its limits, and every container would otherwise fail
#   in setrlimit.
# - host networking only, for RUN steps too: no bridge, no CNI network, no private-range address.
#   The CNI plugin folder is empty on purpose, so nothing can create one.
# - no registry: unqualified names are refused, every base is built here (scripts/containers/bases.sh).
# - healthchecks need systemd's timers under Podman; a small loop runs them every 2 s instead, so
#   compose's `depends_on: condition: service_healthy` works.
set -euo pipefail

ROOT=${CRITEO_ENGINE_ROOT:-$HOME/.cache/criteo-mlops/engine}
SOCK=$ROOT/podman.sock
RUN=$ROOT/run

env_lines() {
    cat <<ENV
export CONTAINERS_CONF=$ROOT/conf/containers.conf
export CONTAINERS_STORAGE_CONF=$ROOT/conf/storage.conf
export CONTAINERS_REGISTRIES_CONF=$ROOT/conf/registries.conf
export DOCKER_HOST=unix://$SOCK
export CRITEO_ENGINE_ROOT=$ROOT
ENV
}

install() {
    local missing=()
    for cmd in podman runc catatonit debootstrap docker-compose; do
        command -v "$cmd" >/dev/null || missing+=("$cmd")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "engine: installing ${missing[*]} from Debian" >&2
    local sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        podman runc catatonit debootstrap docker-compose >/dev/null
}

configure() {
    mkdir -p "$ROOT/conf/cni" "$ROOT/conf/no-cni-plugins" "$RUN"
    local nofile
    nofile=$(ulimit -Hn)
    cat > "$ROOT/conf/containers.conf" <<CONF
[containers]
netns = "host"
default_ulimits = ["nofile=$nofile:$nofile", "nproc=32768:32768"]
init_path = "$(command -v catatonit)"
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$RUN/events.log"
tmp_dir = "$RUN/libpod"
runtime = "runc"
[network]
network_backend = "cni"
network_config_dir = "$ROOT/conf/cni"
cni_plugin_dirs = ["$ROOT/conf/no-cni-plugins"]
CONF
    local driver=overlay
    [ "${CRITEO_ENGINE_STORAGE:-}" = vfs ] && driver=vfs
    printf '[storage]\ndriver = "%s"\nrunroot = "%s/storage-run"\ngraphroot = "%s/storage"\n' \
        "$driver" "$RUN" "$ROOT" > "$ROOT/conf/storage.conf"
    printf 'unqualified-search-registries = []\nshort-name-mode = "disabled"\n' > "$ROOT/conf/registries.conf"
}

alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

up() {
    install
    configure
    eval "$(env_lines)"
    if ! alive service; then
        rm -f "$SOCK"
        # setsid: the service outlives this shell (make's recipe), and `down` stops it by pid.
        setsid podman system service --time=0 "unix://$SOCK" >"$RUN/service.log" 2>&1 < /dev/null &
        echo $! > "$RUN/service.pid"
    fi
    if ! alive health; then
        # named after the engine's root ($0), so that this engine's loop is told from another's
        setsid bash -c 'while sleep 2; do
            for c in $(podman ps -q --filter health=starting --filter health=healthy --filter health=unhealthy 2>/dev/null); do
                podman healthcheck run "$c" >/dev/null 2>&1; done; done' "criteo-engine-health $ROOT" \
            >/dev/null 2>&1 < /dev/null &
        echo $! > "$RUN/health.pid"
    fi
    local i=0
    until curl -sf --unix-socket "$SOCK" http://d/_ping >/dev/null 2>&1; do
        i=$((i + 1))
        if [ $i -ge 150 ]; then
            echo "engine: the Podman API did not answer on $SOCK in 30 s; its log:" >&2
            tail -20 "$RUN/service.log" >&2
            exit 1
        fi
        sleep 0.2
    done
    # As Docker's own socket (root:docker 0660): a container given the socket's group (compose's
    # DOCKER_GID, here 0, Airflow's image's group) may start containers, other users may not.
    chmod 0660 "$SOCK"
    echo "engine up: podman $(podman version --format '{{.Client.Version}}'), Docker API at unix://$SOCK" >&2
    echo "  eval \"\$(scripts/containers/engine.sh env)\"   # then podman, docker-compose or DOCKER_HOST clients" >&2
}

down() {
    [ -f "$ROOT/conf/containers.conf" ] || { echo "engine: not configured, nothing to stop" >&2; return 0; }
    eval "$(env_lines)"
    podman pod rm -af -t 5 >/dev/null 2>&1 || true
    podman rm -af -t 5 >/dev/null 2>&1 || true
    for p in health service; do
        if alive "$p"; then
            kill -- "-$(cat "$RUN/$p.pid")" 2>/dev/null || kill "$(cat "$RUN/$p.pid")" 2>/dev/null || true
        fi
        rm -f "$RUN/$p.pid"
    done
    # A container's conmon outlives a killed service; so can an overlay mount of the storage.
    pkill -f "conmon.*$ROOT" 2>/dev/null || true
    local m
    for m in $(awk -v root="$ROOT" 'index($2, root) == 1 {print $2}' /proc/self/mounts | sort -r); do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
    rm -f "$SOCK"
    if [ "${CRITEO_ENGINE_WIPE:-0}" = 1 ]; then
        rm -rf "$ROOT"
        echo "engine: stopped and wiped $ROOT" >&2
    else
        echo "engine: stopped (images kept in $ROOT/storage; CRITEO_ENGINE_WIPE=1 deletes them)" >&2
    fi
}

# After `down`: no engine process (the service, the health loop, a container's conmon) and no mount
# of its storage may be left.
check_stopped() {
    local left mounts
    left=$(pgrep -af "podman system service.*$ROOT|conmon.*$ROOT|criteo-engine-health $ROOT" || true)
    mounts=$(awk -v root="$ROOT" 'index($2, root) == 1 {print $2}' /proc/self/mounts)
    if [ -n "$left$mounts" ]; then
        echo "engine: left behind after down:" >&2
        [ -n "$left" ] && echo "$left" >&2
        [ -n "$mounts" ] && echo "$mounts" >&2
        return 1
    fi
    echo "engine: nothing left behind (no process, no mount under $ROOT)" >&2
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    env) env_lines ;;
    check-stopped) check_stopped ;;
    *) echo "usage: $0 up|down|env|check-stopped" >&2; exit 2 ;;
esac
