#!/usr/bin/env bash
# Check that a Helm chart works on the test cluster's Kubernetes (1.20) and on current
# Kubernetes, without a cluster:
#   1. `helm lint` with --kube-version 1.20.2 and with the current version;
#   2. `helm template --kube-version 1.20.2`: every built-in apiVersion/kind rendered must
#      be one that Kubernetes 1.20 serves (list: k8s-1.20-api-resources.txt, taken from
#      the test cluster's discovery);
#   3. `helm template --kube-version <current>`: validated with kubernetes-validate
#      --strict against the newest schema version it ships; a built-in kind with no
#      schema there (an API removed since) is an error too. Kinds from other API groups
#      (CRDs) are reported and skipped.
#
#   tests/cluster/validate-chart.sh CHART [VALUES.yaml...]
#   env: HELM, PYTHON (a Python with kubernetes-validate), KUBE_VERSION_OLD (1.20.2),
#        KUBE_VERSION_CURRENT (default: the newest kubernetes-validate knows)
# Exit status 0 when all pass; otherwise 1 with the reasons on stderr.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
[ $# -ge 1 ] || die "usage: $0 CHART [VALUES.yaml...]"
chart=$1; shift
[ -f "$chart/Chart.yaml" ] || die "$chart is not a chart (no Chart.yaml)"
[ -x "$HELM" ] || die "helm not found at $HELM (run make setup, or set HELM)"
[ -x "$PYTHON" ] || die "python not found at $PYTHON (run make setup, or set PYTHON)"
"$PYTHON" -c 'import kubernetes_validate' 2>/dev/null || die "$PYTHON lacks kubernetes-validate (pip install kubernetes-validate)"
vals=()
for v in "$@"; do [ -f "$v" ] || die "no such values file: $v"; vals+=(-f "$v"); done
old=${KUBE_VERSION_OLD:-1.20.2}
cur=${KUBE_VERSION_CURRENT:-$("$PYTHON" -c 'from kubernetes_validate.utils import latest_version; print(latest_version())')}
name=$(basename "$(cd "$chart" && pwd)")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0

for kv in "$old" "$cur"; do
  if ! "$HELM" lint "$chart" "${vals[@]}" --kube-version "$kv" > "$tmp/lint-$kv.txt" 2>&1; then
    echo "FAIL: helm lint $name (Kubernetes $kv):" >&2; sed 's/^/  /' "$tmp/lint-$kv.txt" >&2; fail=1
  fi
  if ! "$HELM" template validate "$chart" "${vals[@]}" --kube-version "$kv" > "$tmp/render-$kv.yaml" 2> "$tmp/render-$kv.err"; then
    echo "FAIL: helm template $name --kube-version $kv:" >&2; sed 's/^/  /' "$tmp/render-$kv.err" >&2; fail=1
  fi
done
[ $fail = 0 ] || exit 1

"$PYTHON" - "$tmp" "$old" "$cur" "$CLUSTER_HERE/k8s-1.20-api-resources.txt" "$name" <<'EOF'
import re, subprocess, sys, yaml
tmp, old, cur, served_file, name = sys.argv[1:]

def builtin(api_version):
    group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
    return group == "" or "." not in group or group.endswith(".k8s.io")

def docs(path):
    with open(path) as fh:
        return [d for d in yaml.safe_load_all(fh) if isinstance(d, dict) and d]

errors, notes = [], []
served = set()
with open(served_file) as fh:
    for line in fh:
        if line.strip() and not line.startswith("#"):
            served.add(tuple(line.split()[:2]))
old_docs = docs("%s/render-%s.yaml" % (tmp, old))
for d in old_docs:
    av, kind = d.get("apiVersion", "?"), d.get("kind", "?")
    who = "%s %s/%s" % (av, kind, d.get("metadata", {}).get("name", "?"))
    if not builtin(av):
        notes.append("not a built-in API, skipped for %s: %s" % (old, who))
    elif (av, kind) not in served:
        errors.append("Kubernetes %s does not serve %s %s (rendered with --kube-version %s: %s); "
                      "pick the API version with .Capabilities" % (old, av, kind, old, who))

cur_path = "%s/render-%s.yaml" % (tmp, cur)
cur_docs = docs(cur_path)
p = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "-k", cur, cur_path],
                   capture_output=True, text=True)
out = (p.stdout + p.stderr).replace(cur_path, "%s@%s" % (name, cur))
for line in out.splitlines():
    m = re.search(r"Couldn't find schema for kind (\S+) with api version (\S+)", line)
    if m:
        if builtin(m.group(2)):
            errors.append("Kubernetes %s has no %s %s (removed or never existed): %s"
                          % (cur, m.group(2), m.group(1), line.strip()))
        else:
            notes.append("no schema (custom resource?), skipped: " + line.strip())
    elif line.startswith("ERROR") or "did not validate" in line:
        errors.append(line.strip())
if p.returncode != 0 and not errors:
    errors.append("kubernetes-validate failed (rc %d): %s" % (p.returncode, out.strip()))

for n in notes:
    print("note: " + n)
if errors:
    for e in errors:
        print("FAIL: " + e, file=sys.stderr)
    sys.exit(1)
print("validate-chart: %s OK: helm lint (%s, %s); %d resources use APIs Kubernetes %s serves; "
      "%d resources pass kubernetes-validate --strict for %s"
      % (name, old, cur, len(old_docs), old, len(cur_docs), cur))
EOF
