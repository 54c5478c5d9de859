#!/usr/bin/env bash
# Controller bootstrap from an llmops.onprem air-gap bundle, with no network.
#
# Run it from the bundle (read-only media is fine):  <bundle>/bootstrap.sh [options]
# It needs python3.12 with its venv module on the machine, and nothing else from the internet:
#   1. a venv from the bundle's python/ wheels (pip --no-index --no-deps, exact pins: no resolver);
#   2. this collection and its dependency collections from collections/ (ansible-galaxy --offline);
#   3. checks that ansible-playbook runs and llmops.onprem resolves, then prints the site command.
# Re-running is safe: a finished bootstrap of the same bundle content is recognised and skipped.
#
# Options (or environment):
#   --prefix DIR      where the venv and collections go (LLMOPS_PREFIX; default ~/.local/share/llmops-onprem)
#   --python PATH     the Python 3.12 to use (PYTHON; default python3.12 on PATH)
#   --inventory PATH  inventory shown in the printed command (default inventories/<site>)
set -euo pipefail

die() { echo "bootstrap: $*" >&2; exit 1; }
say() { echo "bootstrap: $*" >&2; }

bundle=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
prefix=${LLMOPS_PREFIX:-${HOME}/.local/share/llmops-onprem}
python=${PYTHON:-python3.12}
inventory="inventories/<site>"
while [ $# -gt 0 ]; do
  case $1 in
    --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
    --python) python=${2:?--python needs a path}; shift 2 ;;
    --inventory) inventory=${2:?--inventory needs a path}; shift 2 ;;
    -h|--help) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

# ---- what the bundle carries ------------------------------------------------------------
lock=$bundle/python/requirements.lock
[ -f "$lock" ] || die "$lock is missing: this directory is not a complete llmops.onprem bundle (python/ holds the controller's wheels)"
shopt -s nullglob
collections=("$bundle"/collections/*.tar.gz)
shopt -u nullglob
[ ${#collections[@]} -gt 0 ] || die "$bundle/collections/ holds no collection tarballs: this is not a complete llmops.onprem bundle"

# ---- Python 3.12 -------------------------------------------------------------------------
if ! command -v "$python" >/dev/null 2>&1; then
  die "$python not found. ansible-core needs Python 3.12: install it from the site's OS media (Debian 13 / Ubuntu 24.04: apt-get install python3.12 python3.12-venv; RHEL 9: dnf install python3.12) or pass --python /path/to/python3.12"
fi
python=$(command -v "$python")
"$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' \
  || die "$python is Python $("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])'), and the bundle's wheels are for Python 3.12: install python3.12 or pass --python /path/to/python3.12"
"$python" -c 'import venv, ensurepip' 2>/dev/null \
  || die "$python has no venv/ensurepip module: install python3.12-venv (Debian/Ubuntu) or the equivalent"

# ---- already done? -----------------------------------------------------------------------
venv=$prefix/venv
colls=$prefix/collections
stamp=$prefix/bootstrap.stamp
want=$(cd "$bundle" && sha256sum python/requirements.lock collections/*.tar.gz | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/ansible-playbook" ]; then
  say "already bootstrapped from this bundle content in $prefix; nothing to do"
else
  # ---- room --------------------------------------------------------------------------------
  mkdir -p "$prefix" || die "cannot create $prefix: pass --prefix to a writable directory"
  # Installed wheels take about three times their size; collections about twice.
  need_kib=$(( $(du -sk "$bundle/python" | cut -f1) * 3 + $(du -sk "$bundle/collections" | cut -f1) * 2 ))
  have_kib=$(df -Pk "$prefix" | awk 'NR==2 {print $4}')
  [ "$need_kib" -le "$have_kib" ] || die "not enough space in $prefix: need about $((need_kib / 1024)) MiB, $((have_kib / 1024)) MiB free. Free space or pass --prefix elsewhere"

  # ---- venv from the bundle's wheels -----------------------------------------------------
  log=$prefix/bootstrap.log
  : > "$log"
  if [ ! -x "$venv/bin/python" ]; then
    say "creating the venv in $venv"
    "$python" -m venv "$venv" >>"$log" 2>&1 || die "$python -m venv $venv failed (see $log)"
  fi
  say "installing ansible-core and the collection's Python needs from $bundle/python (no network)"
  PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/python" -m pip install --no-index --no-deps \
    --find-links "$bundle/python" -r "$lock" >>"$log" 2>&1 \
    || { tail -n 15 "$log" >&2; die "pip could not install from $bundle/python (full log: $log)"; }
  "$venv/bin/python" -m pip check >>"$log" 2>&1 || { tail -n 15 "$log" >&2; die "the installed packages are inconsistent (pip check; full log: $log)"; }

  # ---- collections -----------------------------------------------------------------------
  say "installing ${#collections[@]} collections from $bundle/collections (offline)"
  ANSIBLE_COLLECTIONS_PATH=$colls "$venv/bin/ansible-galaxy" collection install --offline --force -p "$colls" \
    "${collections[@]}" >>"$log" 2>&1 \
    || { tail -n 15 "$log" >&2; die "ansible-galaxy could not install the collections (full log: $log)"; }
  echo "$want" > "$stamp"
fi

# ---- checks ------------------------------------------------------------------------------
export ANSIBLE_COLLECTIONS_PATH=$colls
"$venv/bin/ansible-playbook" --version >/dev/null || die "$venv/bin/ansible-playbook does not run"
site=$colls/ansible_collections/llmops/onprem/playbooks/site.yml
[ -f "$site" ] || die "llmops.onprem is not installed in $colls (no playbooks/site.yml)"
"$venv/bin/ansible-doc" -t role llmops.onprem.packages_repo >/dev/null 2>&1 \
  || die "ansible-doc cannot resolve llmops.onprem from $colls"

cat <<EOF
The controller is ready. Run the site install with:

  ANSIBLE_COLLECTIONS_PATH=$colls $venv/bin/ansible-playbook -i $inventory $site -e llmops_bundle=$bundle \\
      -e bundle_import_public_key=<the bundle's public key, carried separately from the bundle>
EOF
