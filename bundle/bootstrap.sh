#!/bin/sh
# Controller bootstrap from an llmops.onprem air-gap bundle, with no network. POSIX sh.
#
# It runs from the directory llmops-verify.sh extracted and checked, never from the medium:
#   sh llmops-verify.sh --key SITE_KEY --bundle /media/usb --extract ~/llmops-bootstrap
#   sh ~/llmops-bootstrap/bootstrap.sh --inventory inventories/<site>
# It needs a Python the bundle carries wheels for (each python/requirements*.lock names the versions
# it serves; by default 3.11 with ansible-core 2.19 in requirements-3.11.lock, for Debian 12's
# python3, and 3.12 and 3.13 with the newer ansible-core in requirements.lock) with its venv
# module, and nothing else from the internet:
#   0. every file here against SHA256SUMS, which llmops-verify.sh wrote from the signed manifest,
#      before anything is created;
#   1. a venv from python/ with that interpreter (pip --no-index --no-deps --require-hashes: every
#      wheel against the sha256 pinned in the lock that serves its version; pip takes its wheels);
#   2. the collections from collections/ (ansible-galaxy --offline), each checked again first;
#   3. checks that ansible-playbook runs and llmops.onprem resolves, then prints the site command.
# Re-running is safe: a finished bootstrap of the same bundle content is recognised and skipped.
#
# Options (or environment):
#   --prefix DIR      where the venv and collections go (LLMOPS_PREFIX; default ~/.local/share/llmops-onprem)
#   --python PATH     the Python to use (PYTHON; default: python3 on PATH if the bundle has its
#                     wheels, else the first python3.X on PATH that it has, newest first)
#   --inventory PATH  inventory shown in the printed command (default inventories/<site>)
set -eu

die() { printf 'bootstrap: %s\n' "$*" >&2; exit 1; }
say() { printf 'bootstrap: %s\n' "$*" >&2; }

here=$(cd "$(dirname "$0")" && pwd -P)
prefix=${LLMOPS_PREFIX:-${HOME}/.local/share/llmops-onprem}
python=${PYTHON:-}
inventory="inventories/<site>"
while [ $# -gt 0 ]; do
  case $1 in
    --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; prefix=$2; shift 2 ;;
    --python) [ $# -ge 2 ] || die "--python needs a path"; python=$2; shift 2 ;;
    --inventory) [ $# -ge 2 ] || die "--inventory needs a path"; inventory=$2; shift 2 ;;
    -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

# ---- 0. only what llmops-verify.sh checked against the signed manifest -----------------------
if [ ! -f "$here/SHA256SUMS" ] || [ ! -f "$here/VERIFIED" ]; then
  die "$here was not extracted by llmops-verify.sh (no SHA256SUMS/VERIFIED): nothing from a bundle runs before its signature is checked. Nothing was installed. Run: sh llmops-verify.sh --key <the site's public key> --bundle <the medium> --extract <new dir>, then the bootstrap.sh in that dir"
fi
cd "$here"
sha256sum -c --strict --quiet SHA256SUMS >/dev/null 2>&1 || {
  sha256sum -c --strict --quiet SHA256SUMS >&2 2>&1 || true
  die "files in $here differ from the sha256 that llmops-verify.sh checked against the signed manifest (above): they changed after verification. Nothing was installed. Extract again with llmops-verify.sh"
}
for f in python/* collections/*; do
  [ -e "$f" ] || continue
  awk -v f="$f" '$2 == f { found = 1 } END { exit !found }' SHA256SUMS || die "$here/$f is not in SHA256SUMS (not from the signed bundle). Nothing was installed. Extract again with llmops-verify.sh into a new directory"
done
[ -f "$here/python/requirements.lock" ] || die "$here/python/requirements.lock is missing: this is not a complete llmops.onprem bootstrap"
for lock in "$here"/python/requirements*.lock; do
  grep -q -- '--hash=sha256:' "$lock" || die "$lock has no --hash=sha256: pins, so pip could not check the wheels: rebuild the bundle with this llmops.onprem"
  grep -q '^# llmops-python-versions: *[0-9]' "$lock" || die "$lock names no Python versions (no '# llmops-python-versions:' line): rebuild the bundle with this llmops.onprem"
done
set -- "$here"/collections/*.tar.gz
[ -f "$1" ] || die "$here/collections/ holds no collection tarballs: this is not a complete llmops.onprem bootstrap"
ncoll=$#
bundle=$(sed -n 's/^bundle //p' VERIFIED)
pubkey=$(sed -n 's/^public_key //p' VERIFIED)

# ---- a Python the bundle has wheels for, and its lock --------------------------------------
# Each lock serves the versions on its "# llmops-python-versions:" line; "3.11 2.19" style pairs
# (version, ansible-core; "-" where a lock pins none) say which, newest version first.
pairs=$(for f in "$here"/python/requirements*.lock; do
  c=$(sed -n 's/^ansible-core==\([0-9]*\.[0-9]*\).*/\1/p' "$f")
  sed -n 's/^# llmops-python-versions: *//p' "$f" | tr ' ' '\n' | while read -r v; do [ -z "$v" ] || echo "$v ${c:--}"; done
done | sort -t. -k2,2nr -u)
versions=$(echo "$pairs" | cut -d' ' -f1 | sort -t. -k2,2n | tr '\n' ' ' | sed 's/ $//')
carried=$(echo "$versions" | sed 's/ /, /g')
# "ansible-core 2.19 on Python 3.11, 2.21 on 3.12 and 3.13": what each version gets.
cores=$(echo "$pairs" | sort -t. -k2,2n | awk '
  $2 == "-" { next }
  { if (!($2 in seen)) { order[++n] = $2; seen[$2] = 1 }; vs[$2] = vs[$2] ? vs[$2] " " $1 : $1 }
  END { for (i = 1; i <= n; i++) { c = order[i]; k = split(vs[c], a, " "); s = a[1]
          for (j = 2; j <= k; j++) s = s (j == k ? " and " : ", ") a[j]
          out = out (i > 1 ? ", " : "") (i == 1 ? "ansible-core " c " on Python " : c " on ") s }
        print out }')
pyver() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null; }
carries() { case " $versions " in *" $1 "*) return 0 ;; esac; return 1; }
lock_for() { # the lock whose versions line names $1
  for f in "$here"/python/requirements*.lock; do
    case " $(sed -n 's/^# llmops-python-versions: *//p' "$f") " in *" $1 "*) echo "$f"; return 0 ;; esac
  done
  return 1
}
hint="install one from the site's OS media (Debian 12: python3-venv; Ubuntu 24.04: python3.12-venv; RHEL 9: python3.11 or python3.12; Debian 13: python3.13-venv) or pass --python /path/to/python3.X"
if [ -z "$python" ]; then
  seen=""
  for c in python3 $(for v in $versions; do echo "python$v"; done | sort -t. -k2,2nr); do
    command -v "$c" >/dev/null 2>&1 || continue
    v=$(pyver "$c") || continue
    if carries "$v"; then python=$c; break; fi
    seen="$seen, $(command -v "$c") is $v"
  done
  [ -n "$python" ] || die "no Python on PATH that this bundle has wheels for (Python $carried${cores:+: $cores}${seen:+; }${seen#, }): $hint"
fi
if ! command -v "$python" >/dev/null 2>&1; then
  die "$python not found. This bundle carries wheels for Python $carried${cores:+ ($cores)}: $hint"
fi
python=$(command -v "$python")
v=$(pyver "$python") || die "$python does not run as a Python interpreter"
carries "$v" \
  || die "$python is Python $v, and this bundle carries wheels for Python $carried only${cores:+ ($cores)}: $hint. Nothing was installed"
"$python" -c 'import venv, ensurepip' 2>/dev/null \
  || die "$python has no venv/ensurepip module: install python$v-venv (Debian/Ubuntu) or the equivalent"
lock=$(lock_for "$v")
core=$(echo "$pairs" | awk -v v="$v" '$1 == v && $2 != "-" { print $2 }')
say "using $python (Python $v${core:+, ansible-core $core} from python/$(basename "$lock"); the bundle carries wheels for $carried)"

# ---- already done? -----------------------------------------------------------------------
venv=$prefix/venv
colls=$prefix/collections
stamp=$prefix/bootstrap.stamp
want=$(sha256sum < SHA256SUMS | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/ansible-playbook" ]; then
  say "already bootstrapped from this bundle content in $prefix; nothing to do"
else
  # ---- room --------------------------------------------------------------------------------
  mkdir -p "$prefix" || die "cannot create $prefix: pass --prefix to a writable directory"
  # Installed wheels take about three times their size; collections about twice.
  need_kib=$(( $(du -sk "$here/python" | cut -f1) * 3 + $(du -sk "$here/collections" | cut -f1) * 2 ))
  have_kib=$(df -Pk "$prefix" | awk 'NR==2 {print $4}')
  [ "$need_kib" -le "$have_kib" ] || die "not enough space in $prefix: need about $((need_kib / 1024)) MiB, $((have_kib / 1024)) MiB free. Free space or pass --prefix elsewhere"

  # ---- venv from the bundle's wheels, each against its pinned sha256 ----------------------
  log=$prefix/bootstrap.log
  : > "$log"
  if [ ! -x "$venv/bin/python" ]; then
    say "creating the venv in $venv"
    "$python" -m venv "$venv" >>"$log" 2>&1 || die "$python -m venv $venv failed (see $log)"
  fi
  say "installing ansible-core and the collection's Python needs from $here/python (no network, --require-hashes)"
  PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/python" -m pip install --no-index --no-deps --require-hashes \
    --find-links "$here/python" -r "$lock" >>"$log" 2>&1 \
    || { tail -n 15 "$log" >&2; die "pip could not install from $here/python (full log: $log)"; }
  "$venv/bin/python" -m pip check >>"$log" 2>&1 || { tail -n 15 "$log" >&2; die "the installed packages are inconsistent (pip check; full log: $log)"; }

  # ---- collections, each checked against the signed sha256 right before install ----------
  grep '  collections/' SHA256SUMS | sha256sum -c --strict --quiet - >/dev/null 2>&1 \
    || die "a collection tarball in $here/collections changed after verification: nothing more installed. Extract again with llmops-verify.sh"
  say "installing $ncoll collections from $here/collections (offline)"
  ANSIBLE_COLLECTIONS_PATH=$colls "$venv/bin/ansible-galaxy" collection install --offline --force -p "$colls" \
    "$@" >>"$log" 2>&1 \
    || { tail -n 15 "$log" >&2; die "ansible-galaxy could not install the collections (full log: $log)"; }
  echo "$want" > "$stamp"
fi

# ---- checks ------------------------------------------------------------------------------
export ANSIBLE_COLLECTIONS_PATH="$colls"
"$venv/bin/ansible-playbook" --version >/dev/null || die "$venv/bin/ansible-playbook does not run"
site=$colls/ansible_collections/llmops/onprem/playbooks/site.yml
[ -f "$site" ] || die "llmops.onprem is not installed in $colls (no playbooks/site.yml)"
"$venv/bin/ansible-doc" -t role llmops.onprem.packages_repo >/dev/null 2>&1 \
  || die "ansible-doc cannot resolve llmops.onprem from $colls"

cat <<EOT
The controller is ready. Run the site install with:

  ANSIBLE_COLLECTIONS_PATH=$colls $venv/bin/ansible-playbook -i $inventory $site -e llmops_bundle=$bundle \\
      -e bundle_import_public_key=$pubkey
EOT
