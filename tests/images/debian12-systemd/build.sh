#!/usr/bin/env bash
# Build (or reuse) the Debian 12 systemd image used as a test host by molecule and the demo lab.
#
# The image is a debootstrap rootfs imported into podman. It is tagged with a digest of this
# recipe, so editing this file (or packages.txt) rebuilds it; otherwise the cached rootfs
# tarball under the project cache is imported, or the existing image is reused.
#
# Output: prints the image reference on its last line.
# Env:    LLMOPS_CACHE (default ~/.cache/llmops-onprem), DEBIAN_MIRROR (default: the mirror
#         this machine's apt uses, so no host name is hard-coded here).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${LLMOPS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llmops-onprem}
mkdir -p "$cache/images"

recipe_digest=$(cat "$here/build.sh" "$here/packages.txt" | sha256sum | cut -c1-12)
ref="localhost/llmops-debian12-systemd:$recipe_digest"
tarball="$cache/images/debian12-systemd-$recipe_digest.tar"

if podman image exists "$ref"; then
  echo "$ref"
  exit 0
fi

# One build at a time: the molecule layer and the cluster layer's apt host (test_lab_upgrade.py) may ask at once.
exec 9>"$cache/images/.build.lock"
flock 9
if podman image exists "$ref"; then
  echo "$ref"
  exit 0
fi

mirror_from_apt() {
  # First "URIs:" (deb822) or "deb URL bookworm" line whose suite is bookworm.
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk '/^URIs:/ {u=$2} /^Suites:/ && / bookworm( |$)/ && u !~ /security/ {print u; exit}' "$f"
  done | head -n 1
  if [ -f /etc/apt/sources.list ]; then
    awk '$1=="deb" && $3=="bookworm" {print $2; exit}' /etc/apt/sources.list
  fi
}

if [ ! -s "$tarball" ]; then
  command -v debootstrap >/dev/null || { echo "debootstrap is missing: run 'make setup' (apt-get install debootstrap)" >&2; exit 1; }
  mirror=${DEBIAN_MIRROR:-$(mirror_from_apt | head -n 1)}
  [ -n "$mirror" ] || { echo "no Debian bookworm mirror found in apt sources; set DEBIAN_MIRROR" >&2; exit 1; }
  rootfs=$(mktemp -d "$cache/images/rootfs.XXXXXX")
  trap 'rm -rf "$rootfs"' EXIT
  include=$(grep -v '^#' "$here/packages.txt" | xargs | tr ' ' ',')
  echo "debootstrap bookworm from the apt mirror into $rootfs (a few minutes, once)" >&2
  debootstrap --variant=minbase --include="$include" bookworm "$rootfs" "$mirror" >"$cache/images/debootstrap.log" 2>&1 \
    || { tail -n 20 "$cache/images/debootstrap.log" >&2; exit 1; }
  # A container needs none of these; several fail without real hardware or namespaces.
  for unit in systemd-udevd.service systemd-udev-trigger.service getty.target console-getty.service \
              systemd-logind.service systemd-remount-fs.service sys-kernel-debug.mount \
              sys-kernel-tracing.mount dev-hugepages.mount systemd-networkd-wait-online.service \
              apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer; do
    ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
  done
  echo 'APT::Install-Recommends "false";' > "$rootfs/etc/apt/apt.conf.d/00-no-recommends"
  # debootstrap writes the mirror it used; keep it so hosts with a network can apt-get.
  printf 'deb %s bookworm main\n' "$mirror" > "$rootfs/etc/apt/sources.list"
  : > "$rootfs/etc/machine-id"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb
  tar -C "$rootfs" --numeric-owner -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
fi

podman import --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' \
  "$tarball" "$ref" >/dev/null
echo "$ref"
