#!/usr/bin/env bash
# GPU check - run BY HAND on a machine with an NVIDIA GPU (never in CI; no CI machine has one):
#
#   tests/gpu/check.sh [NODE_NAME]      from the repository root, after make setup
#   env: KUBECONFIG (optional) - also read NODE_NAME's GPU feature discovery labels and compare
#
# It runs what the GPU layer runs, read-only, and prints each result:
#   1. driver detection: the llmops.onprem.nvidia_driver_info module, as the nvidia_driver role calls it
#      (state present / no_gpu / install, and why);
#   2. nvidia-smi with the one query the module reads (plugins/module_utils/_gpu.py SMI_ARGS);
#   3. the GPU fact the stages would export for this node (llmops.onprem.gpu_node_facts), with the
#      GFD labels (nvidia.com/gpu.product, .family, .memory, .count) it predicts;
#   4. with KUBECONFIG, the node's real labels and the fact read from them, and whether the two agree.
# Exit status 0 only when the driver is present and the facts could be read.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root" || exit 1
node=${1:-$(hostname)}
py=$root/.venv/bin/python
[ -x "$py" ] || { echo "check.sh: $py missing: run make setup first" >&2; exit 2; }
export PATH="$root/.venv/bin:$root/.tools/bin:$PATH" ANSIBLE_CONFIG="$root/ansible.cfg" ANSIBLE_NOCOLOR=1
export PYTHONPATH="$root/.cache/collections${PYTHONPATH:+:$PYTHONPATH}"
rc=0

echo "== 1. driver detection (llmops.onprem.nvidia_driver_info)"
ansible localhost -i localhost, -c local -e "ansible_python_interpreter=$py" -m llmops.onprem.nvidia_driver_info \
  -a '{"packages": ["nvidia-driver", "nvidia-kernel-dkms", "nvidia-smi", "dkms"]}' | tee /tmp/llmops-gpu-check.$$ \
  || rc=1
grep -q '"state": "present"' /tmp/llmops-gpu-check.$$ || { echo "-> the driver is not present (see state and reason)"; rc=1; }
rm -f /tmp/llmops-gpu-check.$$

echo "== 2. nvidia-smi, the query the module reads"
args=$("$py" -c 'from ansible_collections.llmops.onprem.plugins.module_utils._gpu import SMI_ARGS; print(" ".join(SMI_ARGS))')
echo "nvidia-smi $args"
# shellcheck disable=SC2086  # the two arguments, split on purpose
smi=$(nvidia-smi $args) || { echo "-> nvidia-smi failed"; rc=1; }
printf '%s\n' "$smi"

echo "== 3. the fact the GPU layer exports for $node (from nvidia-smi)"
printf '%s\n' "$smi" | "$py" -c '
import json, sys
from ansible_collections.llmops.onprem.plugins.filter.gpu_node_facts import gpu_node_facts
print(json.dumps(gpu_node_facts(sys.stdin.read(), sys.argv[1]), indent=2, sort_keys=True))' "$node" || rc=1

if [ -n "${KUBECONFIG:-}" ]; then
  echo "== 4. node $node in the cluster: GFD labels and the fact read from them"
  kubectl get node "$node" -o json > /tmp/llmops-gpu-node.$$ || rc=1
  printf '%s\n' "$smi" | "$py" -c '
import json, sys
from ansible_collections.llmops.onprem.plugins.filter.gpu_node_facts import gpu_node_facts
node = json.load(open(sys.argv[1]))
labels = gpu_node_facts([node])
smi = gpu_node_facts(sys.stdin.read(), node["metadata"]["name"])
print(json.dumps(labels, indent=2, sort_keys=True))
if not labels:
    sys.exit("-> the node has no nvidia.com/gpu.product label: is GPU feature discovery running (gpu_operator stage)?")
keys = ("product", "count", "memory_mib", "family")
diff = [(k, labels[0][k], smi[0][k]) for k in keys if smi and labels[0][k] != smi[0][k]]
for k, a, b in diff:
    print("-> %s differs: labels %r, nvidia-smi %r" % (k, a, b))
sys.exit(1 if diff else 0)' /tmp/llmops-gpu-node.$$ || rc=1
  rm -f /tmp/llmops-gpu-node.$$
else
  echo "== 4. skipped: KUBECONFIG is not set"
fi
echo "== check.sh: $([ $rc = 0 ] && echo passed || echo FAILED)"
exit $rc
