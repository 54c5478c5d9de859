"""Shared by the serving cluster tests (test_serving_chart.py, test_endpoint_ready.py): images of
the vLLM stand-in and of a stand-in downloader loaded into the test cluster, a release of
serving/chart in a test namespace, and endpoint_ready run in-process."""
import base64
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml
from ansible.module_utils.testing import patch_module_args

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "serving" / "chart"
ENGINE_IMAGE = "localhost/llmops/engine-standin:0.1.0"
FAKE_PULL_IMAGE = "localhost/llmops-test/fake-model-pull:1"
API_KEY = "sk-cluster-test-key-0123456789"
DIGEST_A = "a" * 64
DIGEST_B = "b" * 64


def build_and_load_images(kube):
    """Build the stand-in engine and the stand-in downloader images and import them into the cluster."""
    tmp = Path(tempfile.mkdtemp(prefix="serving-images-"))
    try:
        kube.run([REPO / "serving" / "images" / "build.sh", "engine-standin", "--output", tmp / "engine.tar"])
        rootfs = kube.run([REPO / "serving" / "images" / "build.sh", "runtime-rootfs"]).stdout.strip().splitlines()[-1]
        stage = tmp / "fake"
        stage.mkdir()
        shutil.copy(REPO / "tests" / "integration" / "serving" / "fake_model_pull.py", stage)
        kube.run(["python3", REPO / "tests" / "cluster" / "mkimage.py", "--tag", FAKE_PULL_IMAGE, "--layer", rootfs,
                  "--add", "%s:/opt/fake-model-pull:0755" % stage, "--env", "PYTHONUNBUFFERED=1",
                  "--env", "PYTHONDONTWRITEBYTECODE=1",
                  "--entrypoint", '["/usr/bin/python3", "/opt/fake-model-pull/fake_model_pull.py"]',
                  "--user", "65534:65534", "--output", tmp / "fake.tar"])
        kube.run([REPO / "tests" / "cluster" / "load-image.sh", tmp / "engine.tar", tmp / "fake.tar"])
    finally:
        shutil.rmtree(tmp)


def secrets(kube, ns):
    k8s = kube.k8s
    for name, data in (("llmops-serving-api-key", {"api-key": API_KEY}),
                       ("llmops-serving-object-storage", {"access-key": "reader", "secret-key": "R" * 40})):
        kube.core.create_namespaced_secret(ns, k8s.V1Secret(
            metadata=k8s.V1ObjectMeta(name=name),
            data=dict((k, base64.b64encode(v.encode()).decode()) for k, v in data.items())))


def model(name, prefix="models/tiny", digest=DIGEST_A, gpus=0, **kw):
    m = dict(name=name, servedName=name + "-served", preset="chat_small", gpus=gpus,
             checkpoint=dict(prefix=prefix, digest=digest, bytes=4096),
             resources=dict(requests=dict(cpu="10m", memory="64Mi"), limits=dict(memory="256Mi")))
    m.update(kw)
    return m


def values(cache_dir, models, **extra):
    v = dict(
        engine=dict(image=ENGINE_IMAGE, pullPolicy="Never", extraEnv=[]),
        downloader=dict(image=FAKE_PULL_IMAGE, pullPolicy="Never"),
        objectStore=dict(endpoint="http://127.0.0.1:9", bucket="checkpoints"),
        apiKey=dict(secretName="llmops-serving-api-key", key="api-key"),
        cache=dict(hostPath=str(cache_dir)),
        startup=dict(baseSeconds=30, periodSeconds=2),
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


class CacheDir(object):
    """A hostPath cache on this (single) node (pods write it as 65534).

    remove(kube, namespace) deletes the namespace first: a pod still running would make the
    hostPath (DirectoryOrCreate) again."""

    def __init__(self):
        self.path = Path(tempfile.mkdtemp(prefix="llmops-serving-cache-"))
        os.chmod(self.path, 0o755)

    def remove(self, kube, namespace):
        kube.delete_namespace(namespace)
        subprocess.run(["rm", "-rf", str(self.path)], check=False)
