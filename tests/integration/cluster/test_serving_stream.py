"""`load: stream` for real (issue 15 item 5): serving/chart with the REAL vLLM image, a model that is not
in any node cache and no init container: vLLM's Run:ai Model Streamer reads the safetensors straight
from the object store with the read-only credential (`rclone serve s3`, the MinIO stand-in, on the pod
bridge's gateway address), the config and tokenizer with it, and the model answers endpoint_ready's
every step. A wrong secret key is refused by the store and the pod never becomes ready."""
import base64
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import serving_helpers as sh

GATEWAY = "10.244.0.1"   # tests/cluster/lib.sh K8S_POD_GW: pods reach the host here
RELEASE = "stream"
BUCKET = "model-checkpoints"
PREFIX = "stream/tiny"
READER = ("reader", "R" * 40)   # the read-only pair serving_helpers.secrets() puts into llmops-serving-object-storage


def free_port():
    with socket.socket() as s:
        s.bind((GATEWAY, 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def images(kube):
    sh.build_and_load_images(kube)


@pytest.fixture(scope="module")
def store(kube, images):
    """The real tiny model at s3://model-checkpoints/stream/tiny/<digest> in `rclone serve s3` (the MinIO
    stand-in: no MinIO binary can be had here), listening on the gateway only, with the read-only key."""
    base = Path(tempfile.mkdtemp(prefix="llmops-stream-"))
    venv = kube.run([sh.REPO / "serving" / "images" / "build.sh", "vllm-env"]).stdout.strip().splitlines()[-1]
    model = base / "data" / BUCKET / PREFIX / sh.DIGEST_A
    kube.run([Path(venv) / "bin" / "python", sh.REPO / "tests" / "tools" / "make_model.py", model])
    port = free_port()
    log = open(base / "rclone.log", "wb")
    proc = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "rclone"), "serve", "s3", "--config", "/dev/null",
                             "--addr", "%s:%d" % (GATEWAY, port), "--auth-key", "%s,%s" % READER, "--etag-hash", "",
                             str(base / "data")], stdout=log, stderr=subprocess.STDOUT)
    try:
        kube.wait_for("rclone serve s3 on %s:%d" % (GATEWAY, port),
                      lambda: socket.create_connection((GATEWAY, port), timeout=1).close() or True, timeout=30)
        yield {"endpoint": "http://%s:%d" % (GATEWAY, port), "log": base / "rclone.log"}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def ns(kube, namespace):
    """The test's namespace; its serving pods deleted with 1 s grace first (the chart's grace period, preStop and
    drain, made the namespace's deletion take 86 s in make test)."""
    yield namespace
    sh.delete_pods_now(kube, namespace)


def stream_values(store):
    # The prefix as the vllm_serving role hands it over: the checkpoint's content-addressed <model>/<digest>.
    m = sh.model("tiny", prefix="%s/%s" % (PREFIX, sh.DIGEST_A), load="stream")
    return sh.values("/nonexistent-no-cache-is-used", [m], objectStore=dict(endpoint=store["endpoint"], bucket=BUCKET))


def test_load_stream_serves_from_the_object_store(kube, ns, store, capsys):
    sh.secrets(kube, ns)
    sh.helm(kube, ns, RELEASE, stream_values(store))
    result, out = sh.endpoint_ready(kube, capsys, [sh.endpoint(kube, ns, RELEASE, "tiny")], timeout=sh.START_SECONDS)
    ep = sh.assert_ready(result, "tiny")
    assert ep["completion"] and sh.API_KEY not in out
    [pod] = sh.live_pods(kube, ns, "llmops.onprem/model=tiny")
    assert not pod.spec.init_containers, "load: stream needs no downloader"
    assert not [v for v in pod.spec.volumes if v.host_path], "load: stream uses no node cache"
    engine = pod.spec.containers[0]
    assert engine.args[:2] == ["--model", "s3://%s/%s/%s" % (BUCKET, PREFIX, sh.DIGEST_A)]
    assert "runai_streamer" in engine.args
    log = kube.pod_log(ns, pod.metadata.name)
    assert "Loading safetensors using Runai Model Streamer" in log, log[-3000:]
    assert READER[1] not in log


def test_load_stream_with_a_wrong_key_never_becomes_ready(kube, ns, store, capsys):
    sh.secrets(kube, ns)
    kube.core.patch_namespaced_secret("llmops-serving-object-storage", ns, {"data": {
        "secret-key": base64.b64encode(b"W" * 40).decode()}})
    sh.helm(kube, ns, RELEASE, stream_values(store))
    result, _out = sh.endpoint_ready(kube, capsys, [sh.endpoint(kube, ns, RELEASE, "tiny")], timeout=240)
    [ep] = result["endpoints"]
    assert not ep["ready"], ep
    [pod] = kube.core.list_namespaced_pod(ns, label_selector="llmops.onprem/model=tiny").items
    status = pod.status.container_statuses[0]
    previous = bool(status.restart_count)
    log = kube.core.read_namespaced_pod_log(pod.metadata.name, ns, previous=previous, _preload_content=False).data.decode()
    assert "W" * 40 not in log
    assert "SignatureDoesNotMatch" in log or "403" in log or "AccessDenied" in log, log[-3000:]
