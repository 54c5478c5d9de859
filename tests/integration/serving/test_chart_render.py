"""serving/chart rendered with the real helm (.tools/bin/helm, from make setup): the two ways a
model's weights reach vLLM. `load: pull` (default) keeps the model-pull init container and the
node cache; `load: stream` hands vLLM the store URL with --load-format runai_streamer, the
read-only credential, the endpoint and the site CA, and no init container or cache. Wrong
combinations fail the render with a message naming the model, and nothing is rendered."""
import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "serving" / "chart"
HELM = os.environ.get("HELM", str(REPO / ".tools" / "bin" / "helm"))
VLLM_ARGS = REPO / "serving" / "vllm-args"
VLLM_FLAGS = set((VLLM_ARGS / ("%s.txt" % (VLLM_ARGS / "VERSION").read_text().strip())).read_text().split())
DIGEST = "ab" * 32


def values(**model):
    m = dict(name="m", checkpoint=dict(prefix="/llm/m/%s/" % DIGEST, digest=DIGEST, bytes=10 ** 9), gpus=1, preset="chat")
    m.update(model)
    return dict(engine=dict(image="registry.site.internal:5000/docker.io/vllm/vllm-openai:v0.34.0"),
                downloader=dict(image="registry.site.internal:5000/localhost/llmops/model-pull:0.1.0"),
                objectStore=dict(endpoint="https://s3.site.internal:9000", bucket="model-checkpoints", caName="site-ca"),
                models=[m])


def render(tmp_path, vals):
    f = tmp_path / "values.yaml"
    f.write_text(yaml.safe_dump(vals))
    return subprocess.run([HELM, "template", "t", str(CHART), "-f", str(f)], capture_output=True, text=True, check=False)


def deployment(tmp_path, vals):
    p = render(tmp_path, vals)
    assert p.returncode == 0, p.stderr
    docs = [d for d in yaml.safe_load_all(p.stdout) if d]
    return [d for d in docs if d["kind"] == "Deployment"][0]["spec"]["template"]["spec"]


@pytest.fixture(autouse=True)
def _helm():
    if not os.access(HELM, os.X_OK):
        pytest.fail("helm not found at %s: run make setup (or set HELM)" % HELM)


def test_pull_is_the_default_and_reads_the_node_cache(tmp_path):
    pod = deployment(tmp_path, values())
    assert [c["name"] for c in pod["initContainers"]] == ["cache-owner", "model-pull"]
    engine = pod["containers"][0]
    assert engine["args"][:2] == ["--model", "/models/m/" + DIGEST]
    assert "--load-format" not in engine["args"]
    assert {"name": "model-cache", "mountPath": "/models", "readOnly": True} in engine["volumeMounts"]
    assert not [e for e in engine["env"] if e["name"].startswith("AWS_")]


def test_stream_hands_vllm_the_store_url_credential_and_ca(tmp_path):
    pod = deployment(tmp_path, values(load="stream"))
    assert "initContainers" not in pod
    engine = pod["containers"][0]
    args = engine["args"]
    assert args[:6] == ["--model", "s3://model-checkpoints/llm/m/" + DIGEST, "--load-format", "runai_streamer",
                        "--model-loader-extra-config", '{"concurrency":16}']
    # Every flag the chart passes is a flag of the pinned vLLM.
    assert set(a for a in args if a.startswith("--")) <= VLLM_FLAGS
    env = dict((e["name"], e) for e in engine["env"])
    ref = env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "llmops-serving-object-storage", "key": "access-key"}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "secret-key"
    assert "value" not in env["AWS_SECRET_ACCESS_KEY"]
    assert env["AWS_ENDPOINT_URL"]["value"] == "https://s3.site.internal:9000"
    assert env["RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING"]["value"] == "0"
    assert env["AWS_EC2_METADATA_DISABLED"]["value"] == "true"
    assert env["AWS_CA_BUNDLE"]["value"] == "/etc/llmops/ca/ca.crt"
    assert env["HF_HUB_OFFLINE"]["value"] == "1"
    assert {"name": "site-ca", "mountPath": "/etc/llmops/ca", "readOnly": True} in engine["volumeMounts"]
    assert "model-cache" not in [v["name"] for v in pod["volumes"]]
    assert {"name": "site-ca", "secret": {"secretName": "site-ca"}} in pod["volumes"]


def test_stream_memory_limit_and_bucket_of_the_model(tmp_path):
    vals = values(load="stream", checkpoint=dict(bucket="other", prefix="x", digest=DIGEST))
    vals["streamer"] = dict(concurrency=32, memoryLimit=5368709120)
    vals["objectStore"]["caName"] = ""
    engine = deployment(tmp_path, vals)["containers"][0]
    assert engine["args"][1] == "s3://other/x"
    assert json.loads(engine["args"][5]) == {"concurrency": 32, "memory_limit": 5368709120}
    assert "AWS_CA_BUNDLE" not in [e["name"] for e in engine["env"]]
    assert "volumeMounts" in engine and "site-ca" not in [v["name"] for v in engine["volumeMounts"]]


@pytest.mark.parametrize("model, message", [
    (dict(load="fetch"), 'models[m].load "fetch": use pull (model-pull into the node cache) or stream'),
    (dict(load="stream", loraModules={"a": "lora/a"}), "models[m]: loraModules need the checkpoint on local disk; use load: pull"),
    (dict(load="stream", args={"load-format": "safetensors"}),
     "models[m].args.load-format is set by the chart for load: stream (from streamer): remove it"),
    (dict(load="stream", args={"model-loader-extra-config": "{}"}),
     "models[m].args.model-loader-extra-config is set by the chart for load: stream"),
])
def test_wrong_load_settings_render_nothing(tmp_path, model, message):
    p = render(tmp_path, values(**model))
    assert p.returncode != 0
    assert message in p.stderr
    assert p.stdout == ""
