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
# Probe once per machine boot: a throwaway container from an image we have, or busybox-free true.
probe=$root/.tools/podman-probe
boot=$(cat /proc/sys/kernel/random/boot_id)
if [ "$(head -n 1 "$probe" 2>/dev/null)" != "$boot" ]; then
  img=$(podman images --format '{{.Repository}}:{{.Tag}}' --filter reference='localhost/llmops-debian12-systemd' | head -n 1)
  verdict=custom
  if [ -n "$img" ] && CONTAINERS_CONF=/dev/null podman run --rm --network none "$img" /bin/true >/dev/null 2>&1; then
    verdict=plain
  fi
  [ -n "$img" ] && printf '%s\n%s\n' "$boot" "$verdict" > "$probe"
else
  verdict=$(sed -n 2p "$probe")
fi
[ "$verdict" = plain ] || echo "export CONTAINERS_CONF=$conf"
