"""The warm-up of seed 003 against the REAL vLLM (issue 15 item 4): with `warmup.requests: 2` the engine
container's startup probe is the chart's warm-up (files/warmup.py), which sends two completions to the
served model and two to its LoRA adapter before the pod may turn Ready. Before anyone else has sent a
request, the engine's own counter (`vllm:request_success_total` on /metrics) shows exactly those four,
and the model then answers every endpoint_ready step. The default (warm-up off) is covered by
test_serving_chart.py."""
import json
import urllib.request

import pytest

import serving_helpers as sh

RELEASE = "warm"


@pytest.fixture(scope="module")
def images(kube):
    sh.build_and_load_images(kube)


@pytest.fixture
def cache(kube, namespace):
    c = sh.CacheDir()
    yield c
    c.remove(kube, namespace)


def ready(kube, ns):
    for p in sh.live_pods(kube, ns, "llmops.onprem/model=tiny"):
        if [c for c in p.status.conditions or [] if c.type == "Ready" and c.status == "True"]:
            return p
    return None


def successes(text):
    """Sum of vllm:request_success_total over its label sets (finished reasons)."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("vllm:request_success_total{"))


def test_warmup_sends_its_completions_before_the_pod_is_ready(kube, namespace, images, cache, capsys):
    ns = namespace
    sh.secrets(kube, ns)
    vals = sh.values(cache.path, [sh.model("tiny", loraModules={"tiny-lora": "lora/tiny-lora"},
                                           args=dict(sh.ENGINE_ARGS, **{"max-lora-rank": 8}))],
                     warmup=dict(requests=2, maxTokens=4, prompt="The site is ready.", timeoutSeconds=120))
    sh.helm(kube, ns, RELEASE, vals)
    pod = kube.wait_for("the warm-up pod Ready", lambda: ready(kube, ns), timeout=sh.START_SECONDS, interval=1)
    engine = pod.spec.containers[0]
    assert engine.startup_probe.http_get is None
    command = engine.startup_probe._exec.command
    assert command[:2] == ["python3", "-c"] and command[-2:] == ["tiny-served", "tiny-lora"], command

    # The pod's own address, not the Service's: a pod just turned Ready is not yet behind its Service's address
    # (the endpoints and kube-proxy follow a moment later; the Service refused the connection in a CI run).
    with urllib.request.urlopen("http://%s:8000/metrics" % pod.status.pod_ip, timeout=30) as r:  # noqa: S310 - the test's own pod
        metrics = r.read().decode()
    # Nobody but the startup probe has sent a request yet: 2 to the model and 2 to its adapter.
    assert successes(metrics) == 4, [ln for ln in metrics.splitlines() if "request_success" in ln]

    result, out = sh.endpoint_ready(kube, capsys, [sh.endpoint(kube, ns, RELEASE, "tiny")], timeout=120)
    ep = sh.assert_ready(result, "tiny")
    assert ep["completion"] and sh.API_KEY not in out
    events = kube.core.list_namespaced_event(ns, field_selector="involvedObject.name=%s" % pod.metadata.name).items
    assert not [e for e in events if e.reason == "Unhealthy" and "warm-up:" in (e.message or "")], \
        json.dumps([e.message for e in events])
