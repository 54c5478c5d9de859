#!/usr/bin/env bash
# The whole cluster test cycle: build (cached) -> up -> pytest tests/integration/cluster ->
# down (always) -> check that nothing is left (processes, mounts under the work dir, the
# bridge, iptables chains, kernel settings as they were before). Exit status non-zero on
# any failure. Extra arguments go to pytest (e.g. -k helm, -x).
#
#   tests/cluster/run-tests.sh [PYTEST ARGS...]
#   env: LLMOPS_CACHE, LLMOPS_CLUSTER_DIR, HELM, KUBECTL, PYTHON (see lib.sh)
set -uo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
t_start=$(date +%s)
[ "$(id -u)" = 0 ] || die "run-tests.sh needs root (the cluster does)"
for t in "$HELM" "$PYTHON"; do [ -x "$t" ] || die "$t not found: run 'make setup' or set HELM/PYTHON"; done
"$PYTHON" -c 'import pytest, kubernetes, kubernetes_validate, ansible' 2>/dev/null \
  || die "$PYTHON lacks pytest/kubernetes/kubernetes-validate/ansible"
[ -x "$(dirname "$PYTHON")/ansible-playbook" ] || die "no ansible-playbook next to $PYTHON"
export HELM KUBECTL PYTHON

# A cluster left running (by `make demo`, say) changed the kernel settings already: stop it
# first, so the baseline below is the machine's own and the tests start from a fresh cluster.
if [ -n "$(harness_pids | grep -vx -e "$$" || true)" ]; then
  echo "== a cluster is running: stopping it first"
  "$CLUSTER_HERE/down.sh" || die "could not stop the running cluster"
fi

tmp=$(mktemp -d)
for s in $K8S_SYSCTLS; do v=$(sysctl -n "$s" 2>/dev/null) && echo "$s=$v"; done > "$tmp/sysctl.start"
pytest_rc=1 down_rc=1 left=0 up_ok=0 summary="pytest did not run"

finish() {
  trap - EXIT INT TERM
  echo "== down"
  "$CLUSTER_HERE/down.sh"; down_rc=$?
  echo "== nothing left?"
  procs=$(harness_pids | sort -u | grep -vx -e "$$" || true)
  [ -z "$procs" ] || { echo "LEFT: harness processes: $procs" >&2; left=1; }
  if awk -v d="$W/" 'index($2, d) == 1' /proc/self/mounts | grep -q .; then echo "LEFT: mounts under $W" >&2; left=1; fi
  if ip link show "$K8S_BRIDGE" >/dev/null 2>&1; then echo "LEFT: bridge $K8S_BRIDGE" >&2; left=1; fi
  for t in filter nat mangle; do
    iptables -w -t "$t" -S 2>/dev/null | grep -qE -- "-N (KUBE-|$K8S_GUARD_CHAIN)" && { echo "LEFT: iptables chains in $t" >&2; left=1; }
  done
  ls -d /sys/fs/cgroup/*/kubepods >/dev/null 2>&1 && { echo "LEFT: kubepods cgroups" >&2; left=1; }
  while IFS='=' read -r k v; do
    [ -n "$k" ] || continue
    now=$(sysctl -n "$k" 2>/dev/null)
    [ "$now" = "$v" ] || { echo "LEFT: sysctl $k=$now (was $v)" >&2; left=1; }
  done < "$tmp/sysctl.start"
  [ $left = 0 ] && echo "nothing left: no harness processes, no mounts under $W, no $K8S_BRIDGE, no KUBE-* chains, sysctls as before"
  rm -rf "$tmp"
  echo "== run-tests: $summary | up: $([ $up_ok = 1 ] && echo ok || echo FAILED) | down: $([ $down_rc = 0 ] && echo ok || echo FAILED) | leftovers: $([ $left = 0 ] && echo none || echo FOUND) | wall $(( $(date +%s) - t_start )) s"
  if [ $up_ok = 1 ] && [ "$pytest_rc" = 0 ] && [ $down_rc = 0 ] && [ $left = 0 ]; then exit 0; fi
  exit 1
}
trap finish EXIT
trap 'exit 130' INT TERM

echo "== build"
"$CLUSTER_HERE/build.sh" || exit 1
echo "== up"
"$CLUSTER_HERE/up.sh" | tee "$tmp/up.log"
[ "${PIPESTATUS[0]}" = 0 ] || exit 1
kc=$(tail -n 1 "$tmp/up.log" | sed -n 's/^KUBECONFIG=//p')
[ -n "$kc" ] && [ -f "$kc" ] || exit 1
up_ok=1
export KUBECONFIG=$kc
echo "== pytest tests/integration/cluster"
cd "$REPO_ROOT" || exit 1
PYTHONDONTWRITEBYTECODE=1 "$PYTHON" -m pytest tests/integration/cluster -p no:cacheprovider -v --durations=12 "$@" 2>&1 | tee "$tmp/pytest.log"
pytest_rc=${PIPESTATUS[0]}
summary=$(grep -E '^=+ .* in [0-9.]+s( \([0-9:]+\))? =+$' "$tmp/pytest.log" | tail -n 1 | sed 's/^=* //; s/ =*$//')
[ -n "$summary" ] || summary="pytest rc $pytest_rc (no summary line)"
