"""The model-pull image as a serving pod's init container: it pulls a checkpoint that
checkpoint_sync put into `rclone serve s3` (listening on the pod bridge's gateway address only)
into a hostPath node cache; the main container sees the files; a second pod on the node moves
0 bytes; a wrong prefix fails the init container with exit code 4."""
import hashlib
import json
import os
import socket
import subprocess
import sys

import pytest

GATEWAY = "10.244.0.1"   # tests/cluster/lib.sh K8S_POD_GW: pods reach the host here
KEY = ("llmops-pull-ro", "pull-secret-0123456789abcdefghijklmn")
IMAGE = "localhost/llmops/model-pull:test"


def free_port():
    with socket.socket() as s:
        s.bind((GATEWAY, 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def image(kube, tmp_path_factory):
    out = tmp_path_factory.mktemp("img") / "model-pull.tar"
    kube.run([kube.REPO / "serving" / "images" / "build.sh", "model-pull", "--output", out, "--tag", IMAGE])
    kube.run([kube.CLUSTER / "load-image.sh", out])
    return IMAGE


@pytest.fixture(scope="module")
def store(kube, tmp_path_factory):
    """rclone serve s3 on the bridge address with a synced checkpoint: (url, prefix, digest, src dir)."""
    base = tmp_path_factory.mktemp("s3")
    data = base / "data"
    (data / "model-checkpoints").mkdir(parents=True)
    port = free_port()
    venv_bin = os.path.dirname(sys.executable)
    log = open(base / "rclone.log", "wb")
    proc = subprocess.Popen([os.path.join(venv_bin, "rclone"), "serve", "s3", "--config", "/dev/null",
                             "--addr", "%s:%d" % (GATEWAY, port), "--auth-key", "%s,%s" % KEY, "--etag-hash", "",
                             str(data)], stdout=log, stderr=subprocess.STDOUT)
    try:
        kube.wait_for("rclone serve s3 on %s:%d" % (GATEWAY, port),
                      lambda: socket.create_connection((GATEWAY, port), timeout=1).close() or True, timeout=30)
        src = base / "demo"
        src.mkdir()
        (src / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
        (src / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE"}}))
        header = json.dumps({"w": {"dtype": "U8", "shape": [3 << 20], "data_offsets": [0, 3 << 20]}}).encode()
        (src / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + os.urandom(3 << 20))
        from ansible_collections.llmops.onprem.plugins.module_utils import _checkpoint
        from ansible_collections.llmops.onprem.plugins.modules import checkpoint_sync
        digest = _checkpoint.manifest_digest(_checkpoint.manifest_from_dir(str(src), "demo"))
        result = checkpoint_sync.run(dict(
            endpoint_url="http://%s:%d" % (GATEWAY, port), access_key=KEY[0], secret_key=KEY[1], region="us-east-1",
            ca_path=None, timeout=10, src=str(src), name="demo", manifest=None, bucket="model-checkpoints",
            prefix="demo/" + digest, delete=False, verify=False, parallel=4, part_size=64, progress_file=None), False)
        assert result["manifest_digest"] == digest
        yield "http://%s:%d" % (GATEWAY, port), "demo/" + digest, digest, src
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def serving_pod(kube, name, image, url, prefix, digest, cache_dir):
    k8s = kube.k8s
    env = [k8s.V1EnvVar(name=var, value_from=k8s.V1EnvVarSource(secret_key_ref=k8s.V1SecretKeySelector(
        name="model-checkpoints-readonly", key=key))) for var, key in
        (("AWS_ACCESS_KEY_ID", "access-key"), ("AWS_SECRET_ACCESS_KEY", "secret-key"))]
    mount = [k8s.V1VolumeMount(name="model-cache", mount_path="/models")]
    init = k8s.V1Container(
        name="model-pull", image=image, image_pull_policy="Never", env=env, volume_mounts=mount,
        args=["--endpoint", url, "--bucket", "model-checkpoints", "--prefix", prefix, "--model", "demo",
              "--digest", digest, "--cache-root", "/models", "--parallel", "4"],
        security_context=k8s.V1SecurityContext(run_as_user=0))
    main = k8s.V1Container(name="engine", image=kube.BUSYBOX, image_pull_policy="Never", volume_mounts=mount,
                           command=["sh", "-c", "sha256sum /models/demo/%s/model.safetensors" % digest])
    return k8s.V1Pod(metadata=k8s.V1ObjectMeta(name=name), spec=k8s.V1PodSpec(
        init_containers=[init], containers=[main], restart_policy="Never",
        volumes=[k8s.V1Volume(name="model-cache", host_path=k8s.V1HostPathVolumeSource(
            path=cache_dir, type="DirectoryOrCreate"))]))


def init_log(kube, namespace, name):
    r = kube.core.read_namespaced_pod_log(name, namespace, container="model-pull", _preload_content=False)
    return r.data.decode()


def test_init_container_pulls_once_per_node(kube, namespace, image, store, tmp_path):
    url, prefix, digest, src = store
    k8s = kube.k8s
    kube.core.create_namespaced_secret(namespace, k8s.V1Secret(
        metadata=k8s.V1ObjectMeta(name="model-checkpoints-readonly"),
        string_data={"access-key": KEY[0], "secret-key": KEY[1]}))
    cache = str(tmp_path / "node-cache")
    expected = hashlib.sha256((src / "model.safetensors").read_bytes()).hexdigest()

    kube.core.create_namespaced_pod(namespace, serving_pod(kube, "cold", image, url, prefix, digest, cache))
    pod = kube.wait_pod_done(namespace, "cold", timeout=180)
    log = init_log(kube, namespace, "cold")
    assert pod.status.phase == "Succeeded", "%s\n%s" % (pod.status, log)
    assert log.strip().splitlines()[-1] == "MODEL_PATH=/models/demo/%s" % digest
    assert "3 to fetch" in log
    assert kube.pod_log(namespace, "cold").split()[0] == expected
    assert hashlib.sha256(open(os.path.join(cache, "demo", digest, "model.safetensors"), "rb").read()).hexdigest() == expected

    kube.core.create_namespaced_pod(namespace, serving_pod(kube, "warm", image, url, prefix, digest, cache))
    pod = kube.wait_pod_done(namespace, "warm", timeout=180)
    log = init_log(kube, namespace, "warm")
    assert pod.status.phase == "Succeeded", log
    assert "3 already verified in the cache, 0 to fetch (0 bytes)" in log and "done: 0 bytes fetched" in log

    kube.core.create_namespaced_pod(namespace, serving_pod(kube, "typo", image, url, "dmeo/" + digest, digest, cache))

    def init_terminated():
        p = kube.core.read_namespaced_pod("typo", namespace)
        st = (p.status.init_container_statuses or [None])[0]
        return st if st and st.state.terminated else None
    st = kube.wait_for("the typo pod's init container to fail", init_terminated, timeout=180)
    assert st.state.terminated.exit_code == 4
    assert "did you mean 'demo'" in init_log(kube, namespace, "typo")
