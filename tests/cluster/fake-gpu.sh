#!/usr/bin/env bash
# Make the test cluster's node look like a GPU node, without a GPU:
#   - the extended resource nvidia.com/gpu: COUNT in status.capacity and .allocatable
#     (a merge patch on the node's status subresource, as the device plugin would);
#   - the labels NVIDIA GPU feature discovery sets: nvidia.com/gpu.present=true,
#     nvidia.com/gpu.product=PRODUCT, nvidia.com/gpu.count=COUNT, nvidia.com/gpu.memory=MiB,
#     nvidia.com/gpu.family (hopper, ampere, ...) and nvidia.com/gpu.compute.major/.minor
#     (the CUDA compute capability), both from PRODUCT.
#
#   tests/cluster/fake-gpu.sh [COUNT] [PRODUCT]   COUNT default 1 (0 removes it all)
#                                                 PRODUCT default NVIDIA-H100-80GB-HBM3
#   env GPU_MEMORY_MIB (default 81559, what an H100 80GB reports), NODE (default localhost),
#       GPU_FAMILY and GPU_COMPUTE (major.minor) for a product the table below does not know
#
# The kubelet keeps extended resources it does not manage (it copies capacity into
# allocatable on each status update), but zeroes them when it re-registers after a restart
# with fresh device-plugin state: run this again after restarting the cluster.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
count=${1:-1}
product=${2:-NVIDIA-H100-80GB-HBM3}
mem=${GPU_MEMORY_MIB:-81559}
node=${NODE:-localhost}
case $count in ''|*[!0-9]*) die "COUNT must be a whole number, got '$count'" ;; esac
# What GFD reports for the product's architecture (its family and CUDA compute capability).
case $product in
  *B200*) fam=blackwell cc=10.0 ;;
  *H100*|*H200*|*H800*) fam=hopper cc=9.0 ;;
  *L4|*L4-*|*L40*) fam=ada-lovelace cc=8.9 ;;
  *A10|*A10-*|*A10G*|*A40*) fam=ampere cc=8.6 ;;
  *A100*|*A800*|*A30*) fam=ampere cc=8.0 ;;
  *T4*) fam=turing cc=7.5 ;;
  *V100*) fam=volta cc=7.0 ;;
  *) fam='' cc='' ;;
esac
fam=${GPU_FAMILY:-$fam} cc=${GPU_COMPUTE:-$cc}
if [ "$count" != 0 ] && { [ -z "$fam" ] || [ -z "$cc" ]; }; then
  die "no GPU family known for '$product': set GPU_FAMILY and GPU_COMPUTE (major.minor)"
fi
[ -f "$W/pki/admin.crt" ] || die "no test cluster at $W (run tests/cluster/up.sh)"

api() { # METHOD PATH [CONTENT-TYPE BODY]
  curl -sS -f --max-time 10 --cacert "$W/pki/ca.crt" --cert "$W/pki/admin.crt" --key "$W/pki/admin.key" \
    -X "$1" ${3:+-H "Content-Type: $3"} ${4:+--data "$4"} "https://127.0.0.1:$K8S_API_PORT$2"
}

if [ "$count" = 0 ]; then
  res='null'
  labels=$(jq -nc '[("present", "product", "count", "memory", "family", "compute.major", "compute.minor")
                    | {key: ("nvidia.com/gpu." + .), value: null}] | from_entries')
else
  res="\"$count\""
  labels=$(jq -nc --arg p "$product" --arg c "$count" --arg m "$mem" --arg f "$fam" --arg cc "$cc" \
    '{"nvidia.com/gpu.present":"true","nvidia.com/gpu.product":$p,"nvidia.com/gpu.count":$c,"nvidia.com/gpu.memory":$m,
      "nvidia.com/gpu.family":$f,"nvidia.com/gpu.compute.major":($cc | split(".")[0]),
      "nvidia.com/gpu.compute.minor":($cc | split(".")[1])}')
fi
api PATCH "/api/v1/nodes/$node/status" application/merge-patch+json \
  "{\"status\":{\"capacity\":{\"nvidia.com/gpu\":$res},\"allocatable\":{\"nvidia.com/gpu\":$res}}}" >/dev/null \
  || die "cannot patch node $node status"
api PATCH "/api/v1/nodes/$node" application/merge-patch+json "{\"metadata\":{\"labels\":$labels}}" >/dev/null \
  || die "cannot label node $node"

# Wait until the scheduler-visible value is what we set.
want=$([ "$count" = 0 ] && echo null || echo "\"$count\"")
for ((i = 0; i < 40; i++)); do
  got=$(api GET "/api/v1/nodes/$node" | jq -c '.status.allocatable["nvidia.com/gpu"]')
  [ "$got" = "$want" ] && break
  sleep 0.25
done
[ "$got" = "$want" ] || die "node $node allocatable nvidia.com/gpu is $got, wanted $want"
api GET "/api/v1/nodes/$node" | jq -r '"node \(.metadata.name): nvidia.com/gpu capacity=\(.status.capacity["nvidia.com/gpu"] // "none") allocatable=\(.status.allocatable["nvidia.com/gpu"] // "none")",
  (.metadata.labels | to_entries[] | select(.key | startswith("nvidia.com/")) | "  label \(.key)=\(.value)")'
