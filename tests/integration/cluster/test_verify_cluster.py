"""playbooks/verify.yml against the test cluster (issue 17 item 3): a model served by the vllm_serving role (the
real vLLM, the stand-in downloader carrying the real tiny model) on a site whose inventory is a directory, so the
stage's record lands in the site's state file as on a real site. verify.yml then reads that record and gets a
completion from the model: a green report, exit 0, changed=0. With the model's pods gone (its Deployment scaled
to 0) the same run gives the one red line "completion from tiny" with endpoint_ready's diagnosis and a fix, exits
non-zero after writing the report, and changes nothing."""
import json
import os
import tempfile
from pathlib import Path

import serving_helpers as sh

SERVE = Path(__file__).parent / "playbooks" / "serving_role.yml"
MODELS = [dict(name="tiny", served_name="tiny-chat", gpus=0, preset="chat_small", checkpoint=dict(name="tiny-ckpt"),
               args={"enforce-eager": True, "dtype": "float32"})]
SYNCED = [dict(name="tiny-ckpt", bucket="checkpoints", prefix="models/tiny", digest=sh.DIGEST_A, bytes=4096)]


def report_lines(site):
    report = json.loads((site / ".private" / "verify" / "report.json").read_text())
    return report, [line for stage in report["stages"] for line in stage["lines"]]


def run(kube, inventory, playbook, extra):
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default",
               ANSIBLE_CONFIG=str(sh.REPO / "ansible.cfg"), KUBECONFIG=kube.kubeconfig,
               ANSIBLE_COLLECTIONS_PATH=str(sh.REPO / ".cache" / "collections"))
    p = kube.run([Path(kube.PYTHON).parent / "ansible-playbook", "-i", inventory, playbook, "-e", json.dumps(extra)],
                 check=False, env=env)
    recap = [ln for ln in p.stdout.splitlines() if ln.startswith("localhost ") and "changed=" in ln]
    return p, int(recap[-1].split("changed=")[1].split()[0]) if recap else None


def test_verify_reads_the_serving_record_green_then_red_when_the_model_is_gone(kube, namespace):
    sh.build_and_load_images(kube)
    # verify also reports the node's GPUs (labels against allocatable): one fake GPU, consistently, for this test.
    gpus_before = sh.fake_gpus(kube, 1)
    cache = sh.CacheDir()
    site = Path(tempfile.mkdtemp(prefix="verify-site-"))
    try:
        (site / "hosts.yml").write_text(json.dumps({"all": {"hosts": {"localhost": {
            "ansible_connection": "local", "ansible_python_interpreter": kube.PYTHON}}}}))
        kube.core.create_namespaced_secret(namespace, kube.k8s.V1Secret(
            metadata=kube.k8s.V1ObjectMeta(name="llmops-serving-object-storage"),
            string_data={"access-key": "reader", "secret-key": "R" * 40}))
        key_file = site / ".private" / "serving" / "api-key"
        serve_vars = dict(serving_namespace=namespace, serving_cache=str(cache.path), serving_key_file=str(key_file),
                          serving_models=MODELS, checkpoints_synced=SYNCED, helm_binary=kube.HELM,
                          engine_image=sh.ENGINE_IMAGE)
        p, _changed = run(kube, site / "hosts.yml", SERVE, serve_vars)
        assert p.returncode == 0, p.stdout[-4000:]
        state = json.loads((site / ".private" / "site-state.json").read_text())
        assert state["vllm_serving"]["namespace"] == namespace, state

        # What verify needs of the site's inventory: the cluster, the model list, the API key file.
        verify_vars = dict(llmops_kubeconfig=kube.kubeconfig, vllm_serving_models=MODELS,
                           vllm_serving_api_key_file=str(key_file))
        p, changed = run(kube, site / "hosts.yml", sh.REPO / "playbooks" / "verify.yml", verify_vars)
        assert p.returncode == 0 and changed == 0, p.stdout[-4000:]
        report, all_lines = report_lines(site)
        lines = dict((line["check"], line) for line in all_lines)
        assert lines["completion from tiny"]["status"] == "ok", lines
        assert "vLLM %s" % sh.VERSION in lines["completion from tiny"]["detail"]
        assert report["ok"] and report["counts"]["fail"] == 0, all_lines
        assert key_file.read_text().strip() not in p.stdout

        deployment = "llmops-serving-tiny"
        kube.apps.patch_namespaced_deployment_scale(deployment, namespace, {"spec": {"replicas": 0}})
        kube.wait_for("the model's pods gone", lambda: not sh.live_pods(kube, namespace, "llmops.onprem/model=tiny"),
                      timeout=120)
        p, changed = run(kube, site / "hosts.yml", sh.REPO / "playbooks" / "verify.yml", verify_vars)
        assert p.returncode != 0 and changed == 0, p.stdout[-4000:]
        report, all_lines = report_lines(site)
        red = [ln for ln in all_lines if ln["status"] == "fail"]
        assert [ln["check"] for ln in red] == ["completion from tiny"], red
        assert "no live pod in namespace %s" % namespace in red[0]["detail"], red
        assert red[0]["fix"], red
        html = (site / ".private" / "verify" / "report.html").read_text()
        assert "completion from tiny" in html and oct((site / ".private" / "verify" / "report.html").stat().st_mode & 0o777) == "0o600"
        assert kube.apps.read_namespaced_deployment(deployment, namespace).spec.replicas == 0  # verify changed nothing
    finally:
        sh.fake_gpus(kube, gpus_before)
        cache.remove(kube, namespace)
        for f in sorted(site.rglob("*"), reverse=True):
            f.rmdir() if f.is_dir() else f.unlink()
        site.rmdir()
