"""fake-gpu.sh makes the node advertise nvidia.com/gpu and the GPU feature discovery labels,
and the scheduler honours them."""
import pytest

PRODUCT = "NVIDIA-H100-80GB-HBM3"


@pytest.fixture
def one_gpu(kube):
    kube.run([kube.CLUSTER / "fake-gpu.sh", "1"])
    yield
    kube.run([kube.CLUSTER / "fake-gpu.sh", "0"])
    node = kube.core.read_node("localhost")
    assert "nvidia.com/gpu" not in (node.status.allocatable or {})
    assert not [k for k in node.metadata.labels if k.startswith("nvidia.com/")]


def gpu_pod(kube, name, gpus, command):
    k8s = kube.k8s
    return kube.busybox_pod(name, command,
                            resources=k8s.V1ResourceRequirements(limits={"nvidia.com/gpu": str(gpus)}),
                            node_selector={"nvidia.com/gpu.product": PRODUCT})


def test_fake_gpu_advertised_and_scheduled(kube, namespace, one_gpu):
    node = kube.core.read_node("localhost")
    assert node.status.capacity["nvidia.com/gpu"] == "1"
    assert node.status.allocatable["nvidia.com/gpu"] == "1"
    labels = node.metadata.labels
    assert labels["nvidia.com/gpu.present"] == "true"
    assert labels["nvidia.com/gpu.product"] == PRODUCT
    assert labels["nvidia.com/gpu.count"] == "1"
    assert int(labels["nvidia.com/gpu.memory"]) > 0
    assert (labels["nvidia.com/gpu.family"], labels["nvidia.com/gpu.compute.major"],
            labels["nvidia.com/gpu.compute.minor"]) == ("hopper", "9", "0")

    # Two GPUs asked, one advertised: the scheduler says why it cannot place the pod.
    kube.core.create_namespaced_pod(namespace, gpu_pod(kube, "two-gpus", 2, ["sleep", "1"]))

    def insufficient():
        evs = kube.core.list_namespaced_event(
            namespace, field_selector="involvedObject.name=two-gpus,reason=FailedScheduling").items
        return [e.message for e in evs if "Insufficient nvidia.com/gpu" in (e.message or "")]

    msgs = kube.wait_for("a FailedScheduling event for two-gpus", insufficient, timeout=60)
    assert "Insufficient nvidia.com/gpu" in msgs[0]
    assert kube.core.read_namespaced_pod("two-gpus", namespace).status.phase == "Pending"
    kube.core.delete_namespaced_pod("two-gpus", namespace, grace_period_seconds=0)

    # One GPU fits, and the GPU feature discovery label selects the node.
    log = kube.run_pod(namespace, "one-gpu", ["sh", "-c", "echo ran-on-fake-gpu"],
                       resources=kube.k8s.V1ResourceRequirements(limits={"nvidia.com/gpu": "1"}),
                       node_selector={"nvidia.com/gpu.product": PRODUCT})
    assert "ran-on-fake-gpu" in log
    assert kube.core.read_namespaced_pod("one-gpu", namespace).spec.node_name == "localhost"

    # The kubelet's status syncs (every 2 s here) kept the extended resource all along.
    node = kube.core.read_node("localhost")
    assert node.status.allocatable["nvidia.com/gpu"] == "1"


def test_fake_gpu_wrong_product_is_not_scheduled(kube, namespace, one_gpu):
    pod = gpu_pod(kube, "other-gpu", 1, ["sleep", "1"])
    pod.spec.node_selector = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB"}
    kube.core.create_namespaced_pod(namespace, pod)

    def unschedulable():
        evs = kube.core.list_namespaced_event(
            namespace, field_selector="involvedObject.name=other-gpu,reason=FailedScheduling").items
        return [e.message for e in evs if "node(s) didn't match" in (e.message or "")]

    assert kube.wait_for("a FailedScheduling event for other-gpu", unschedulable, timeout=60)
    assert kube.core.read_namespaced_pod("other-gpu", namespace).status.phase == "Pending"


def test_serving_refuses_a_gpu_model_no_gpu_node_can_take(kube, namespace, one_gpu):
    """The vllm_serving role reads the node's GPU labels: a model that selects a product no node has, or asks for
    more GPUs per replica than the node with its product has, is refused by name before anything is created."""
    import json
    from pathlib import Path

    import serving_helpers as sh

    models = [dict(name="a100", served_name="a100", gpus=1, gpu_product="NVIDIA-A100-SXM4-80GB", preset="chat",
                   checkpoint=dict(name="tiny-ckpt")),
              dict(name="wide", served_name="wide", gpus=2, gpu_product=PRODUCT, preset="chat", checkpoint=dict(name="tiny-ckpt"))]
    synced = [dict(name="tiny-ckpt", bucket="checkpoints", prefix="models/tiny", digest=sh.DIGEST_A, bytes=4096)]
    env = dict(__import__("os").environ, ANSIBLE_NOCOLOR="1", KUBECONFIG=kube.kubeconfig,
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false")
    p = kube.run([Path(kube.PYTHON).parent / "ansible-playbook", "-i", "localhost,",
                  Path(__file__).parent / "playbooks" / "serving_role.yml", "-e", "ansible_python_interpreter=%s" % kube.PYTHON,
                  "-e", json.dumps(dict(serving_namespace=namespace, serving_cache="/nonexistent", serving_key_file="/nonexistent/key",
                                        serving_models=models, checkpoints_synced=synced, helm_binary=kube.HELM,
                                        engine_image=sh.ENGINE_IMAGE))], check=False, env=env)
    out = " ".join((p.stdout + p.stderr).split())
    assert p.returncode == 2, out[-4000:]
    assert ("vllm_serving: 2 model(s) cannot be placed on this cluster's GPU nodes, nothing was created: models[a100] "
            "selects nvidia.com/gpu.product=NVIDIA-A100-SXM4-80GB, which no node has; the cluster's GPU nodes: "
            "%s (localhost, 1 GPU). Set gpu_product to one of those products, or leave it out; models[wide] asks for 2 "
            "GPUs per replica (tensor parallel), and no node with %s has that many" % (PRODUCT, PRODUCT)) in out, out[-4000:]
    assert kube.core.list_namespaced_secret(namespace, label_selector="app.kubernetes.io/part-of=llmops-onprem").items == []
    assert kube.core.list_namespaced_secret(namespace, label_selector="owner=helm").items == []
