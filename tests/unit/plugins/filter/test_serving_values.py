"""serving_model_values and serving_endpoints: the vllm_serving role's inventory -> chart values
and Services -> endpoint_ready endpoints."""
import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.onprem.plugins.filter.serving_endpoints import serving_endpoints
from ansible_collections.llmops.onprem.plugins.filter.serving_model_values import serving_model_values

DIGEST = "d" * 64


def test_model_values_rename_and_keep():
    m = dict(name="chat", served_name="Llama", gpus="2", preset="chat", gpu_product="NVIDIA-H100-80GB-HBM3",
             lora_modules={"a": "lora/a"}, ingress_host="chat.site", quantization=None,
             checkpoint=dict(prefix="p", digest=DIGEST, bytes="1000"), args={"max-model-len": 2048}, load="stream",
             device="gpu")
    assert serving_model_values(m) == dict(
        name="chat", servedName="Llama", gpus=2, preset="chat", gpuProduct="NVIDIA-H100-80GB-HBM3",
        loraModules={"a": "lora/a"}, ingressHost="chat.site", args={"max-model-len": 2048}, load="stream", device="gpu",
        checkpoint=dict(prefix="p", digest=DIGEST, bytes=1000))


def test_model_values_pass_unknown_keys_to_the_chart_schema():
    # values.schema.json is the one place entries are checked (tests/integration/serving/test_chart_render.py
    # shows it refusing these); the filter neither repeats nor hides that check.
    assert serving_model_values(dict(name="chat", tensor_parallel=2)) == dict(name="chat", tensor_parallel=2)
    out = serving_model_values(dict(name="chat", checkpoint=dict(path="x", prefix="p")))
    assert out["checkpoint"] == dict(path="x", prefix="p")


def svc(name, ip):
    return dict(metadata=dict(name=name), spec=dict(clusterIP=ip, ports=[dict(port=8000)]))


def test_endpoints_from_services_and_ingress():
    models = [dict(name="chat", served_name="Llama", ingress_host="chat.site"), dict(name="point")]
    eps = serving_endpoints(models, [svc("rel-chat", "10.0.0.1"), svc("rel-point", "10.0.0.2")], "rel", "ns", api_key="k")
    assert eps == [
        dict(name="chat", url="http://10.0.0.1:8000", model="Llama", namespace="ns",
             selector="app.kubernetes.io/instance=rel,llmops.onprem/model=chat", api_key="k", via="portforward"),
        dict(name="point", url="http://10.0.0.2:8000", model="point", namespace="ns",
             selector="app.kubernetes.io/instance=rel,llmops.onprem/model=point", api_key="k", via="portforward")]
    eps = serving_endpoints(models[:1], [], "rel", "ns", via="ingress", ca_file="/ca.crt")
    assert eps[0]["url"] == "https://chat.site" and eps[0]["ca_file"] == "/ca.crt" and "api_key" not in eps[0]
    assert eps[0]["via"] == "direct"
    eps = serving_endpoints(models[:1], [svc("rel-chat", "10.0.0.1")], "rel", "ns", via="proxy")
    assert (eps[0]["via"], eps[0]["service"], eps[0]["url"]) == ("proxy", "rel-chat", "http://10.0.0.1:8000")
    eps = serving_endpoints(models[:1], [svc("rel-chat", "10.0.0.1")], "rel", "ns", via="direct")
    assert eps[0]["via"] == "direct" and "service" not in eps[0]
    with pytest.raises(AnsibleFilterError) as e:
        serving_endpoints(models[:1], [], "rel", "ns", via="service")
    assert str(e.value) == "vllm_serving_probe_via is 'service': one of portforward, proxy, direct, ingress"
    with pytest.raises(AnsibleFilterError) as e:
        serving_endpoints(models[1:], [], "rel", "ns")
    assert str(e.value) == "no Service rel-point in ns: is the chart installed?"
    with pytest.raises(AnsibleFilterError) as e:
        serving_endpoints(models[1:], [], "rel", "ns", via="ingress")
    assert str(e.value) == "vllm_serving_models[point]: probing via ingress needs its ingress_host"


def test_model_values_take_the_checkpoint_from_the_checkpoints_stage():
    synced = [dict(name="llama", bucket="model-checkpoints", prefix="llama/" + DIGEST, digest=DIGEST, bytes=1234,
                   files=3, uploaded=0)]
    out = serving_model_values(dict(name="chat", preset="chat", checkpoint=dict(name="llama")), synced)
    assert out["checkpoint"] == dict(bucket="model-checkpoints", prefix="llama/" + DIGEST, digest=DIGEST, bytes=1234)
    out = serving_model_values(dict(name="chat", preset="chat", checkpoint=dict(name="llama", bucket="other")), synced)
    assert out["checkpoint"]["bucket"] == "other" and out["checkpoint"]["digest"] == DIGEST
    with pytest.raises(AnsibleFilterError) as e:
        serving_model_values(dict(name="chat", checkpoint=dict(name="mistral")), synced)
    assert str(e.value) == ("vllm_serving_models[chat].checkpoint.name 'mistral' is not among the synced checkpoints "
                            "(llama): run the checkpoints stage first, or give bucket/prefix/digest/bytes")


def test_a_base_model_is_probed_without_chat_and_chat_is_no_chart_value():
    models = [dict(name="base", chat=False), dict(name="instr", chat=True)]
    eps = serving_endpoints(models, [svc("rel-base", "10.0.0.1"), svc("rel-instr", "10.0.0.2")], "rel", "ns")
    assert eps[0]["chat"] is False and "chat" not in eps[1]
    assert serving_model_values(models[0]) == dict(name="base")
