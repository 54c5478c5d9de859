#!/usr/bin/env bash
# Start a single-node Kubernetes v1.20.2 test cluster on this machine:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd (CRI, CNI
# bridge), kubelet and kube-proxy (iptables), all bound to 127.0.0.1 or the harness's
# own bridge. Binaries come from build.sh (cached). Pods run local images only
# (localhost/busybox:1 is built and imported here; see serving/images/mkimage.py and load-image.sh).
#
#   tests/cluster/up.sh [--load ARCHIVE.tar]... [--allow CIDR]...
#
# --allow lets pods reach a network this machine's own lab created (the demo's podman network);
# by default pods reach only each other and this host.
# Idempotent: when the cluster already runs and the node is Ready it says so and exits 0.
# Work dir: ${LLMOPS_CLUSTER_DIR:-<repo>/.lab/cluster}. The last output line is
# KUBECONFIG=<work dir>/admin.kubeconfig. Stop with down.sh. Needs root.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

loads=() allows=()
while [ $# -gt 0 ]; do
  case $1 in
    --load) loads+=("$2"); shift 2 ;;
    --allow) allows+=("$2"); shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
[ "$(id -u)" = 0 ] || die "up.sh needs root (containerd, kubelet, iptables, bridge)"
t0=$(date +%s.%N)
elapsed() { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }

# Pods may talk to each other, to this host, and to the networks named with --allow (networks this
# machine's own tests or lab created, e.g. the demo lab's podman network), nothing else (the CNI
# bridge turns on ip_forward). Our own chain; down.sh removes it.
guard_rules() {
  local cidr
  iptables -w -N "$K8S_GUARD_CHAIN" 2>/dev/null || iptables -w -F "$K8S_GUARD_CHAIN"
  iptables -w -A "$K8S_GUARD_CHAIN" -s "$K8S_POD_CIDR" -d "$K8S_POD_CIDR" -j RETURN
  for cidr in "${allows[@]}"; do
    [[ $cidr =~ ^[0-9.]+/[0-9]+$ ]] || die "--allow $cidr: give an IPv4 network as a.b.c.d/len"
    iptables -w -A "$K8S_GUARD_CHAIN" -s "$K8S_POD_CIDR" -d "$cidr" -j RETURN
  done
  iptables -w -A "$K8S_GUARD_CHAIN" -s "$K8S_POD_CIDR" -j DROP
  iptables -w -C FORWARD -j "$K8S_GUARD_CHAIN" 2>/dev/null || iptables -w -I FORWARD 1 -j "$K8S_GUARD_CHAIN"
}

all_alive() { local c; for c in $K8S_COMPONENTS; do pid_alive "$c" || return 1; done; }
if [ -f "$W/admin.kubeconfig" ] && all_alive && node_ready; then
  echo "cluster already running and node Ready ($W)"
  [ ${#allows[@]} -eq 0 ] || { guard_rules; echo "pods may also reach: ${allows[*]}"; }
  for a in "${loads[@]}"; do "$CLUSTER_HERE/load-image.sh" "$a"; done
  echo "KUBECONFIG=$W/admin.kubeconfig"
  exit 0
fi
if [ -n "$(ls -A "$W/pids" 2>/dev/null)" ] || [ -e "$W/sysctl.before" ] || ip link show "$K8S_BRIDGE" >/dev/null 2>&1; then
  log "a previous cluster is partly running, unhealthy or was not stopped: stopping it first"
  "$CLUSTER_HERE/down.sh" || die "down.sh could not clean up the previous cluster"
fi

ensure_debs etcd-server etcd-client containerd runc containernetworking-plugins busybox-static \
  iptables conntrack openssl curl jq iproute2
BIN=$("$CLUSTER_HERE/build.sh" | sed -n 's/^K8S_BIN=//p')
[ -x "$BIN/kube-apiserver" ] || die "build.sh gave no binaries"
log "binaries: $BIN"
t0=$(date +%s.%N)   # the warm start time counts from here (binaries ready)

mkdir -p "$W"/{logs,pids,pki,images,cni/net.d,cni/ipam,containerd,kubelet,kube-proxy,etcd}
chmod 700 "$W/pki" "$W/etcd"

# ---- kernel settings: record before anything changes them ---------------------
if [ ! -s "$W/sysctl.before" ]; then
  for s in $K8S_SYSCTLS; do
    v=$(sysctl -n "$s" 2>/dev/null) && echo "$s=$v"
  done > "$W/sysctl.before.tmp"
  mv "$W/sysctl.before.tmp" "$W/sysctl.before"
fi

# ---- PKI and kubeconfigs (kept between runs) ----------------------------------
P=$W/pki
if [ ! -s "$P/sa.pub" ]; then
  (
    cd "$P"
    umask 077
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -subj /CN=llmops-test-cluster-ca -days 3650 -out ca.crt 2>/dev/null
    printf 'subjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:%s,IP:%s\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n' \
      "$K8S_SVC_APISERVER_IP" "$K8S_POD_GW" > server.ext
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -subj /CN=kube-apiserver -out apiserver.csr 2>/dev/null
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -extfile server.ext -out apiserver.crt 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n' > client.ext
    # name | CN | O : RBAC's bootstrap roles bind these user and group names.
    for spec in 'admin|llmops-admin|system:masters' \
                'kube-controller-manager|system:kube-controller-manager|' \
                'kube-scheduler|system:kube-scheduler|' \
                'kubelet|system:node:localhost|system:nodes' \
                'kube-proxy|system:kube-proxy|' \
                'apiserver-kubelet-client|kube-apiserver-kubelet-client|system:masters'; do
      IFS='|' read -r n cn o <<<"$spec"
      subj="/CN=$cn"; [ -n "$o" ] && subj="/O=$o$subj"
      openssl req -newkey rsa:2048 -nodes -keyout "$n.key" -subj "$subj" -out "$n.csr" 2>/dev/null
      openssl x509 -req -in "$n.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -extfile client.ext -out "$n.crt" 2>/dev/null
    done
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    rm -f ./*.csr
  )
  log "PKI created"
fi
for n in admin kube-controller-manager kube-scheduler kubelet kube-proxy; do
  umask 077
  cat > "$W/$n.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: llmops-test
  cluster:
    server: https://127.0.0.1:$K8S_API_PORT
    certificate-authority-data: $(base64 -w0 "$P/ca.crt")
users:
- name: $n
  user:
    client-certificate-data: $(base64 -w0 "$P/$n.crt")
    client-key-data: $(base64 -w0 "$P/$n.key")
contexts:
- name: llmops-test
  context: {cluster: llmops-test, user: $n}
current-context: llmops-test
EOF
  umask 022
done

start() { # NAME CMD...: run in its own session, log and pid under the work dir
  local n=$1; shift
  setsid "$@" > "$W/logs/$n.log" 2>&1 < /dev/null &
  echo $! > "$W/pids/$n.pid"
}
wait_for() { # WHAT SECONDS CMD...
  local what=$1 secs=$2 i; shift 2
  for ((i = 0; i < secs * 4; i++)); do "$@" && return 0; sleep 0.25; done
  die "$what not ready after ${secs}s; see $W/logs/"
}
alive_or_die() { pid_alive "$1" || { tail -n 20 "$W/logs/$1.log" >&2; die "$1 exited; see $W/logs/$1.log"; }; }

# ---- etcd + kube-apiserver -----------------------------------------------------
start etcd etcd --name llmops-test --data-dir "$W/etcd" \
  --listen-client-urls "http://127.0.0.1:$K8S_ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$K8S_ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$K8S_ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$K8S_ETCD_PEER_PORT" \
  --initial-cluster "llmops-test=http://127.0.0.1:$K8S_ETCD_PEER_PORT" --initial-cluster-state new \
  --auto-compaction-retention 1 --quota-backend-bytes 2147483648
start kube-apiserver "$BIN/kube-apiserver" \
  --etcd-servers="http://127.0.0.1:$K8S_ETCD_PORT" \
  --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$K8S_API_PORT" --insecure-port=0 \
  --endpoint-reconciler-type=none --service-cluster-ip-range="$K8S_SVC_CIDR" \
  --tls-cert-file="$P/apiserver.crt" --tls-private-key-file="$P/apiserver.key" --client-ca-file="$P/ca.crt" \
  --kubelet-client-certificate="$P/apiserver-kubelet-client.crt" --kubelet-client-key="$P/apiserver-kubelet-client.key" \
  --kubelet-preferred-address-types=Hostname \
  --service-account-key-file="$P/sa.pub" --service-account-signing-key-file="$P/sa.key" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction --allow-privileged=true \
  --profiling=false
wait_for kube-apiserver 60 kube_ready
log "apiserver ready ($(elapsed) s)"

# The "kubernetes" Service: the apiserver listens on loopback only, and a loopback
# address is invalid in Endpoints, so they name the bridge gateway instead; iptables
# DNAT (chain $K8S_GUARD_CHAIN-API below) takes pods' connections on to 127.0.0.1:6443.
put_endpoints() { # the default namespace appears a moment after /readyz
  curl -sf --max-time 5 --cacert "$P/ca.crt" --cert "$P/admin.crt" --key "$P/admin.key" -X PUT \
    -H 'Content-Type: application/json' "https://127.0.0.1:$K8S_API_PORT/api/v1/namespaces/default/endpoints/kubernetes" \
    -d "{\"apiVersion\":\"v1\",\"kind\":\"Endpoints\",\"metadata\":{\"name\":\"kubernetes\",\"namespace\":\"default\"},
         \"subsets\":[{\"addresses\":[{\"ip\":\"$K8S_POD_GW\"}],\"ports\":[{\"name\":\"https\",\"port\":$K8S_API_PORT,\"protocol\":\"TCP\"}]}]}" \
    >/dev/null 2>&1
}
wait_for "the kubernetes Endpoints" 30 put_endpoints

# ---- controller-manager + scheduler ---------------------------------------------
start kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig="$W/kube-controller-manager.kubeconfig" \
  --authentication-kubeconfig="$W/kube-controller-manager.kubeconfig" --authorization-kubeconfig="$W/kube-controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --port=0 --leader-elect=false --use-service-account-credentials=true \
  --service-account-private-key-file="$P/sa.key" --root-ca-file="$P/ca.crt" \
  --cluster-signing-cert-file="$P/ca.crt" --cluster-signing-key-file="$P/ca.key" \
  --service-cluster-ip-range="$K8S_SVC_CIDR" --controllers='*,-nodeipam,-cloud-node-lifecycle' --profiling=false
start kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$W/kube-scheduler.kubeconfig" \
  --authentication-kubeconfig="$W/kube-scheduler.kubeconfig" --authorization-kubeconfig="$W/kube-scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --port=0 --leader-elect=false --profiling=false

# ---- pod network: our bridge, guard rules, CNI config ---------------------------
if ! ip link show "$K8S_BRIDGE" >/dev/null 2>&1; then
  ip link add "$K8S_BRIDGE" type bridge
fi
ip addr replace "$K8S_POD_GW/${K8S_POD_CIDR#*/}" dev "$K8S_BRIDGE"
ip link set "$K8S_BRIDGE" up
# Service IPs go to the bridge, never out of the default route (if kube-proxy has not
# programmed a Service yet, the packet stays on the bridge, where only our pods are).
ip route replace "$K8S_SVC_CIDR" dev "$K8S_BRIDGE"
guard_rules
iptables -w -t nat -N "$K8S_GUARD_CHAIN-API" 2>/dev/null || iptables -w -t nat -F "$K8S_GUARD_CHAIN-API"
# Pods reach the API server (loopback only) at the "kubernetes" Service IP and at the
# bridge gateway: DNAT to 127.0.0.1, ahead of kube-proxy's rules. route_localnet is
# switched on for the bridge alone (it goes away with the bridge).
sysctl -q -w "net.ipv4.conf.$K8S_BRIDGE.route_localnet=1"
for dst in "$K8S_SVC_APISERVER_IP:443" "$K8S_POD_GW:$K8S_API_PORT"; do
  iptables -w -t nat -A "$K8S_GUARD_CHAIN-API" -i "$K8S_BRIDGE" -d "${dst%:*}" -p tcp --dport "${dst#*:}" \
    -j DNAT --to-destination "127.0.0.1:$K8S_API_PORT"
done
iptables -w -t nat -C PREROUTING -j "$K8S_GUARD_CHAIN-API" 2>/dev/null || iptables -w -t nat -I PREROUTING 1 -j "$K8S_GUARD_CHAIN-API"

cat > "$W/cni/net.d/10-llmops-k8s.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "llmops-k8s",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$K8S_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$W/cni/ipam",
        "ranges": [[{"subnet": "$K8S_POD_CIDR", "gateway": "$K8S_POD_GW"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "loopback"}
  ]
}
EOF

# ---- containerd ------------------------------------------------------------------
C=$W/containerd
mkdir -p "$C/root" "$C/state" "$C/opt" "$C/runc"
cat > "$C/config.toml" <<EOF
version = 2
root = "$C/root"
state = "$C/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$C/containerd.sock"
[ttrpc]
  address = "$C/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$C/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pause:3.4"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  # This sandbox lacks CAP_SYS_RESOURCE: without this every pod sandbox fails with
  # "failed to update /proc/self/oom_score_adj: Permission denied".
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$C/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$W/cni/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$C/certs.d"
EOF
start containerd containerd --config "$C/config.toml"
wait_for containerd 30 test -S "$C/containerd.sock"
wait_for containerd 30 eval "ctr_k8s version >/dev/null 2>&1"
alive_or_die containerd

# ---- local images: pause (pod sandbox) and busybox -----------------------------------
PY3=$(command -v python3)
"$PY3" "$CLUSTER_HERE/../../serving/images/mkimage.py" --tag localhost/pause:3.4 --output "$W/images/pause.tar" \
  --add "$BIN/pause:/pause:0755" --entrypoint '["/pause"]' --user 65535:65535 >/dev/null
"$PY3" "$CLUSTER_HERE/../../serving/images/mkimage.py" --tag localhost/busybox:1 --output "$W/images/busybox.tar" \
  --busybox /bin/busybox --cmd '["sh"]' >/dev/null
for a in "$W/images/pause.tar" "$W/images/busybox.tar" "${loads[@]}"; do
  ctr_k8s images import --no-unpack=false "$a" >/dev/null || die "ctr images import $a failed"
done
log "images imported: $(ctr_k8s images ls -q | grep -v '^sha256:' | tr '\n' ' ')($(elapsed) s)"

# ---- kubelet -----------------------------------------------------------------------
# No cluster DNS: pods get an empty resolv.conf, so nothing resolves names by accident.
echo "# llmops test cluster: no DNS" > "$W/kubelet/resolv.conf"
cat > "$W/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $P/ca.crt}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
failSwapOn: false
resolvConf: $W/kubelet/resolv.conf
makeIPTablesUtilChains: false
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
rotateCertificates: false
serializeImagePulls: false
# Report status often: the node turns Ready seconds after start, not at the next 10 s tick.
nodeStatusUpdateFrequency: 2s
EOF
start kubelet "$BIN/kubelet" --config="$W/kubelet/config.yaml" --kubeconfig="$W/kubelet.kubeconfig" \
  --hostname-override=localhost --root-dir="$W/kubelet/root" --cert-dir="$W/kubelet/pki" \
  --container-runtime=remote --container-runtime-endpoint="unix://$C/containerd.sock" \
  --image-service-endpoint="unix://$C/containerd.sock" --pod-infra-container-image=localhost/pause:3.4 \
  --v=1

# ---- kube-proxy ----------------------------------------------------------------------
cat > "$W/kube-proxy/config.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $W/kube-proxy.kubeconfig}
mode: iptables
hostnameOverride: localhost
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
clusterCIDR: $K8S_POD_CIDR
# NodePorts on loopback only, never on the machine's other addresses.
nodePortAddresses: ["127.0.0.0/8"]
iptables:
  # Every Service connection is masqueraded, so replies between pods on the same bridge
  # come back through the host and get un-NATed.
  masqueradeAll: true
  syncPeriod: 30s
  minSyncPeriod: 0s
# Leave the kernel's conntrack settings alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
start kube-proxy "$BIN/kube-proxy" --config="$W/kube-proxy/config.yaml"

# ---- wait for the node ----------------------------------------------------------------
for ((i = 0; i < 240; i++)); do
  node_ready && break
  for c in $K8S_COMPONENTS; do alive_or_die "$c"; done
  sleep 0.5
done
node_ready || die "node not Ready after 120 s; see $W/logs/kubelet.log"
# kube-proxy put its Service jump at the top of PREROUTING: put ours back ahead of it,
# so pods' connections to the "kubernetes" Service go to the loopback API server.
for ((i = 0; i < 120; i++)); do
  iptables -w -t nat -S PREROUTING | grep -q -- '-j KUBE-SERVICES' && break
  sleep 0.25
done
iptables -w -t nat -S PREROUTING | grep -q -- '-j KUBE-SERVICES' || die "kube-proxy wrote no rules; see $W/logs/kube-proxy.log"
iptables -w -t nat -D PREROUTING -j "$K8S_GUARD_CHAIN-API"
iptables -w -t nat -I PREROUTING 1 -j "$K8S_GUARD_CHAIN-API"
for c in $K8S_COMPONENTS; do alive_or_die "$c"; done
cp "$W/admin.kubeconfig" "$W/admin.kubeconfig.tmp" && mv "$W/admin.kubeconfig.tmp" "$W/admin.kubeconfig"
log "node localhost Ready in $(elapsed) s (from cached binaries to Ready)"
echo "KUBECONFIG=$W/admin.kubeconfig"
