#!/usr/bin/env bash
# make test's layers in lanes that run side by side: `test_lanes.sh NAME=HOME:"TARGET ..." ...`.
#
# Why lanes: most layers keep about one core busy (a step subprocess, GX or a scheduler loop at a
# time), so on the project's 2-core machines two lanes side by side finish well before the same
# layers one after the other (each layer runs about 1.4x slower; docs/figures.md has the figures).
# Each lane has an AIRFLOW_HOME of its own: the dev database is SQLite, one writer at a time, and
# dag.test() in one lane must not lock out the other. Within a lane the layers run in order, each
# its own make; a failing layer does not stop the next, and the exit status is non-zero if any failed.
# Each output line starts with its lane's name; a summary of every layer's status and time ends it.
set -uo pipefail

if [ $# -eq 0 ]; then
    echo "usage: $0 NAME=AIRFLOW_HOME:'TARGET ...' ..." >&2
    exit 2
fi
log_dir=$(mktemp -d "${TMPDIR:-/tmp}/criteo-test-lanes.XXXXXX")
make=${MAKE:-make}
start=$(date +%s)
pids=()
names=()

run_lane() {
    local name=$1 home=$2 targets=$3 target rc
    for target in $targets; do
        local t0
        t0=$(date +%s)
        AIRFLOW_HOME=$home "$make" --no-print-directory "$target" 2>&1 | sed -u "s/^/[$name] /"
        rc=${PIPESTATUS[0]}
        echo "$target $rc $(( $(date +%s) - t0 ))" >> "$log_dir/$name.status"
    done
}

for lane in "$@"; do
    name=${lane%%=*}
    rest=${lane#*=}
    home=${rest%%:*}
    targets=${rest#*:}
    : > "$log_dir/$name.status"
    run_lane "$name" "$home" "$targets" &
    pids+=($!)
    names+=("$name")
done

# Ctrl-C or CI's timeout: take the lanes (our process group) down with us.
trap 'trap - INT TERM; kill 0; exit 130' INT TERM
for pid in "${pids[@]}"; do
    wait "$pid"
done

failed=0
echo
echo "make test: layers by lane (status, minutes:seconds)"
for name in "${names[@]}"; do
    while read -r target rc secs; do
        state=passed
        [ "$rc" = 0 ] || { state="FAILED (exit $rc)"; failed=1; }
        printf '  %-3s %-18s %-16s %d:%02d\n' "$name" "$target" "$state" $((secs / 60)) $((secs % 60))
    done < "$log_dir/$name.status"
done
total=$(( $(date +%s) - start ))
printf 'make test: %d:%02d wall for all lanes\n' $((total / 60)) $((total % 60))
rm -rf "$log_dir"
exit $failed
