"""End to end with the real downloader: checkpoint_sync puts a checkpoint into `rclone serve s3`
(on the pod bridge's gateway address, which pods reach), the llmops-serving chart pulls it with
the model-pull image into a hostPath node cache and serves it with the real vLLM (a real tiny model), and
endpoint_ready declares it ready; a restarted pod fetches 0 bytes; a wrong prefix and a wrong
credential are diagnosed from the downloader's exit codes 4 and 3."""
import base64
import os
import socket
import subprocess
import sys

import pytest

import serving_helpers as sh

GATEWAY = "10.244.0.1"  # tests/cluster/lib.sh K8S_POD_GW: pods reach the host here
KEY = ("llmops-serving-ro", "serving-secret-0123456789abcdefghijkl")
PULL_IMAGE = "localhost/llmops/model-pull:serving-test"
RELEASE = "e2e"


@pytest.fixture(scope="module")
def images(kube, tmp_path_factory):
    sh.build_and_load_images(kube)
    out = tmp_path_factory.mktemp("img") / "model-pull.tar"
    kube.run([sh.REPO / "serving" / "images" / "build.sh", "model-pull", "--output", out, "--tag", PULL_IMAGE])
    kube.run([sh.REPO / "tests" / "cluster" / "load-image.sh", out])


@pytest.fixture(scope="module")
def store(kube, tmp_path_factory):
    """rclone serve s3 on the bridge address holding one synced checkpoint: (url, prefix, digest)."""
    base = tmp_path_factory.mktemp("s3")
    (base / "data" / "model-checkpoints").mkdir(parents=True)
    with socket.socket() as s:
        s.bind((GATEWAY, 0))
        port = s.getsockname()[1]
    log = open(base / "rclone.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "rclone"), "serve", "s3", "--config",
                             "/dev/null", "--addr", "%s:%d" % (GATEWAY, port), "--auth-key", "%s,%s" % KEY,
                             "--etag-hash", "", str(base / "data")], stdout=log, stderr=subprocess.STDOUT)
    url = "http://%s:%d" % (GATEWAY, port)
    try:
        kube.wait_for("rclone serve s3 on " + url,
                      lambda: socket.create_connection((GATEWAY, port), timeout=1).close() or True, timeout=30)
        src = base / "tiny"
        venv = kube.run([sh.REPO / "serving" / "images" / "build.sh", "vllm-env"]).stdout.strip().splitlines()[-1]
        kube.run([os.path.join(venv, "bin", "python"), sh.REPO / "tests" / "tools" / "make_model.py", src])
        from ansible_collections.llmops.onprem.plugins.module_utils import _checkpoint
        from ansible_collections.llmops.onprem.plugins.modules import checkpoint_sync
        digest = _checkpoint.manifest_digest(_checkpoint.manifest_from_dir(str(src), "tiny"))
        result = checkpoint_sync.run(dict(
            endpoint_url=url, access_key=KEY[0], secret_key=KEY[1], region="us-east-1", ca_path=None, timeout=10,
            src=str(src), name="tiny", manifest=None, bucket="model-checkpoints", prefix="tiny/" + digest,
            delete=False, verify=False, parallel=4, part_size=64, progress_file=None), False)
        assert result["manifest_digest"] == digest
        yield url, "tiny/" + digest, digest, sh.model_dir_bytes(src)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_cold_start_restart_and_downloader_failures(kube, namespace, images, store, capsys):
    url, prefix, digest, size = store
    ns = namespace
    cache = sh.CacheDir()
    try:
        for name, (ak, sk) in (("llmops-serving-object-storage", KEY), ("wrong-credential", ("nobody", "N" * 40))):
            kube.core.create_namespaced_secret(ns, kube.k8s.V1Secret(
                metadata=kube.k8s.V1ObjectMeta(name=name),
                data={"access-key": base64.b64encode(ak.encode()).decode(),
                      "secret-key": base64.b64encode(sk.encode()).decode()}))
        kube.core.create_namespaced_secret(ns, kube.k8s.V1Secret(
            metadata=kube.k8s.V1ObjectMeta(name="llmops-serving-api-key"),
            data={"api-key": base64.b64encode(sh.API_KEY.encode()).decode()}))
        common = dict(downloader=dict(image=PULL_IMAGE, pullPolicy="Never"),
                      objectStore=dict(endpoint=url, bucket="model-checkpoints"))
        ckpt = dict(prefix=prefix, digest=digest, bytes=size)
        sh.helm(kube, ns, RELEASE, sh.values(cache.path, [sh.model("tiny", checkpoint=ckpt),
                                                          sh.model("typo", checkpoint=dict(ckpt, prefix="tiny/typo"))],
                                             **common))
        sh.helm(kube, ns, "cred", sh.values(cache.path, [sh.model("cred", checkpoint=ckpt)],
                                            objectStore=dict(endpoint=url, bucket="model-checkpoints",
                                                             secretName="wrong-credential"),
                                            downloader=common["downloader"]))
        eps = [sh.endpoint(kube, ns, RELEASE, "tiny"), sh.endpoint(kube, ns, RELEASE, "typo"),
               sh.endpoint(kube, ns, "cred", "cred")]
        result, _out = sh.endpoint_ready(kube, capsys, eps, timeout=sh.START_SECONDS, fail_on_not_ready=False)
        by = dict((e["name"], e) for e in result["endpoints"])
        sh.assert_ready(result, "tiny")
        assert by["typo"]["diagnosis"]["code"] == "checkpoint_missing", by["typo"]["diagnosis"]["message"]
        assert "exited 4" in by["typo"]["diagnosis"]["message"]
        assert by["cred"]["diagnosis"]["code"] == "credential_refused", by["cred"]["diagnosis"]["message"]
        assert "exited 3" in by["cred"]["diagnosis"]["message"]
        [pod] = sh.live_pods(kube, ns, "llmops.onprem/model=tiny")
        log = kube.core.read_namespaced_pod_log(pod.metadata.name, ns, container="model-pull",
                                                _preload_content=False).data.decode()
        assert log.strip().splitlines()[-1] == "MODEL_PATH=/models/tiny/%s" % digest
        assert (cache.path / "tiny" / digest / "model.safetensors").is_file()

        # Restart: the node cache already holds the verified checkpoint, nothing is fetched.
        kube.core.delete_namespaced_pod(pod.metadata.name, ns)
        result, _out = sh.endpoint_ready(kube, capsys, eps[:1], timeout=sh.START_SECONDS)
        sh.assert_ready(result, "tiny")
        [new] = sh.live_pods(kube, ns, "llmops.onprem/model=tiny")
        assert new.metadata.name != pod.metadata.name
        log = kube.core.read_namespaced_pod_log(new.metadata.name, ns, container="model-pull",
                                                _preload_content=False).data.decode()
        assert "done: 0 bytes fetched" in log, log
    finally:
        for release in (RELEASE, "cred"):
            kube.run([kube.HELM, "--kubeconfig", kube.kubeconfig, "-n", ns, "uninstall", release], check=False)
        cache.remove(kube, ns)
