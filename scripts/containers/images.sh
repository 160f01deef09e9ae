#!/usr/bin/env bash
# `make images`: every image the project ships, built from the repository's Dockerfiles as written,
# on the local stand-ins of their bases (scripts/containers/bases.sh), passed as the Dockerfiles'
# base build arguments. Each Dockerfile checks its own imports while it builds.
#
#   scripts/containers/images.sh [NAME ...]   merlin hugectr validator monitoring triton airflow (default: all)
#
# Tags: localhost/criteo-NAME:$CRITEO_IMAGE_TAG (default "local"; hugectr: criteo-merlin-hugectr), what the
# container tests and the compose override run. Build times and sizes go to
# $CRITEO_ENGINE_ROOT/images.tsv and are printed.
set -euo pipefail
cd "$(dirname "$0")/../.."
eval "$(scripts/containers/engine.sh env)"
TAG=${CRITEO_IMAGE_TAG:-local}
S=localhost/criteo-standin
REV=$(git rev-parse HEAD 2>/dev/null || echo unknown)

# name | Dockerfile | target | stand-ins it needs | base build arguments
spec() {
    case $1 in
        merlin) echo "images/merlin/Dockerfile|merlin|merlin-pytorch|MERLIN_BASE=$S/merlin-pytorch:23.08" ;;
        hugectr) echo "images/merlin/Dockerfile|hugectr|merlin-hugectr|HUGECTR_BASE=$S/merlin-hugectr:24.06 HUGECTR_REQUIRED=false" ;;
        validator) echo "images/validator/Dockerfile||python-3.11-slim|PYTHON_BASE=$S/python:3.11" ;;
        monitoring) echo "images/monitoring/Dockerfile||python-3.11-slim|PYTHON_BASE=$S/python:3.11" ;;
        triton) echo "images/triton/Dockerfile||tritonserver|TRITON_BASE=$S/tritonserver:24.10-py3" ;;
        airflow) echo "images/airflow/Dockerfile||airflow|AIRFLOW_BASE=$S/airflow:3.3.2-python3.11" ;;
        *) echo "images: unknown image $1" >&2; exit 2 ;;
    esac
}

names=("$@")
[ ${#names[@]} -gt 0 ] || names=(merlin hugectr validator monitoring triton airflow)
needed=()
for name in "${names[@]}"; do
    IFS='|' read -r _ _ base _ <<< "$(spec "$name")"
    needed+=("$base")
done
scripts/containers/bases.sh $(printf '%s\n' "${needed[@]}" | sort -u)

for name in "${names[@]}"; do
    IFS='|' read -r dockerfile target _ args <<< "$(spec "$name")"
    build_args=(--build-arg "CODE_REVISION=$REV")
    for a in $args; do build_args+=(--build-arg "$a"); done
    [ -n "$target" ] && build_args+=(--target "$target")
    repo=criteo-$name
    [ "$name" = hugectr ] && repo=criteo-merlin-hugectr   # the names docker-compose.yaml gives them
    ref=localhost/$repo:$TAG
    t0=$SECONDS
    log=$CRITEO_ENGINE_ROOT/image-$name.build.log
    echo "images: building $ref ($dockerfile${target:+ --target $target})" >&2
    if ! podman build --network host "${build_args[@]}" -f "$dockerfile" -t "$ref" . > "$log" 2>&1; then
        tail -40 "$log" >&2
        echo "images: $ref failed to build (whole log: $log)" >&2
        exit 1
    fi
    secs=$((SECONDS - t0))
    size=$(podman image inspect --format '{{.Size}}' "$ref" | awk '{printf "%.0f", $1/1e6}')
    printf '%s\t%s\t%s\t%s\n' "$name" "$ref" "$secs" "$size" >> "$CRITEO_ENGINE_ROOT/images.tsv"
    echo "images: $ref built in ${secs} s, ${size} MB" >&2
done
# A rebuilt tag leaves its previous image behind, untagged: drop those (the layer cache stays).
podman image prune -f > /dev/null
