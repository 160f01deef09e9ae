#!/bin/sh
# kubelet_ns.sh NODE_DIR CACHE_DIR CGROUP: one node's containerd, run inside `unshare -m --propagation
# private` by local_servers/kubelet.py, which then starts kubelet in the same mount namespace.
#
# Why a private mount namespace: kubelet and containerd write /run, /var/log/pods and /var/lib
# and rewrite three sysctls; here those paths are bind mounts of NODE_DIR and the sysctls read as
# the values kubelet wants, so the host's paths and sysctls stay untouched. The mounts vanish with
# the namespace's last process.
#
# Why this supervisor: containers outlive containerd (their shims are daemons). On SIGTERM (also
# the parent-death signal, when the test run is killed) it kills every container of this node,
# then kubelet and containerd, then the shims, and removes the node's cgroups.
set -u
W=$1 CACHE=$2 CG=$3
SOCK=$CACHE/containerd.sock
C="timeout 30 ctr -a $SOCK -n k8s.io"

for d in run varlog varlib sysctl; do mkdir -p "$W/$d"; done
printf 1 > "$W/sysctl/overcommit_memory"; printf 10 > "$W/sysctl/panic"; printf 1 > "$W/sysctl/panic_on_oops"
mount --bind "$W/run" /run && mount --bind "$W/varlog" /var/log && mount --bind "$W/varlib" /var/lib || exit 70
for f in vm/overcommit_memory kernel/panic kernel/panic_on_oops; do
  mount --bind "$W/sysctl/${f#*/}" "/proc/sys/$f" || exit 70
done
# kubelet's --cgroup-root must exist in every hierarchy; one per node, so two kubelets never meet.
for h in /sys/fs/cgroup/*/; do [ -f "${h}cgroup.procs" ] && mkdir -p "$h$CG"; done

kill_shims() {
  for f in "$CACHE"/state/io.containerd.runtime.v2.task/*/*/shim.pid; do
    [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null
  done
}
stop_pid() {  # stop_pid FILE NAME: SIGTERM, then SIGKILL after 10 s; only a process of that name
  [ -f "$1" ] || return 0
  p=$(cat "$1")
  [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$2" ] || { rm -f "$1"; return 0; }
  kill "$p" 2>/dev/null
  i=0; while kill -0 "$p" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.2; i=$((i+1)); done
  kill -9 "$p" 2>/dev/null; rm -f "$1"
}
cleanup() {
  trap '' TERM INT HUP   # a second signal (the parent's death during a stop) must not cut the cleanup short
  echo "node supervisor: stopping"
  stop_pid "$CACHE/kubelet.pid" kubelet
  for t in $($C tasks ls -q 2>/dev/null); do $C tasks kill -a -s SIGKILL "$t" >/dev/null 2>&1; done
  sleep 0.5
  for t in $($C tasks ls -q 2>/dev/null); do $C tasks rm -f "$t" >/dev/null 2>&1; done
  for c in $($C containers ls -q 2>/dev/null); do $C containers rm "$c" >/dev/null 2>&1; done
  stop_pid "$CACHE/containerd.pid" containerd
  kill_shims
  for h in /sys/fs/cgroup/*/; do
    [ -d "$h$CG" ] && find "$h$CG" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  echo "node supervisor: stopped"
  exit 0
}
trap cleanup TERM INT HUP

# What a run killed with SIGKILL (no cleanup) may have left: its kubelet, containerd, shims.
stop_pid "$CACHE/kubelet.pid" kubelet; stop_pid "$CACHE/containerd.pid" containerd; kill_shims
# containerd in a process group of its own: stopping the supervisor's group must leave it to the cleanup
setsid containerd -c "$W/containerd.toml" &
echo $! > "$CACHE/containerd.pid"
while :; do wait; [ -f "$CACHE/containerd.pid" ] && kill -0 "$(cat "$CACHE/containerd.pid")" 2>/dev/null || break; done
echo "node supervisor: containerd exited"
cleanup
