#!/usr/bin/env bash
# Stop the test cluster that up.sh started, and leave nothing behind:
#   - kubelet, kube-proxy, the control plane, etcd, containerd (by recorded pid), the pods'
#     containers (containerd tasks, shims, anything left in the kubepods cgroups);
#   - mounts under the work dir (pod volumes, shm, rootfs), the pods' network namespaces,
#     the bridge, the harness's iptables chains and kube-proxy's KUBE-* chains;
#   - the kernel settings the kubelet/kube-proxy/CNI changed are restored;
#   - the cluster state (etcd data, containerd and kubelet dirs) is deleted; PKI, images
#     and logs stay. With --purge the whole work dir goes.
# Then it checks that nothing is left and exits non-zero if something is. Idempotent.
set -uo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
purge=0
case ${1:-} in
  --purge) purge=1 ;;
  "") ;;
  -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
  *) die "unknown argument: $1 (--purge or nothing)" ;;
esac
[ "$(id -u)" = 0 ] || die "down.sh needs root"
C=$W/containerd

stop() { # NAME...: TERM them together, wait up to 10 s, then KILL what is left
  local n p i pids=()
  for n in "$@"; do
    pid_alive "$n" && pids+=("$(cat "$W/pids/$n.pid")")
  done
  if [ ${#pids[@]} -gt 0 ]; then
    kill "${pids[@]}" 2>/dev/null
    for ((i = 0; i < 100; i++)); do
      for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && break; p=; done
      [ -z "$p" ] && break
      sleep 0.1
    done
    kill -9 "${pids[@]}" 2>/dev/null
    for ((i = 0; i < 20; i++)); do
      for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && break; p=; done
      [ -z "$p" ] && break
      sleep 0.1
    done
  fi
  for n in "$@"; do rm -f "$W/pids/$n.pid"; done
}

# netns paths of our pod sandboxes, read from containerd before it goes
netns=()
if [ -S "$C/containerd.sock" ] && pid_alive containerd; then
  for id in $(ctr_k8s containers ls -q 2>/dev/null); do
    ns=$(ctr_k8s containers info "$id" 2>/dev/null \
         | jq -r '.Spec.linux.namespaces[]? | select(.type=="network") | .path // empty' 2>/dev/null)
    case $ns in /var/run/netns/cni-*|/run/netns/cni-*) netns+=("$ns") ;; esac
  done
fi

stop kube-proxy kubelet
if [ -S "$C/containerd.sock" ] && pid_alive containerd; then
  for t in $(ctr_k8s tasks ls -q 2>/dev/null); do ctr_k8s tasks kill -a -s SIGKILL "$t" >/dev/null 2>&1; done
  for ((i = 0; i < 20; i++)); do
    [ -z "$(ctr_k8s tasks ls -q 2>/dev/null | head -1)" ] && break
    for t in $(ctr_k8s tasks ls -q 2>/dev/null); do ctr_k8s tasks delete -f "$t" >/dev/null 2>&1; done
    sleep 0.25
  done
  for c in $(ctr_k8s containers ls -q 2>/dev/null); do ctr_k8s containers delete "$c" >/dev/null 2>&1; done
fi
stop containerd
# Shims outlive containerd; the pods' processes live in the kubepods cgroups.
for ((round = 0; round < 3; round++)); do
  left=$( { for p in /proc/[0-9]*; do
              p=${p#/proc/}
              tr '\0' ' ' 2>/dev/null < "/proc/$p/cmdline" | grep -q -- "containerd-shim-runc-v2 .*-address $C/containerd.sock" && echo "$p"
            done
            cat /sys/fs/cgroup/*/kubepods/cgroup.procs /sys/fs/cgroup/*/kubepods/*/cgroup.procs \
                /sys/fs/cgroup/*/kubepods/*/*/cgroup.procs /sys/fs/cgroup/*/kubepods/*/*/*/cgroup.procs 2>/dev/null
          } | sort -u)
  [ -z "$left" ] && break
  # shellcheck disable=SC2086
  kill -9 $left 2>/dev/null
  sleep 0.5
done
stop kube-scheduler kube-controller-manager kube-apiserver
stop etcd

# ---- mounts, network namespaces, bridge ----------------------------------------------
unmount_under() { # DIR: unmount everything below DIR, deepest first
  local m n
  for n in 1 2 3; do
    m=$(awk -v d="$1/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | awk '{print length, $0}' | sort -rn | cut -d' ' -f2-)
    [ -z "$m" ] && return 0
    while read -r x; do umount "$x" 2>/dev/null || umount -l "$x" 2>/dev/null; done <<<"$m"
  done
}
[ -d "$W" ] && unmount_under "$W"
# The kubelet may have bind-mounted its root dir onto itself.
awk -v d="$W/kubelet/root" '$2 == d {print $2}' /proc/self/mounts | while read -r x; do umount -l "$x"; done
for ns in "${netns[@]}"; do
  ip netns delete "$(basename "$ns")" 2>/dev/null || { umount "$ns" 2>/dev/null; rm -f "$ns"; }
done
# Pod interfaces whose netns is gone vanish with it; the bridge is ours.
ip link delete "$K8S_BRIDGE" 2>/dev/null
ip route delete "$K8S_SVC_CIDR" 2>/dev/null

# ---- iptables: our chains and kube-proxy's ---------------------------------------------
drop_chains() { # TABLE REGEX: unhook and delete the matching chains
  local t=$1 re=$2 rules chains c
  rules=$(iptables -w -t "$t" -S 2>/dev/null | grep -E -- "^-A (INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) .*-j ($re)( |\$)")
  while read -r r; do
    [ -n "$r" ] || continue
    # shellcheck disable=SC2086
    eval "iptables -w -t $t -D ${r#-A }" 2>/dev/null
  done <<<"$rules"
  chains=$(iptables -w -t "$t" -S 2>/dev/null | awk '$1=="-N"{print $2}' | grep -E -- "^($re)\$")
  for c in $chains; do iptables -w -t "$t" -F "$c" 2>/dev/null; done
  for c in $chains; do iptables -w -t "$t" -X "$c" 2>/dev/null; done
}
for t in filter nat mangle; do
  drop_chains "$t" "KUBE-[A-Z0-9-]+|$K8S_GUARD_CHAIN(-API)?"
done

# ---- kernel settings -----------------------------------------------------------------
sysbefore=$(cat "$W/sysctl.before" 2>/dev/null)
while IFS='=' read -r k v; do
  [ -n "$k" ] && [ "$(sysctl -n "$k" 2>/dev/null)" != "$v" ] && sysctl -q -w "$k=$v" >/dev/null
done <<<"$sysbefore"

# ---- files outside the work dir that the kubelet / CNI write ---------------------------
for d in "$W"/kubelet/root/pods/*/; do
  [ -d "$d" ] || continue
  uid=$(basename "$d")
  rm -rf /var/log/pods/*_"$uid"
done
find /var/log/containers -maxdepth 1 -xtype l -delete 2>/dev/null
rm -f /var/lib/cni/results/llmops-k8s-* 2>/dev/null
# Empty pod cgroups (cgroup v1 layout) the kubelet created.
for d in /sys/fs/cgroup/*/kubepods; do
  [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
done

# ---- state ---------------------------------------------------------------------------
if [ -d "$W" ]; then
  rm -rf "$W/etcd" "$W/containerd" "$W/kubelet" "$W/cni/ipam" "$W/sysctl.before" "$W/pids"
  [ $purge = 1 ] && rm -rf "$W"
fi

# ---- verify ----------------------------------------------------------------------------
fail=0
procs=$(harness_pids | sort -u | grep -vx -e "$$" -e "$PPID" || true)
if [ -n "$procs" ]; then
  echo "LEFT: processes: $(for p in $procs; do tr '\0' ' ' 2>/dev/null < "/proc/$p/cmdline" | cut -c1-100; echo; done)" >&2
  fail=1
fi
if awk -v d="$W" 'index($2, d) == 1' /proc/self/mounts | grep -q .; then
  echo "LEFT: mounts under $W:" >&2; awk -v d="$W" 'index($2, d) == 1 {print "  " $2}' /proc/self/mounts >&2; fail=1
fi
if ip link show "$K8S_BRIDGE" >/dev/null 2>&1; then echo "LEFT: bridge $K8S_BRIDGE" >&2; fail=1; fi
for ns in "${netns[@]}"; do
  if [ -e "$ns" ]; then echo "LEFT: pod network namespace $ns" >&2; fail=1; fi
done
for t in filter nat mangle; do
  if iptables -w -t "$t" -S 2>/dev/null | grep -qE -- "-N (KUBE-|$K8S_GUARD_CHAIN)"; then
    echo "LEFT: iptables chains in $t" >&2; fail=1
  fi
done
if ls -d /sys/fs/cgroup/*/kubepods >/dev/null 2>&1; then echo "LEFT: kubepods cgroups" >&2; fail=1; fi
while IFS='=' read -r k v; do
  [ -z "$k" ] && continue
  now=$(sysctl -n "$k" 2>/dev/null)
  [ "$now" = "$v" ] || { echo "LEFT: sysctl $k=$now (was $v before up.sh)" >&2; fail=1; }
done <<<"$sysbefore"
if [ $fail = 0 ]; then
  echo "cluster stopped; nothing left$([ $purge = 1 ] && echo "; $W deleted")"
else
  exit 1
fi
