"""endpoint_ready's diagnoses provoked for real on the 1.20 test cluster: one release of
serving/chart with one model per failure, waited for together. The images are the vLLM
stand-in and a stand-in downloader whose exit codes follow model-pull's (tests/integration/serving).
And a pod on its way out (deleted, still answering in its preStop) is not taken for the endpoint."""
import json
import urllib.request

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
            sh.model("inhouse", prefix="models/unsupported-arch-7b"),
        ]
        sh.helm(kube, ns, RELEASE, sh.values(cache.path, models))
        # An engine image the node cannot pull: a registry on a closed loopback port, pulled Always.
        sh.helm(kube, ns, "np", sh.values(cache.path, [sh.model("nopull")],
                                          engine=dict(image="127.0.0.1:9/docker.io/vllm/vllm-openai:v0.7.3",
                                                      pullPolicy="Always")))
        endpoints = [sh.endpoint(kube, ns, RELEASE, m["name"]) for m in models]
        endpoints.append(sh.endpoint(kube, ns, RELEASE, "good", name="wrongkey", api_key="sk-wrong"))
        endpoints.append(sh.endpoint(kube, ns, "np", "nopull"))
        # The same good engine through a port-forward (the key arrives) and through the API server's service
        # proxy (which drops the Authorization header: the engine answers 401, diagnosed as such).
        endpoints.append(sh.endpoint(kube, ns, RELEASE, "good", name="viapf", via="portforward"))
        endpoints.append(sh.endpoint(kube, ns, RELEASE, "good", name="viaproxy", via="proxy", service="%s-good" % RELEASE))
        result, out = sh.endpoint_ready(kube, capsys, endpoints, timeout=sh.START_SECONDS, fail_on_not_ready=False)
        by = dict((e["name"], e) for e in result["endpoints"])
        sh.assert_ready(result, "good")
        assert not result["ready"] and "sk-wrong" not in out and sh.API_KEY not in out
        codes = dict((n, (e["diagnosis"] or {}).get("code")) for n, e in by.items())
        assert codes == {"good": None, "nogpu": "insufficient_gpu", "missing": "checkpoint_missing",
                         "denied": "credential_refused", "inhouse": "unsupported_architecture",
                         "wrongkey": "unauthorized", "nopull": "image_pull", "viapf": None, "viaproxy": "unauthorized"}, \
            json.dumps(dict((n, e["diagnosis"]) for n, e in by.items()), indent=2)
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
        d = by["inhouse"]["diagnosis"]
        assert ("the engine in pod diag-inhouse-" in d["message"] and
                "Model architectures ['SiteInHouseForCausalLM'] are not supported for now." in d["message"])
        assert "newer release" in d["fix"]
        d = by["wrongkey"]["diagnosis"]
        assert d["message"] == "wrongkey (model good-served): %s answered 401 Unauthorized: the API key given is not the " \
                               "engine's" % by["wrongkey"]["url"]
        assert [st["step"] for st in by["viapf"]["steps"]] == ["pods_scheduled", "init_done", "health", "models", "completion",
                                                               "chat", "sagemaker", "api_key"]
        d = by["viaproxy"]["diagnosis"]
        assert d["message"] == ("viaproxy (model good-served): %s answered 401 Unauthorized through the API server's service "
                                "proxy, which drops the Authorization header: the engine never sees the API key this way"
                                % by["viaproxy"]["url"]), d["message"]
        assert by["viaproxy"]["steps"][-1]["step"] == "models"  # /health needs no key: it passed through the proxy
        d = by["nopull"]["diagnosis"]
        assert "cannot pull image 127.0.0.1:9/docker.io/vllm/vllm-openai:v0.7.3 for container engine" in d["message"]
        assert "not in the site registry" in d["fix"]
        assert all(e["diagnosis"]["fatal"] for e in result["endpoints"] if not e["ready"])
    finally:
        sh.fake_gpus(kube, gpus_before)
        cache.remove(kube, ns)


def test_a_pod_on_its_way_out_is_not_the_endpoint(kube, namespace, images, capsys):
    """Issue 21: after a pod is deleted, it stays in the selector (Running, its engine still answering
    during a long preStop) while its replacement cannot start: the replacement waits for the GPU the old
    pod holds until it is gone. endpoint_ready must judge the new pod only: not ready, a diagnosis that
    waits (not a fatal insufficient_gpu, not the old pod's state), and ready once the new pod serves."""
    ns = namespace
    cache = sh.CacheDir()
    gpus_before = sh.fake_gpus(kube, 1)
    selector = "app.kubernetes.io/instance=out,llmops.onprem/model=one"
    try:
        sh.secrets(kube, ns)
        sh.helm(kube, ns, "out", sh.values(cache.path, [sh.model("one", gpus=1)], drain=dict(preStopSeconds=45, seconds=5)))
        sh.assert_ready(sh.endpoint_ready(kube, capsys, [sh.endpoint(kube, ns, "out", "one")], timeout=sh.START_SECONDS)[0])
        [old] = sh.live_pods(kube, ns, selector)
        old_url = "http://%s:8000" % old.status.pod_ip
        kube.core.delete_namespaced_pod(old.metadata.name, ns)

        def new_pod_pending():
            pods = sh.live_pods(kube, ns, selector)
            return pods if len(pods) == 1 and any(c.type == "PodScheduled" and c.status == "False"
                                                  for c in pods[0].status.conditions or []) else None
        [new] = kube.wait_for("the replacement pod Pending on the GPU", new_pod_pending, timeout=60)
        # The trap: the old pod, on its way out (preStop), still answers as a ready engine.
        with urllib.request.urlopen(old_url + "/health", timeout=5) as r:  # noqa: S310 - the test's own pod
            assert r.status == 200
        assert kube.core.read_namespaced_pod(old.metadata.name, ns).metadata.deletion_timestamp is not None

        result, _out = sh.endpoint_ready(kube, capsys, [sh.endpoint(kube, ns, "out", "one", url=old_url)], timeout=10,
                                         fail_on_not_ready=False)
        [ep] = result["endpoints"]
        d = ep["diagnosis"]
        assert not ep["ready"] and ep["steps"][-1]["step"] == "pods_scheduled" and ep["seconds"] >= 10, ep
        assert d["code"] == "waiting_for_old_pod" and not d["fatal"], json.dumps(d, indent=2)
        assert d["message"].startswith("one (model one-served): pod %s is Pending (0/1 nodes are available: 1 Insufficient "
                                       "nvidia.com/gpu.) while pod(s) %s of this endpoint are still terminating"
                                       % (new.metadata.name, old.metadata.name)), d["message"]
        assert [p["pod"] for p in d["evidence"]["pods"]] == [new.metadata.name]
        assert d["evidence"]["leaving"] == [old.metadata.name]

        # Once the old pod is gone, the new one gets the GPU and is the endpoint.
        result, _out = sh.endpoint_ready(kube, capsys, [sh.endpoint(kube, ns, "out", "one")], timeout=sh.START_SECONDS)
        sh.assert_ready(result, "one")
        assert [p.metadata.name for p in sh.live_pods(kube, ns, selector)] == [new.metadata.name]
    finally:
        sh.fake_gpus(kube, gpus_before)
        cache.remove(kube, ns)
