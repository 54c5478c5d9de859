"""endpoint_ready's diagnoses provoked for real on the 1.20 test cluster: one release of
serving/chart with one model per failure, waited for together. The images are the vLLM
stand-in and a stand-in downloader whose exit codes follow model-pull's (tests/integration/serving)."""
import pytest

import serving_helpers as sh

RELEASE = "diag"


@pytest.fixture(scope="module")
def images(kube):
    sh.build_and_load_images(kube)


def test_each_diagnosis(kube, namespace, images, capsys):
    ns = namespace
    cache = sh.CacheDir()
    gpus_before = sh.fake_gpus(kube, 1)
    try:
        sh.secrets(kube, ns)
        models = [
            sh.model("good", gpus=1),
            sh.model("nogpu", gpus=8),
            sh.model("missing", prefix="models/missing-prefix"),
            sh.model("denied", prefix="models/denied"),
            sh.model("qwen3", prefix="models/qwen3-8b"),
        ]
        sh.helm(kube, ns, RELEASE, sh.values(cache.path, models))
        # An engine image the node cannot pull: a registry on a closed loopback port, pulled Always.
        sh.helm(kube, ns, "np", sh.values(cache.path, [sh.model("nopull")],
                                          engine=dict(image="127.0.0.1:9/docker.io/vllm/vllm-openai:v0.7.3",
                                                      pullPolicy="Always")))
        endpoints = [sh.endpoint(kube, ns, RELEASE, m["name"]) for m in models]
        endpoints.append(sh.endpoint(kube, ns, RELEASE, "good", name="wrongkey", api_key="sk-wrong"))
        endpoints.append(sh.endpoint(kube, ns, "np", "nopull"))
        result, out = sh.endpoint_ready(kube, capsys, endpoints, timeout=240, fail_on_not_ready=False)
        by = dict((e["name"], e) for e in result["endpoints"])
        assert by["good"]["ready"], (by["good"]["steps"], by["good"]["diagnosis"])
        assert not result["ready"] and "sk-wrong" not in out and sh.API_KEY not in out
        codes = dict((n, (e["diagnosis"] or {}).get("code")) for n, e in by.items())
        assert codes == {"good": None, "nogpu": "insufficient_gpu", "missing": "checkpoint_missing",
                         "denied": "credential_refused", "qwen3": "unsupported_architecture",
                         "wrongkey": "unauthorized", "nopull": "image_pull"}, dict((n, (e["diagnosis"] or {}).get("message")) for n, e in by.items())
        d = by["nogpu"]["diagnosis"]
        assert d["message"].startswith("nogpu (model nogpu-served): pod diag-nogpu-") and \
            d["message"].endswith("is Pending: 0/1 nodes are available: 1 Insufficient nvidia.com/gpu.")
        assert by["nogpu"]["steps"][-1]["step"] == "pods_scheduled"
        d = by["missing"]["diagnosis"]
        assert "init container model-pull of pod diag-missing-" in d["message"]
        assert ("exited 4: the checkpoint prefix is empty or wrong: no .llmops/manifest.json under it. Last log lines: "
                in d["message"])
        assert "model-pull: no manifest at s3://checkpoints/models/missing-prefix/.llmops/manifest.json" in d["message"]
        assert "checkpoints stage" in d["fix"] and by["missing"]["steps"][-1]["step"] == "init_done"
        d = by["denied"]["diagnosis"]
        assert "exited 3: the object store refused the downloader's read-only credential" in d["message"]
        assert "InvalidAccessKeyId" in d["message"]
        d = by["qwen3"]["diagnosis"]
        assert ("the engine in pod diag-qwen3-" in d["message"] and
                "ValueError: Model architectures ['Qwen3ForCausalLM'] are not supported for now." in d["message"])
        assert "newer release" in d["fix"]
        d = by["wrongkey"]["diagnosis"]
        assert d["message"] == "wrongkey (model good-served): %s answered 401 Unauthorized: the API key given is not the " \
                               "engine's" % by["wrongkey"]["url"]
        d = by["nopull"]["diagnosis"]
        assert "cannot pull image 127.0.0.1:9/docker.io/vllm/vllm-openai:v0.7.3 for container engine" in d["message"]
        assert "not in the site registry" in d["fix"]
        assert all(e["diagnosis"]["fatal"] for e in result["endpoints"] if not e["ready"])
    finally:
        sh.fake_gpus(kube, gpus_before)
        cache.remove(kube, ns)
