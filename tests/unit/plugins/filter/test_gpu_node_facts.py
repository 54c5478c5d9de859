"""gpu_node_facts: one GPU fact per node, from nvidia-smi's query output on a host or from the
labels GPU feature discovery puts on the Kubernetes node - the same shape from both."""
import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.onprem.plugins.filter.gpu_node_facts import gpu_node_facts
from ansible_collections.llmops.onprem.plugins.module_utils._gpu import SMI_FIELDS, arch_family, gfd_product
from ansible_collections.llmops.onprem.plugins.module_utils._gpu import model_engine_gpu_type

H100 = "0, NVIDIA H100 80GB HBM3, 81559, 570.124.06, Disabled, 9.0\n1, NVIDIA H100 80GB HBM3, 81559, 570.124.06, Disabled, 9.0\n"


def node(name, labels, gpus=None):
    n = {"metadata": {"name": name, "labels": labels}, "status": {"allocatable": {"cpu": "8"}}}
    if gpus is not None:
        n["status"]["allocatable"]["nvidia.com/gpu"] = gpus
    return n


def test_from_nvidia_smi():
    [f] = gpu_node_facts(H100, "gpu-1")
    assert f == dict(node="gpu-1", product="NVIDIA-H100-80GB-HBM3", count=2, memory_mib=81559, driver_version="570.124.06",
                     mig_mode="Disabled", family="hopper", compute_cap="9.0", gpu_type="nvidia-hopper-h100",
                     products={"NVIDIA-H100-80GB-HBM3": 2}, source="nvidia-smi",
                     labels={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.family": "hopper",
                             "nvidia.com/gpu.memory": "81559", "nvidia.com/gpu.count": "2"})


def test_from_nvidia_smi_mixed_gpus_and_no_mig():
    text = "0, NVIDIA L40S, 46068, 570.124.06, [N/A], 8.9\n1, Tesla T4, 15360, 570.124.06, [N/A], 7.5\n"
    [f] = gpu_node_facts(text, "mixed")
    assert (f["product"], f["family"], f["mig_mode"], f["gpu_type"]) == ("NVIDIA-L40S", "ada-lovelace", "N/A", "")
    assert f["products"] == {"NVIDIA-L40S": 1, "Tesla-T4": 1}


def test_nvidia_smi_without_gpus_is_no_fact():
    assert gpu_node_facts("", "cpu-1") == []
    assert gpu_node_facts("\n\n", "cpu-1") == []


def test_from_node_labels_matches_nvidia_smi():
    labels = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.count": "2",
              "nvidia.com/gpu.memory": "81559", "nvidia.com/gpu.family": "hopper", "nvidia.com/gpu.compute.major": "9",
              "nvidia.com/gpu.compute.minor": "0", "nvidia.com/cuda.driver-version.full": "570.124.06",
              "nvidia.com/mig.capable": "true", "kubernetes.io/os": "linux"}
    [f] = gpu_node_facts([node("gpu-1", labels, "2"), node("cpu-1", {"kubernetes.io/os": "linux"})])
    [g] = gpu_node_facts(H100, "gpu-1")
    assert dict(f, source="") == dict(g, source="")
    assert f["source"] == "node-labels"


def test_from_node_labels_of_the_test_cluster_fake_gpu():
    # tests/cluster/fake-gpu.sh sets product, count and memory (no family, no driver labels).
    labels = {"nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
              "nvidia.com/gpu.count": "1", "nvidia.com/gpu.memory": "81559"}
    [f] = gpu_node_facts([node("localhost", labels, "1")])
    assert (f["count"], f["memory_mib"], f["family"], f["driver_version"], f["mig_mode"]) == (1, 81559, "undefined", "", "N/A")
    assert f["labels"]["nvidia.com/gpu.family"] == "undefined"


def test_count_from_allocatable_and_old_driver_labels_and_mig_product():
    labels = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3-MIG-1g.20gb", "nvidia.com/gpu.memory": "20096",
              "nvidia.com/cuda.driver.major": "550", "nvidia.com/cuda.driver.minor": "54",
              "nvidia.com/cuda.driver.rev": "15", "nvidia.com/gpu.compute.major": "9", "nvidia.com/gpu.compute.minor": "0"}
    [f] = gpu_node_facts([node("mig-1", labels, "7")])
    assert (f["count"], f["driver_version"], f["mig_mode"], f["family"]) == (7, "550.54.15", "Enabled", "hopper")
    assert f["gpu_type"] == "nvidia-hopper-h100-1g20gb"


@pytest.mark.parametrize("name, label", [
    ("NVIDIA H100 80GB HBM3", "NVIDIA-H100-80GB-HBM3"),
    ("NVIDIA A100-SXM4-40GB", "NVIDIA-A100-SXM4-40GB"),
    ("NVIDIA GeForce RTX 4090 (TM)", "NVIDIA-GeForce-RTX-4090-TM"),
    ("  Tesla   T4 ", "Tesla-T4"),
])
def test_product_label_as_gfd_writes_it(name, label):
    assert gfd_product(name) == label


@pytest.mark.parametrize("cap, family", [((7, 0), "volta"), ((7, 5), "turing"), ((8, 0), "ampere"), ((8, 6), "ampere"),
                                         ((8, 9), "ada-lovelace"), ((9, 0), "hopper"), ((10, 0), "blackwell"),
                                         ((12, 0), "blackwell"), ((4, 0), "undefined")])
def test_family_from_compute_capability(cap, family):
    assert arch_family(*cap) == family


@pytest.mark.parametrize("product, mib, gpu_type", [
    ("Tesla-T4", 15360, "nvidia-tesla-t4"),
    ("NVIDIA-A10", 23028, "nvidia-ampere-a10"),
    ("NVIDIA-A100-SXM4-40GB", 40960, "nvidia-ampere-a100"),
    ("NVIDIA-A100-SXM4-80GB", 81920, "nvidia-ampere-a100e"),
    ("NVIDIA-H100-80GB-HBM3-MIG-3g.40gb", 40192, "nvidia-hopper-h100-3g40gb"),
    ("NVIDIA-H200", 143771, ""),
    ("NVIDIA-L40S", 46068, ""),
])
def test_model_engine_gpu_type(product, mib, gpu_type):
    assert model_engine_gpu_type(product, mib) == gpu_type


@pytest.mark.parametrize("data, message", [
    ("0, NVIDIA H100, 81559\n", "nvidia-smi line 1 has 3 fields, expected %d" % len(SMI_FIELDS)),
    ("0, NVIDIA H100, lots, 570.1, Disabled, 9.0\n", "nvidia-smi line 1 memory.total is not a whole number: 'lots'"),
    ("0, Tesla K80, 11441, 470.1, Disabled, [N/A]\n", "compute_cap '[N/A]' is not MAJOR.MINOR"),
    ([{"metadata": {"name": "n", "labels": {"nvidia.com/gpu.product": "X"}}}],
     "node n has nvidia.com/gpu.product but neither the label nvidia.com/gpu.count nor allocatable nvidia.com/gpu"),
    (["not a node"], "a node must be a Kubernetes Node object"),
    (42, "expected Node objects (a list) or nvidia-smi output (a string), got int"),
])
def test_bad_input_names_the_problem(data, message):
    with pytest.raises(AnsibleFilterError) as e:
        gpu_node_facts(data)
    assert message in str(e.value)
    assert str(e.value).startswith("gpu_node_facts: ")


# --- serving_gpu_placement: a GPU model the GPU nodes cannot take is named before anything is created ----------

def test_placement_product_on_no_node_names_what_the_nodes_have():
    from ansible_collections.llmops.onprem.plugins.filter.serving_gpu_placement import serving_gpu_placement
    nodes = [node("gpu-1", {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.count": "4"}),
             node("cpu-1", {})]
    models = [dict(name="llama", gpus=1, gpu_product="NVIDIA-A100-SXM4-80GB"),
              dict(name="big", gpus=8, gpu_product="NVIDIA-H100-80GB-HBM3"),
              dict(name="fits", gpus=4, gpu_product="NVIDIA-H100-80GB-HBM3"),
              dict(name="any", gpus=2),
              dict(name="cpu", gpus=0), dict(name="forced-cpu", gpus=2, device="cpu", gpu_product="X")]
    assert serving_gpu_placement(models, nodes) == [
        "models[llama] selects nvidia.com/gpu.product=NVIDIA-A100-SXM4-80GB, which no node has; the cluster's GPU "
        "nodes: NVIDIA-H100-80GB-HBM3 (gpu-1, 4 GPUs). Set gpu_product to one of those products, or leave it out",
        "models[big] asks for 8 GPUs per replica (tensor parallel), and no node with NVIDIA-H100-80GB-HBM3 has that "
        "many: NVIDIA-H100-80GB-HBM3 (gpu-1, 4 GPUs)"]


def test_placement_reads_recorded_facts_and_the_nodes_own_labels_win():
    from ansible_collections.llmops.onprem.plugins.filter.serving_gpu_placement import serving_gpu_placement
    recorded = [dict(node="gpu-1", product="NVIDIA-A100-SXM4-80GB", count=8), dict(node="gpu-2", product="NVIDIA-L4", count=1)]
    live = [node("gpu-1", {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.count": "8"})]
    models = [dict(name="a100", gpus=1, gpu_product="NVIDIA-A100-SXM4-80GB"), dict(name="l4", gpus=1, gpu_product="NVIDIA-L4")]
    [p] = serving_gpu_placement(models, live + recorded)
    assert p.startswith("models[a100] selects nvidia.com/gpu.product=NVIDIA-A100-SXM4-80GB, which no node has")
    assert "NVIDIA-H100-80GB-HBM3 (gpu-1, 8 GPUs), NVIDIA-L4 (gpu-2, 1 GPU)" in p


def test_placement_without_gpu_labels_names_a_product_and_leaves_the_rest_to_the_scheduler():
    from ansible_collections.llmops.onprem.plugins.filter.serving_gpu_placement import serving_gpu_placement
    nodes = [node("n-1", {}, gpus="2")]
    assert serving_gpu_placement([dict(name="any", gpus=2)], nodes) == []
    assert serving_gpu_placement([dict(name="p", gpus=1, gpu_product="NVIDIA-L4")], nodes) == [
        "models[p] selects nvidia.com/gpu.product=NVIDIA-L4, which no node has; the cluster's GPU nodes: none (no node "
        "carries the label nvidia.com/gpu.product). Set gpu_product to one of those products, or leave it out"]
