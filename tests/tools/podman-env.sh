#!/usr/bin/env bash
# Decide whether plain podman can run our systemd test hosts on this machine. Where it can't
# (sandboxes that cannot raise rlimits or lack a systemd cgroup manager), use the project-local
# .tools/containers.conf with runc, cgroupfs and low ulimits. Nothing in /etc is changed.
# Prints "export CONTAINERS_CONF=..." (or nothing) for eval; --write only creates the file.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
conf=$root/.tools/containers.conf
mkdir -p "$root/.tools"
if [ ! -f "$conf" ]; then
  cat > "$conf" <<'CONF'
# Written by tests/tools/podman-env.sh; used only where plain podman fails.
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
fi
[ "${1:-}" = --write ] && exit 0
# Probe once per machine boot and per hard open-files limit (plain podman asks for more than a
# sandbox may grant; a shell with a higher limit may pass where another fails), with what the test
# hosts run: the image's systemd as PID 1 (--systemd=always), started and answering systemctl.
# A /bin/true probe is not enough: it passed where systemd as /sbin/init then could not start.
# Neither configuration starting it is an error, with podman's own words on the last line.
probe=$root/.tools/podman-probe
key="$(cat /proc/sys/kernel/random/boot_id) nofile=$(ulimit -Hn)"
try() { # conf image: start the image's systemd under that podman configuration, then remove it
  local c rc=0 state
  c=llmops-podman-probe-$$
  CONTAINERS_CONF=$1 podman rm -f -t 0 "$c" >/dev/null 2>&1 || true
  if ! err=$(CONTAINERS_CONF=$1 podman run -d --name "$c" --network none --systemd=always "$2" /sbin/init 2>&1 >/dev/null); then
    rc=1
  else
    # systemd's own answer once its start-up job is done, bounded (degraded: a unit a container lacks may fail).
    # The bus socket appears once systemd has set itself up; systemctl needs it.
    state=$(CONTAINERS_CONF=$1 podman exec "$c" timeout 60 sh -c \
      'until [ -S /run/systemd/private ]; do sleep 0.1; done; systemctl is-system-running --wait' 2>&1) || true
    case $state in
      running | degraded) ;;
      *) rc=1 err="systemd did not come up (systemctl: ${state:-no answer}): $(CONTAINERS_CONF=$1 podman logs "$c" 2>&1 | tail -n 3 | tr '\n' ' ')" ;;
    esac
  fi
  CONTAINERS_CONF=$1 podman rm -f -t 0 "$c" >/dev/null 2>&1 || true
  return $rc
}
if [ "$(head -n 1 "$probe" 2>/dev/null)" != "$key" ]; then
  # The image the caller is about to run, else any build of it. sed, not head: head's early exit would end podman
  # with SIGPIPE, and with pipefail this script, printing nothing: callers then ran plain podman (the likely cause of CI exit 126s).
  img=${LLMOPS_TEST_IMAGE:-}
  podman image exists "${img:-none}" 2>/dev/null || img=$(podman images --format '{{.Repository}}:{{.Tag}}' --filter reference='localhost/llmops-debian12-systemd' | sed -n 1p)
  [ -n "$img" ] || { echo "export CONTAINERS_CONF=$conf"; exit 0; }  # no image yet: decided once one is built
  if try /dev/null "$img"; then
    verdict=plain
  elif plain_err=$err && try "$conf" "$img"; then
    verdict=custom
  else
    echo "podman cannot start the test image's systemd ($img) with this machine's podman settings nor with $conf:" >&2
    echo "  plain: ${plain_err:-?}" >&2
    echo "  $conf: $err" >&2
    exit 1
  fi
  printf '%s\n%s\n' "$key" "$verdict" > "$probe.tmp.$$" && mv "$probe.tmp.$$" "$probe"
else
  verdict=$(sed -n 2p "$probe")
fi
[ "$verdict" = plain ] || echo "export CONTAINERS_CONF=$conf"
