#!/usr/bin/env bash
# Import image archives (from mkimage.py, `docker save`, `podman save`, or skopeo's
# oci-archive:/docker-archive:) into the test cluster's containerd (namespace k8s.io), so
# pods can use them with imagePullPolicy Never/IfNotPresent and no registry.
#
#   tests/cluster/load-image.sh ARCHIVE.tar...
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
[ $# -gt 0 ] || die "usage: $0 ARCHIVE.tar..."
if ! { pid_alive containerd && [ -S "$W/containerd/containerd.sock" ]; }; then die "the test cluster is not running (tests/cluster/up.sh)"; fi
for a in "$@"; do
  [ -f "$a" ] || die "no such archive: $a"
  ctr_k8s images import "$a" | sed 's/^/  /' || die "ctr images import $a failed"
done
ctr_k8s images ls -q | grep -v '^sha256:'
