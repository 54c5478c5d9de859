"""serving/chart rendered with the real helm (.tools/bin/helm, from make setup): the CPU and GPU
device profiles, the render-time refusals of flags the profile's vLLM does not take, and the two
ways a model's weights reach vLLM. `load: pull` (default) keeps the model-pull init container and the
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


def _flag_names(version):
    lines = (VLLM_ARGS / ("%s.txt" % version)).read_text().splitlines()
    return set(ln.split("\t")[0] for ln in lines if ln and not ln.startswith("#"))


VLLM_FLAGS_BY_VERSION = dict((v, _flag_names(v)) for v in ("0.32.0", "0.34.0"))
VLLM_FLAGS = VLLM_FLAGS_BY_VERSION["0.34.0"]  # gpus: 1 below, the GPU profile
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
    (dict(load="fetch"), "at '/models/0/load': value must be one of 'pull', 'stream'"),
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


# --- device profiles ------------------------------------------------------------------------

def flags(args):
    return [a for a in args if a.startswith("--")]


def value_of(args, flag):
    return args[args.index(flag) + 1]


def test_cpu_profile_sizes_the_kv_cache_and_requests_no_gpu(tmp_path):
    spec = render(tmp_path, values(gpus=0))
    assert spec.returncode == 0, spec.stderr
    dep = [d for d in yaml.safe_load_all(spec.stdout) if d and d["kind"] == "Deployment"][0]
    assert dep["metadata"]["annotations"]["llmops.onprem/device"] == "cpu"
    assert dep["metadata"]["annotations"]["llmops.onprem/vllm-version"] == "0.32.0"
    engine = dep["spec"]["template"]["spec"]["containers"][0]
    args = engine["args"]
    assert value_of(args, "--kv-cache-memory-bytes") == "4G"
    assert "--gpu-memory-utilization" not in args and "--tensor-parallel-size" not in args
    assert "--disable-log-requests" not in args
    assert not [k for k in list(engine["resources"]["requests"]) + list(engine["resources"]["limits"]) if "gpu" in k]
    assert set(flags(args)) <= VLLM_FLAGS_BY_VERSION["0.32.0"]
    # A model's own kv-cache-memory-bytes wins, and devices.cpu sets the default.
    args = deployment(tmp_path, values(gpus=0, args={"kv-cache-memory-bytes": "64M"}))["containers"][0]["args"]
    assert value_of(args, "--kv-cache-memory-bytes") == "64M"
    vals = values(gpus=0)
    vals["devices"] = {"cpu": {"kvCacheMemoryBytes": "2G"}}
    assert value_of(deployment(tmp_path, vals)["containers"][0]["args"], "--kv-cache-memory-bytes") == "2G"


def test_gpu_profile_requests_gpus_and_sets_tensor_parallel(tmp_path):
    p = render(tmp_path, values(gpus=4))
    assert p.returncode == 0, p.stderr
    dep = [d for d in yaml.safe_load_all(p.stdout) if d and d["kind"] == "Deployment"][0]
    assert dep["metadata"]["annotations"]["llmops.onprem/device"] == "gpu"
    assert dep["metadata"]["annotations"]["llmops.onprem/vllm-version"] == "0.34.0"
    engine = dep["spec"]["template"]["spec"]["containers"][0]
    args = engine["args"]
    assert value_of(args, "--tensor-parallel-size") == "4"
    assert value_of(args, "--gpu-memory-utilization") == "0.9"
    assert "--kv-cache-memory-bytes" not in args
    assert engine["resources"]["requests"]["nvidia.com/gpu"] == "4" and engine["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert set(flags(args)) <= VLLM_FLAGS_BY_VERSION["0.34.0"]


def test_global_device_with_a_per_model_override_and_image_per_device(tmp_path):
    vals = values(gpus=0, device="cpu")
    gpu_model = dict(vals["models"][0], name="g", gpus=1)
    del gpu_model["device"]
    vals["models"].append(gpu_model)
    vals["device"] = "gpu"
    vals["engine"]["imageByDevice"] = {"cpu": "registry.site.internal:5000/localhost/llmops/vllm-cpu:0.32.0"}
    p = render(tmp_path, vals)
    assert p.returncode == 0, p.stderr
    deps = dict((d["metadata"]["name"], d) for d in yaml.safe_load_all(p.stdout) if d and d["kind"] == "Deployment")
    cpu, gpu = [deps[n]["spec"]["template"]["spec"]["containers"][0] for n in ("t-m", "t-g")]
    assert cpu["image"] == "registry.site.internal:5000/localhost/llmops/vllm-cpu:0.32.0"
    assert gpu["image"] == vals["engine"]["image"]
    assert "--kv-cache-memory-bytes" in cpu["args"] and "--gpu-memory-utilization" not in cpu["args"]
    assert value_of(gpu["args"], "--tensor-parallel-size") == "1" and "--kv-cache-memory-bytes" not in gpu["args"]


def test_drain_hands_vllm_a_shutdown_timeout_inside_the_grace_period(tmp_path):
    vals = values()
    vals["drain"] = {"preStopSeconds": 3, "seconds": 20}
    pod = deployment(tmp_path, vals)
    engine = pod["containers"][0]
    assert value_of(engine["args"], "--shutdown-timeout") == "20"
    # The kubelet's SIGKILL comes 10 s after vLLM's own deadline (preStop, then SIGTERM + shutdown-timeout).
    assert pod["terminationGracePeriodSeconds"] == 3 + 20 + 10
    env = dict((e["name"], e) for e in engine["env"])
    assert env["VLLM_HOST_IP"] == {"name": "VLLM_HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}


def test_ci_values_render_each_profile(tmp_path):
    p = subprocess.run([HELM, "template", "t", str(CHART), "-f", str(CHART / "ci" / "test-values.yaml")],
                       capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr
    devices = dict((d["metadata"]["name"], d["metadata"]["annotations"]["llmops.onprem/device"])
                   for d in yaml.safe_load_all(p.stdout) if d and d["kind"] == "Deployment")
    assert devices == {"t-chat-8b": "gpu", "t-small": "gpu", "t-point": "cpu", "t-streamed": "gpu"}


@pytest.mark.parametrize("model, extra, message", [
    (dict(gpus=0, args={"disable-log-requests": True}), {},
     "models[m].args.disable-log-requests: --disable-log-requests is not a flag of vLLM 0.32.0 (the cpu profile's engine, "
     "engine.vllmVersion.cpu): check the spelling against the chart's files/vllm-args-0.32.0.txt"),
    (dict(gpus=1, args={"max-num-seq": 8}), {},
     "models[m].args.max-num-seq: --max-num-seq is not a flag of vLLM 0.34.0 (the gpu profile's engine, "
     "engine.vllmVersion.gpu): check the spelling against the chart's files/vllm-args-0.34.0.txt"),
    (dict(gpus=0, args={"gpu-memory-utilization": 0.5}), {},
     "models[m].args.gpu-memory-utilization is a GPU-only flag but the model's device profile is cpu: remove it, "
     "or set device: gpu"),
    (dict(gpus=0, device="gpu"), {},
     "models[m]: device gpu needs gpus 1 or more (the tensor parallel size); for a CPU engine set device: cpu"),
    (dict(gpus=2, device="cpu"), {}, "models[m]: device cpu takes no GPUs but gpus is 2; set gpus: 0, or device: gpu"),
    (dict(gpus=0), {"device": "tpu"}, "at '/device': value must be one of 'auto', 'cpu', 'gpu'"),
    (dict(gpus=0, device="tpu"), {}, "at '/models/0/device': value must be one of 'auto', 'cpu', 'gpu'"),
    (dict(gpus=1, args={"enable-lora": None, "max-lora-rank": 12}), {},
     "models[m].args.enable-lora is set by the chart (from name, servedName, gpus, apiKey, loraModules, drain.seconds): remove it"),
    (dict(gpus=1, args={"max-lora-rank": 12}), {},
     "models[m].args.max-lora-rank: vLLM 0.34.0 refuses --max-lora-rank 12; it accepts: 1, 8, 16, 32, 64, 128, 256, 320, 512"),
    (dict(gpus=0, args={"enforce-eager": 3}), {},
     "models[m].args.enforce-eager: --enforce-eager takes no value in vLLM 0.32.0: set it to true (pass it) or false (leave it out)"),
    (dict(gpus=0, args={"max-model-len": True}), {}, "models[m].args.max-model-len: --max-model-len needs a value in vLLM 0.32.0, not true"),
    (dict(gpus=0), {"engine": {"vllmVersion": {"cpu": "0.7.3"}}},
     'engine.vllmVersion.cpu "0.7.3": the chart has no flag list files/vllm-args-0.7.3.txt for it; known: 0.32.0, 0.34.0 '
     "(tests/tools/vllm_args.py --installed makes one)"),
    (dict(gpus=0), {"presets": {"chat": {"disable-log-requests": True}}},
     "presets.chat.disable-log-requests (models[m]): --disable-log-requests is not a flag of vLLM 0.32.0"),
])
def test_bad_flags_and_profiles_render_nothing(tmp_path, model, extra, message):
    vals = values(**model)
    for key, sub in extra.items():
        vals[key] = dict(vals.get(key, {}), **sub) if isinstance(sub, dict) and key != "presets" else sub
    if "presets" in extra:
        vals["presets"] = extra["presets"]
    p = render(tmp_path, vals)
    assert p.returncode != 0
    assert message in p.stderr, p.stderr
    assert p.stdout == ""


# --- values.schema.json: the one place a model entry's shape is checked ----------------------

@pytest.mark.parametrize("change, messages", [
    (dict(tensor_parallel=2), ["at '/models/0': additional properties 'tensor_parallel' not allowed"]),
    (dict(name="Chat_1"), ["at '/models/0/name': 'Chat_1' does not match pattern"]),
    (dict(name="m" * 41), ["at '/models/0/name'"]),
    (dict(gpus=-1), ["at '/models/0/gpus': minimum: got -1, want 0"]),
    (dict(gpus="2"), ["at '/models/0/gpus': got string, want integer"]),
    (dict(checkpoint=dict(prefix="p", digest="abab", path="x")),
     ["at '/models/0/checkpoint/digest': 'abab' does not match pattern '^[0-9a-f]{64}$'",
      "at '/models/0/checkpoint': additional properties 'path' not allowed"]),
    (dict(checkpoint=dict(prefix="", digest=DIGEST)), ["at '/models/0/checkpoint/prefix'"]),
    (dict(checkpoint=dict(digest=DIGEST)), ["at '/models/0/checkpoint': missing property 'prefix'"]),
    (dict(args={"Max_Model_Len": 8}), ["at '/models/0/args': additional properties 'Max_Model_Len' not allowed"]),
    (dict(loraModules={"a": 3}), ["at '/models/0/loraModules/a': got number, want string"]),
])
def test_the_schema_refuses_a_bad_model_entry_and_names_every_fault(tmp_path, change, messages):
    p = render(tmp_path, values(**change))
    assert p.returncode != 0
    assert "values don't meet the specifications of the schema" in p.stderr, p.stderr
    for message in messages:
        assert message in p.stderr, p.stderr
    assert p.stdout == ""


def test_two_models_with_one_name_render_nothing(tmp_path):
    vals = values(gpus=0)
    vals["models"].append(dict(vals["models"][0]))
    p = render(tmp_path, vals)
    assert p.returncode != 0
    assert "models[m]: 2 models have this name; each needs its own" in p.stderr, p.stderr
    assert p.stdout == ""


def test_warmup_is_the_startup_probe_for_the_model_and_each_adapter(tmp_path):
    vals = values(gpus=0, servedName="chat", loraModules={"b-adapter": "lora/b", "a-adapter": "lora/a"})
    vals["warmup"] = {"requests": 2}
    pod = deployment(tmp_path, vals)
    probe = pod["containers"][0]["startupProbe"]
    cmd = probe["exec"]["command"]
    # python3 -c SCRIPT PORT REQUESTS MAX_TOKENS PROMPT MODEL LORA...: the served name, then each adapter by name.
    assert cmd[:2] == ["python3", "-c"] and "/v1/completions" in cmd[2] and "/health" in cmd[2]
    assert cmd[3:] == ["8000", "2", "8", "The site is ready.", "chat", "a-adapter", "b-adapter"]
    assert probe["timeoutSeconds"] == 60 and "httpGet" not in probe
    # Compiles as the kubelet will run it (python3 -c).
    compile(cmd[2], "warmup", "exec")


def test_warmup_off_leaves_the_startup_probe_on_health(tmp_path):
    vals = values(gpus=0)  # the default: requests 0
    probe = deployment(tmp_path, vals)["containers"][0]["startupProbe"]
    assert probe["httpGet"] == {"path": "/health", "port": "http"} and "exec" not in probe


@pytest.mark.parametrize("warmup, message", [
    ({"requests": -1}, "at '/warmup/requests': minimum: got -1, want 0"),
    ({"request": 2}, "at '/warmup': additional properties 'request' not allowed"),
    ({"prompt": ""}, "at '/warmup/prompt'"),
])
def test_the_schema_refuses_bad_warmup_values(tmp_path, warmup, message):
    vals = values(gpus=0)
    vals["warmup"] = warmup
    p = render(tmp_path, vals)
    assert p.returncode != 0 and message in p.stderr, p.stderr
    assert p.stdout == ""
