"""cluster_problems: nodes Ready, GPUs the models ask for versus allocatable, ResourceQuotas, CRDs of the enabled features."""
import re

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.onprem.plugins.filter.cluster_problems import FilterModule, cluster_problems, quantity


def node(name, gpus=None, ready="True", reason="KubeletReady", message="kubelet is posting ready status"):
    alloc = {"cpu": "16", "memory": "64Gi"}
    if gpus is not None:
        alloc["nvidia.com/gpu"] = str(gpus)
    return {"metadata": {"name": name}, "status": {"allocatable": alloc,
                                                   "conditions": [{"type": "MemoryPressure", "status": "False"},
                                                                  {"type": "Ready", "status": ready, "reason": reason,
                                                                   "message": message}]}}


def quota(name, hard, used, ns="llmops"):
    return {"metadata": {"name": name, "namespace": ns}, "status": {"hard": hard, "used": used}}


MODELS = [{"name": "llama-70b", "gpus": 4, "replicas": 2}, {"name": "small", "gpus": 1}, {"name": "cpu-one", "gpus": 0, "device": "cpu"}]


def test_a_ready_cluster_with_room_is_fine():
    roomy = quota("q", {"requests.nvidia.com/gpu": "16", "pods": "20"}, {"requests.nvidia.com/gpu": "0", "pods": "2"})
    assert cluster_problems({"nodes": [node("gpu-1", 8), node("gpu-2", 8)], "models": MODELS, "namespace": "llmops", "quotas": [roomy],
                             "crds": ["scaledobjects.keda.sh"], "wanted_crds": [{"name": "scaledobjects.keda.sh", "why": "x"}]}) == []


def test_a_node_not_ready_and_its_gpus_not_counted():
    lost = node("gpu-2", 8, ready="Unknown", reason="NodeStatusUnknown", message="Kubelet stopped posting node status.")
    out = cluster_problems({"nodes": [node("gpu-1", 8), lost], "models": MODELS, "namespace": "llmops"})
    assert out[0] == ("cluster: node gpu-2 is not Ready (NodeStatusUnknown: Kubelet stopped posting node status.); pods scheduled "
                      "there will not start. Fix: repair the node (kubectl describe node gpu-2) or drain and remove it, then run again.")
    assert out[1] == ("cluster: the models ask for 9 GPUs (llama-70b 8, small 1) and the Ready nodes have 8 allocatable (gpu-1 8). "
                      "Fix: add GPU nodes, check that the GPU operator's device plugin runs on every GPU node (nvidia.com/gpu in "
                      "the node's allocatable), or lower gpus or replicas in vllm_serving_models, then run again.")
    assert len(out) == 2


def test_a_model_larger_than_any_node():
    out = cluster_problems({"nodes": [node("gpu-1", 2), node("gpu-2", 2), node("gpu-3", 2), node("gpu-4", 2)],
                            "models": [{"name": "big", "gpus": 4}]})
    assert out == ["cluster: model big asks 4 GPUs per replica, and no Ready node has more than 2: its pods would stay Pending. "
                   "Fix: lower its gpus (tensor parallel size) or add a node with 4 GPUs, then run again."]


def test_no_node_at_all():
    assert cluster_problems({"nodes": []})[0].startswith("cluster: the API answered but lists no node")


def test_a_quota_without_room():
    out = cluster_problems({"nodes": [node("gpu-1", 16)], "models": MODELS, "namespace": "llmops",
                            "quotas": [quota("gpus", {"requests.nvidia.com/gpu": "8"}, {"requests.nvidia.com/gpu": "2"}),
                                       quota("other-ns", {"requests.nvidia.com/gpu": "0"}, {}, ns="elsewhere")]})
    assert out == ["cluster: ResourceQuota llmops/gpus allows 8 requests.nvidia.com/gpu (2 used, 6 left), and the models need 9. "
                   "Fix: raise the quota's requests.nvidia.com/gpu (kubectl edit resourcequota -n llmops gpus), or serve fewer "
                   "replicas, then run again."]


def test_a_missing_crd_names_the_feature():
    out = cluster_problems({"nodes": [node("n", 0)], "crds": [],
                            "wanted_crds": [{"name": "scaledobjects.keda.sh", "why": "model_engine_scale_to_zero (KEDA ScaledObjects)"}]})
    assert out == ["cluster: the CustomResourceDefinition scaledobjects.keda.sh is missing, and model_engine_scale_to_zero (KEDA "
                   "ScaledObjects) needs it. Fix: install it (from the bundle) before the stage, or turn the feature off, then run again."]


@pytest.mark.parametrize("text, value", [("4", 4), ("500m", 0.5), ("16Gi", 16 * 2 ** 30), ("2k", 2000), ("1.5", 1.5)])
def test_quantities(text, value):
    assert quantity(text) == value


def test_bad_input_is_refused():
    with pytest.raises(AnsibleFilterError, match=re.escape("expected a dict of cluster objects")):
        cluster_problems([])
    with pytest.raises(AnsibleFilterError, match=re.escape("'lots' is not a Kubernetes quantity")):
        quantity("lots")


def test_registered():
    assert FilterModule().filters()["cluster_problems"] is cluster_problems
