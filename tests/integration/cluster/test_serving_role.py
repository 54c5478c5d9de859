"""The vllm_serving role on the 1.20 test cluster: values rendered from the inventory's model
list, the chart installed with kubernetes.core.helm, endpoint_ready waited, the report exported;
a second run changes nothing; the uninstall entry point; a bad model list is refused before
anything is installed. The upgrade - the role rolling the pod to a new checkpoint digest with no
failed request, then its prune entry point removing the old version from the node cache - is
test_lab_upgrade.py's, driven by site.yml with a second bundle (one vLLM start fewer here)."""
import json
import os
import tempfile
from pathlib import Path

import pytest

import serving_helpers as sh

PLAYBOOK = Path(__file__).parent / "playbooks" / "serving_role.yml"
UNINSTALL = Path(__file__).parent / "playbooks" / "serving_role_uninstall.yml"
MODELS = [dict(name="tiny", served_name="tiny-chat", gpus=0, preset="chat_small", checkpoint=dict(name="tiny-ckpt"),
               args={"enforce-eager": True, "dtype": "float32"})]
# What the checkpoints stage exports (checkpoints_synced); the role picks a model's checkpoint by name.
SYNCED = [dict(name="tiny-ckpt", bucket="checkpoints", prefix="models/tiny", digest=sh.DIGEST_A, bytes=4096)]


@pytest.fixture(scope="module")
def images(kube):
    sh.build_and_load_images(kube)


def play(kube, ns, cache, key_file, models, synced=None):
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
               KUBECONFIG=kube.kubeconfig)
    p = kube.run([Path(kube.PYTHON).parent / "ansible-playbook", "-i", "localhost,", PLAYBOOK,
                  "-e", "ansible_python_interpreter=%s" % kube.PYTHON,
                  "-e", json.dumps(dict(serving_namespace=ns, serving_cache=str(cache), serving_key_file=str(key_file),
                                        serving_models=models, checkpoints_synced=synced or SYNCED,
                                        helm_binary=kube.HELM, engine_image=sh.ENGINE_IMAGE))],
                 check=False, env=env)
    out = json.loads(p.stdout[p.stdout.index("{"):])
    return p, out


def uninstall(kube, ns, *args):
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
               KUBECONFIG=kube.kubeconfig)
    p = kube.run([Path(kube.PYTHON).parent / "ansible-playbook", "-i", "localhost,", UNINSTALL, *args,
                  "-e", "ansible_python_interpreter=%s" % kube.PYTHON,
                  "-e", json.dumps(dict(serving_namespace=ns, helm_binary=kube.HELM))],
                 check=False, env=env)
    return p, json.loads(p.stdout[p.stdout.index("{"):])


def task(out, name):
    return [t for t in out["plays"][0]["tasks"] if t["task"]["name"] == name][0]["hosts"]["localhost"]


def test_role_serves_reports_and_is_idempotent(kube, namespace, images):
    cache = sh.CacheDir()
    key_dir = Path(tempfile.mkdtemp(prefix="serving-key-"))
    try:
        kube.core.create_namespaced_secret(namespace, kube.k8s.V1Secret(
            metadata=kube.k8s.V1ObjectMeta(name="llmops-serving-object-storage"),
            string_data={"access-key": "reader", "secret-key": "R" * 40}))
        p, out = play(kube, namespace, cache.path, key_dir / "api-key", MODELS)
        assert p.returncode == 0, p.stdout[-4000:]
        report = task(out, "Show the report")["vllm_serving_report"]
        ep = report["endpoints"][0]
        assert (ep["name"], ep["model"], ep["ready"]) == ("tiny", "tiny-chat", True)
        assert [s["step"] for s in ep["steps"]] == ["pods_scheduled", "init_done", "health", "models", "completion",
                                                    "chat", "sagemaker", "api_key"]
        assert ep["url"].startswith("http://10.") and report["namespace"] == namespace
        key = (key_dir / "api-key").read_text().strip()
        assert len(key) == 40 and oct((key_dir / "api-key").stat().st_mode & 0o777) == "0o600"
        assert key not in p.stdout
        dep = kube.apps.read_namespaced_deployment("llmops-serving-tiny", namespace)
        assert dep.spec.template.spec.containers[0].image == sh.ENGINE_IMAGE
        assert dep.spec.template.spec.init_containers[-1].image == "localhost/llmops-test/fake-model-pull:1"

        p, out = play(kube, namespace, cache.path, key_dir / "api-key", MODELS)
        assert p.returncode == 0 and out["stats"]["localhost"]["changed"] == 0, out["stats"]

        # The stage's uninstall (issue 18): check mode names the release and the key's Secret and changes nothing;
        # the run removes them; a second run changes nothing.
        release = "helm release %s/llmops-serving" % namespace
        p, out = uninstall(kube, namespace, "--check")
        assert p.returncode == 0, p.stdout[-4000:]
        assert task(out, "Show what went")["uninstall_removed"] == [
            "vllm_serving: " + release, "vllm_serving: Secret %s/llmops-serving-api-key" % namespace]
        assert kube.apps.read_namespaced_deployment("llmops-serving-tiny", namespace)
        p, out = uninstall(kube, namespace)
        assert p.returncode == 0 and out["stats"]["localhost"]["changed"] > 0, p.stdout[-4000:]
        assert kube.apps.list_namespaced_deployment(namespace).items == []
        assert kube.core.list_namespaced_secret(namespace, label_selector="owner=helm").items == []
        assert [s.metadata.name for s in kube.core.list_namespaced_secret(namespace).items
                if s.metadata.name == "llmops-serving-api-key"] == []
        p, out = uninstall(kube, namespace)
        assert p.returncode == 0 and out["stats"]["localhost"]["changed"] == 0, out["stats"]
        assert task(out, "Show what went")["uninstall_removed"] == []
    finally:
        cache.remove(kube, namespace)
        for f in key_dir.iterdir():
            f.unlink()
        key_dir.rmdir()


def test_bad_model_list_is_refused_before_installing(kube, namespace):
    bad = [dict(MODELS[0], preset="huge")]
    p, out = play(kube, namespace, "/nonexistent", "/nonexistent/key", bad)
    assert p.returncode != 0
    res = task(out, "Serve and wait")
    msg = json.dumps(out)
    # The chart (values.schema.json and its templates) is the one place models are checked; the role
    # runs helm template before it creates anything.
    assert "vllm_serving: the serving chart refuses these values" in msg, msg
    assert 'models[tiny].preset \\"huge\\" is not a preset; known: chat, chat_small, completion' in msg, msg
    assert kube.core.list_namespaced_secret(namespace, label_selector="app.kubernetes.io/part-of=llmops-onprem").items == []
    assert res is not None
