#!/usr/bin/env bash
# Build the serving images from local parts only: Debian 12 .deb packages (pinned in
# python-runtime.packages) and this repository's files, written with tests/cluster/mkimage.py.
# No container engine, no base image from a public registry.
#
#   serving/images/build.sh IMAGE [--output ARCHIVE.tar] [--oci-layout DIR] [--debs DIR] [--tag REF]...
#   serving/images/build.sh runtime-rootfs [--debs DIR]
#
# IMAGE:
#   python-runtime   the shared Python 3.11 runtime alone  -> localhost/llmops/python-runtime:<version>
#   model-pull       the checkpoint downloader (init container) on that runtime
#                                                          -> localhost/llmops/model-pull:<version>
#   engine-standin   the vLLM stand-in (CPU, for labs/tests) -> localhost/llmops/engine-standin:<version>
#   runtime-rootfs   build (or reuse) the unpacked runtime and print its directory: other images
#                    pass it to mkimage.py as `--layer DIR` (first) and so share the runtime layer
#                    byte for byte (same digest) with these images.
#
# Options:
#   --output ARCHIVE.tar  an image archive (containerd `ctr images import`, podman load, skopeo
#                         oci-archive:); default $LLMOPS_CACHE/images/<image>-<version>.tar when
#                         neither --output nor --oci-layout is given
#   --oci-layout DIR      add the image to an OCI layout (several images may share one)
#   --debs DIR            take the .deb files from DIR (e.g. the bundle's package repository)
#                         instead of `apt-get download`
#   --tag REF             image reference(s) instead of the default one (repeatable)
#
# Environment: LLMOPS_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/llmops-onprem) holds the
# downloaded .deb files and the unpacked runtime (images/python-runtime-<key>/rootfs; the key is
# a hash of the pinned package list, so a changed list makes a new runtime).
# Needs: bash, python3 (standard library), dpkg-deb, and apt-get when --debs is not given.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
LLMOPS_CACHE=${LLMOPS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llmops-onprem}
MKIMAGE=$REPO/tests/cluster/mkimage.py
PACKAGES=$HERE/python-runtime.packages
PY3=${PY3:-python3}

die() { echo "build.sh: $*" >&2; exit 2; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2; }

version() { awk '/^version:/ {print $2; exit}' "$REPO/galaxy.yml"; }

pinned() { grep -v '^\s*#' "$PACKAGES" | grep -v '^\s*$'; }

# deb_file DIR NAME VERSION: the .deb of that exact version in DIR. The epoch is dropped from
# file names (libcrypt1_4.4.33-2_amd64.deb) or kept URL-encoded (apt-get download: _1%3a4.4.33-2_).
deb_file() {
  local f
  for f in "$1/$2_${3#*:}_"*.deb "$1/$2_${3/:/%3a}_"*.deb; do
    [ -f "$f" ] && { echo "$f"; return; }
  done
}

# runtime_rootfs: the unpacked Python runtime directory (built once per package list).
runtime_rootfs() {
  local key dir tmp debs spec name ver file
  key=$(sha256sum "$PACKAGES" | cut -c1-16)
  dir=$LLMOPS_CACHE/images/python-runtime-$key
  if [ -x "$dir/rootfs/usr/bin/python3.11" ]; then echo "$dir/rootfs"; return; fi
  command -v dpkg-deb >/dev/null || die "dpkg-deb is needed to unpack the runtime packages"
  debs=${DEBS_DIR:-$LLMOPS_CACHE/images/debs}
  mkdir -p "$debs"
  tmp=$(mktemp -d "$LLMOPS_CACHE/images/.rootfs.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  while read -r spec; do
    name=${spec%%=*} ver=${spec#*=}
    file=$(deb_file "$debs" "$name" "$ver")
    if [ -z "$file" ]; then
      [ -z "${DEBS_DIR:-}" ] || die "$spec: no ${name}_${ver#*:}_*.deb in $DEBS_DIR"
      echo "apt-get download $spec" >&2
      (cd "$debs" && apt-get -o APT::Sandbox::User=root download -qq "$spec" >&2) || die "apt-get download $spec failed (is the version still on the mirror? see $PACKAGES)"
      file=$(deb_file "$debs" "$name" "$ver")
      [ -n "$file" ] || die "$spec: apt-get download left no .deb in $debs"
    fi
    dpkg-deb -x "$file" "$tmp/rootfs"
  done < <(pinned)
  # What a container never needs; python3 as the usual name; no stale bytecode writes.
  rm -rf "$tmp/rootfs/usr/share/doc" "$tmp/rootfs/usr/share/man" "$tmp/rootfs/usr/share/info" \
         "$tmp/rootfs/usr/share/lintian" "$tmp/rootfs/usr/share/locale"
  ln -sfn python3.11 "$tmp/rootfs/usr/bin/python3"
  chmod 0755 "$tmp/rootfs"
  mkdir -p "$(dirname "$dir")"
  rm -rf "$dir"
  mv "$tmp" "$dir"
  trap - EXIT
  echo "$dir/rootfs"
}

[ $# -ge 1 ] || usage
image=$1; shift
output="" layout="" tags=()
while [ $# -gt 0 ]; do
  case $1 in
    --output|-o) output=${2:?--output wants a path}; shift 2 ;;
    --oci-layout) layout=${2:?--oci-layout wants a directory}; shift 2 ;;
    --debs) DEBS_DIR=$(cd "${2:?--debs wants a directory}" && pwd); shift 2 ;;
    --tag) tags+=("${2:?--tag wants a reference}"); shift 2 ;;
    -h|--help) usage ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

V=$(version)
case $image in
  runtime-rootfs) runtime_rootfs; exit 0 ;;
  python-runtime|model-pull|engine-standin) ;;
  -h|--help) usage ;;
  *) die "unknown image '$image': python-runtime, model-pull, engine-standin or runtime-rootfs" ;;
esac
[ ${#tags[@]} -gt 0 ] || tags=("localhost/llmops/$image:$V")
if [ -z "$output" ] && [ -z "$layout" ]; then
  output=$LLMOPS_CACHE/images/$image-$V.tar
  mkdir -p "$(dirname "$output")"
fi

rootfs=$(runtime_rootfs)
args=(--layer "$rootfs" --env PYTHONDONTWRITEBYTECODE=1 --env PYTHONUNBUFFERED=1
      --label "org.opencontainers.image.version=$V"
      --label "org.opencontainers.image.source=llmops.onprem serving/images")
for t in "${tags[@]}"; do args+=(--tag "$t"); done
[ -z "$output" ] || args+=(--output "$output")
[ -z "$layout" ] || args+=(--oci-layout "$layout")

case $image in
  python-runtime)
    args+=(--entrypoint '["/usr/bin/python3"]' --label "org.opencontainers.image.title=llmops python runtime") ;;
  model-pull)
    stage=$(mktemp -d)
    trap 'rm -rf "$stage"' EXIT
    # The downloader, the collection's SigV4 signer and checkpoint manifest rules (copied, not duplicated in the sources).
    # The source has no shebang (it is not a module); the image's copy runs as a command.
    { echo '#!/usr/bin/python3'; cat "$REPO/serving/model-pull/model_pull.py"; } > "$stage/model_pull.py"
    chmod 0755 "$stage/model_pull.py"
    install -m 0644 "$REPO/plugins/module_utils/_sigv4.py" "$stage/_sigv4.py"
    # The checkpoint manifest rules (schema, the one path rule) are the collection's own too.
    install -m 0644 "$REPO/plugins/module_utils/_checkpoint.py" "$stage/_checkpoint.py"
    install -m 0644 "$REPO/plugins/module_utils/_paths.py" "$stage/_paths.py"
    args+=(--add "$stage:/opt/llmops/model-pull:0755"
           --symlink /opt/llmops/model-pull/model_pull.py:/usr/local/bin/model-pull
           --entrypoint '["/usr/local/bin/model-pull"]' --user 65534:65534
           --label "org.opencontainers.image.title=llmops model-pull") ;;
  engine-standin)
    # The vLLM STAND-IN (CPU, no model; serving/engine-standin) behind vLLM's own entrypoint
    # (python3 -m vllm.entrypoints.openai.api_server), so the chart runs it like vllm/vllm-openai.
    stage=$(mktemp -d)
    trap 'rm -rf "$stage"' EXIT
    vv=$(cat "$REPO/serving/vllm-args/VERSION")
    cp -r "$REPO/serving/engine-standin/shim" "$stage/shim"
    find "$stage" -name __pycache__ -prune -exec rm -rf {} +
    install -m 0755 "$REPO/serving/engine-standin/vllm_standin.py" "$stage/vllm_standin.py"
    install -m 0644 "$REPO/serving/vllm-args/$vv.txt" "$stage/vllm-args.txt"
    install -m 0644 "$REPO/serving/vllm-args/$vv.architectures.txt" "$stage/architectures.txt"
    args+=(--add "$stage:/opt/llmops/engine-standin:0755"
           --env PYTHONPATH=/opt/llmops/engine-standin:/opt/llmops/engine-standin/shim
           --entrypoint '["/usr/bin/python3", "-m", "vllm.entrypoints.openai.api_server"]' --user 65534:65534
           --label "org.opencontainers.image.title=llmops vLLM stand-in (CPU, not vLLM)") ;;
esac
"$PY3" "$MKIMAGE" "${args[@]}"
[ -z "$output" ] || echo "archive: $output" >&2
