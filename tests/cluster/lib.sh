# shellcheck shell=bash disable=SC2034
# Shared settings and helpers for the single-node Kubernetes test cluster harness.
# Sourced by build.sh, up.sh, down.sh, load-image.sh, fake-gpu.sh and run-tests.sh; not run.
#
# Environment (all optional):
#   LLMOPS_CACHE          project cache (default ${XDG_CACHE_HOME:-$HOME/.cache}/llmops-onprem);
#                         built binaries live under $LLMOPS_CACHE/k8s/<source version>/
#   LLMOPS_CLUSTER_DIR    the cluster's work dir (default <repo>/.lab/cluster)
#   LLMOPS_K8S_SRC_VERSION  pin the Debian source version (default: what bookworm has)
#   HELM, KUBECTL, PYTHON client tools (default: the repo's .tools/bin and .venv)

CLUSTER_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$CLUSTER_HERE/../.." && pwd)
LLMOPS_CACHE=${LLMOPS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llmops-onprem}
K8S_CACHE=$LLMOPS_CACHE/k8s
W=${LLMOPS_CLUSTER_DIR:-$REPO_ROOT/.lab/cluster}

HELM=${HELM:-$REPO_ROOT/.tools/bin/helm}
KUBECTL=${KUBECTL:-$REPO_ROOT/.tools/bin/kubectl}
PYTHON=${PYTHON:-$REPO_ROOT/.venv/bin/python}

# Network layout. Chosen away from podman's defaults (10.88.0.0/16, 10.89.x.0/24).
K8S_BRIDGE=llmk8s0
K8S_POD_CIDR=10.244.0.0/24
K8S_POD_GW=10.244.0.1
K8S_SVC_CIDR=10.96.0.0/24
K8S_SVC_APISERVER_IP=10.96.0.1
K8S_API_PORT=6443
K8S_ETCD_PORT=2379
K8S_ETCD_PEER_PORT=2380
K8S_GUARD_CHAIN=LLMK8S-GUARD

# Kernel settings that the kubelet, kube-proxy or the CNI bridge plugin change; up.sh
# records them before starting anything and down.sh puts them back.
K8S_SYSCTLS="vm.overcommit_memory kernel.panic kernel.panic_on_oops net.ipv4.ip_forward
net.ipv4.conf.all.route_localnet net.bridge.bridge-nf-call-iptables net.netfilter.nf_conntrack_max"

# The processes up.sh starts, in start order (down.sh stops them in reverse).
K8S_COMPONENTS="etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy"
K8S_BINARIES="kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy"

ts() { date +%H:%M:%S; }
log() { echo "$(ts) $*"; }
die() { echo "ERROR: $*" >&2; exit 1; }

# ensure_debs PKG... : install the Debian packages that are missing (plain apt-get).
ensure_debs() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  [ "$(id -u)" = 0 ] || die "need root to install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --no-install-recommends "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
}

# Apt options that keep the deb-src download inside the project cache: /etc/apt is not touched.
apt_src_opts() {
  local d=$K8S_CACHE/apt
  echo "-o Dir::Etc::SourceList=$d/src.list -o Dir::Etc::SourceParts=/dev/null" \
       "-o Dir::State::Lists=$d/lists -o Dir::Cache=$d/cache -o APT::Sandbox::User=root"
}

# Write $K8S_CACHE/apt/src.list: a deb-src line for every deb source this machine's apt
# already uses (mirror, suites, components and keyring all taken from /etc/apt).
write_src_list() {
  local d=$K8S_CACHE/apt
  mkdir -p "$d/lists/partial" "$d/cache/archives/partial"
  python3 - "$d/src.list" <<'EOF'
import glob, re, sys
lines = []
for f in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for para in re.split(r"\n\s*\n", open(f).read()):
        fields, key = {}, None
        for ln in para.splitlines():
            if ln.startswith("#") or not ln.strip():
                continue
            if ln[0] in " \t" and key:
                fields[key] += " " + ln.strip()
                continue
            key, _, val = ln.partition(":")
            key = key.strip().lower()
            fields[key] = val.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes") == "no":
            continue
        opt = " [signed-by=%s]" % fields["signed-by"] if fields.get("signed-by", "").startswith("/") else ""
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                lines.append("deb-src%s %s %s %s" % (opt, uri, suite, fields.get("components", "main")))
for f in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
    try:
        for ln in open(f):
            ln = ln.split("#", 1)[0].split()
            if ln and ln[0] == "deb":
                lines.append(" ".join(["deb-src"] + ln[1:]))
    except FileNotFoundError:
        pass
if not lines:
    sys.exit("no deb sources found in /etc/apt; cannot derive a deb-src mirror")
open(sys.argv[1], "w").write("\n".join(dict.fromkeys(lines)) + "\n")
EOF
}

# k8s_src_version: the Debian source version of kubernetes in bookworm (cached apt lists
# are reused, so a warm run needs no network).
k8s_src_version() {
  if [ -n "${LLMOPS_K8S_SRC_VERSION:-}" ]; then echo "$LLMOPS_K8S_SRC_VERSION"; return; fi
  local d=$K8S_CACHE/apt v
  # shellcheck disable=SC2046
  if ! ls "$d"/lists/*Sources* >/dev/null 2>&1; then
    write_src_list
    apt-get $(apt_src_opts) -qq update >&2 || die "apt-get update (deb-src) failed"
  fi
  # shellcheck disable=SC2046
  v=$(apt-get $(apt_src_opts) -qq source --print-uris kubernetes/bookworm 2>/dev/null \
      | awk '$2 ~ /\.dsc$/ {sub(/^kubernetes_/, "", $2); sub(/\.dsc$/, "", $2); print $2; exit}')
  [ -n "$v" ] || die "cannot find the kubernetes source package for bookworm in $d/src.list"
  echo "$v"
}

kube_ready() { # the apiserver answers /readyz with the admin cert
  curl -sf --max-time 3 --cacert "$W/pki/ca.crt" --cert "$W/pki/admin.crt" --key "$W/pki/admin.key" \
    "https://127.0.0.1:$K8S_API_PORT/readyz" >/dev/null 2>&1
}

node_ready() { # node "localhost" has condition Ready=True
  curl -sf --max-time 3 --cacert "$W/pki/ca.crt" --cert "$W/pki/admin.crt" --key "$W/pki/admin.key" \
    "https://127.0.0.1:$K8S_API_PORT/api/v1/nodes/localhost" 2>/dev/null \
    | jq -e '.status.conditions[] | select(.type=="Ready") | .status=="True"' >/dev/null 2>&1
}

pid_alive() { # NAME: the recorded process runs (and is still that program)
  local f=$W/pids/$1.pid p
  [ -f "$f" ] || return 1
  p=$(cat "$f")
  [ -n "$p" ] && kill -0 "$p" 2>/dev/null && tr '\0' ' ' 2>/dev/null < "/proc/$p/cmdline" | grep -q -- "$1"
}

# harness_pids: every process that belongs to this cluster: the recorded components,
# anything whose command line names the work dir (containerd shims, ...), and the
# processes in the kubelet's pod cgroups.
harness_pids() {
  local p c
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [ "$p" = $$ ] && continue
    c=$(tr '\0' ' ' 2>/dev/null < "/proc/$p/cmdline") || continue
    case $c in *"$W/"*) echo "$p" ;; esac
  done
  cat /sys/fs/cgroup/*/kubepods/cgroup.procs /sys/fs/cgroup/*/kubepods/*/cgroup.procs \
      /sys/fs/cgroup/*/kubepods/*/*/cgroup.procs /sys/fs/cgroup/*/kubepods/*/*/*/cgroup.procs 2>/dev/null
}

ctr_k8s() { ctr --address "$W/containerd/containerd.sock" -n k8s.io "$@"; }
