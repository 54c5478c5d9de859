"""The egress audit in the vllm_serving role (docs/security.md, "Egress audit"): the real serving chart
rendered by the real helm, one bad value at a time - a public image, a `latest` tag, a public URL in an
env var, an image the bundle lacks - each refused before anything is created, naming the object and the
field; a clean render passes the audit (and then fails at the first call to the cluster, which this test
does not have: that is how "nothing was created" is told apart from "the audit let it through"); a
declared exception is printed with its reason."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
HELM = os.environ.get("HELM", str(REPO / ".tools" / "bin" / "helm"))
REG = "registry.site.internal:5000"
DEPLOY = "Deployment llmops-serving-tiny"  # helm template leaves the release namespace out
ENGINE = "spec.template.spec.containers[engine]"
REF = "org.opencontainers.image.ref.name"
AUDIT_FAILED = "Refuse a chart that would reach outside the site"
# The first task after the audit that talks to the cluster (the model asks for a GPU, so the nodes' GPU labels are
# read before anything is created); the kubeconfig here leads nowhere, so reaching it means the audit let the render through.
CLUSTER_TASK = "Read the cluster's nodes (GPU feature discovery's labels)"


@pytest.fixture(autouse=True)
def _helm():
    if not os.access(HELM, os.X_OK):
        pytest.fail("helm not found at %s: run make setup (or set HELM)" % HELM)


def run(tmp_path, **extra):
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default",
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    key = tmp_path / "api-key"
    extra = dict(dict(serving_python=sys.executable, serving_helm=HELM, serving_key_file=str(key)), **extra)
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,",
                           str(HERE / "playbooks" / "vllm_serving_egress.yml"), "-e", json.dumps(extra)],
                          env=env, capture_output=True, text=True, check=False)
    out = " ".join(proc.stdout.split())
    assert proc.returncode != 0, out  # there is no cluster: every run stops, the question is where
    return out


def failed_task(out):
    """The name of the task that failed (the last TASK header before 'fatal:')."""
    head = out[:out.index("fatal:")]
    return head[head.rindex("TASK [") + 6:].split("]", 1)[0]


def bundle(*refs):
    return {"schemaVersion": 2, "manifests": [{"annotations": {REF: r}} for r in refs]}


def test_a_clean_render_passes_the_audit(tmp_path):
    out = run(tmp_path, serving_bundle_images=bundle("docker.io/vllm/vllm-openai:v0.34.0", "localhost/llmops/model-pull:0.1.0"))
    assert failed_task(out).endswith(CLUSTER_TASK), out
    assert "egress audit" not in out.split("fatal:", 1)[1]


@pytest.mark.parametrize("extra, field, text", [
    (dict(serving_values={"engine": {"image": "docker.io/vllm/vllm-openai:v0.34.0"}}), ENGINE + ".image",
     "names docker.io/vllm/vllm-openai:v0.34.0, outside the site registry " + REG),
    (dict(serving_engine_image="docker.io/vllm/vllm-openai:latest"), ENGINE + ".image",
     "names %s/docker.io/vllm/vllm-openai:latest (latest): pin a version tag or a digest" % REG),
    (dict(serving_values={"engine": {"extraEnv": [{"name": "HF_ENDPOINT", "value": "https://huggingface.co"}]}}),
     ENGINE + ".env[HF_ENDPOINT].value", "names https://huggingface.co, a host outside the site"),
    (dict(serving_bundle_images=bundle("localhost/llmops/model-pull:0.1.0")), ENGINE + ".image",
     "names %s/docker.io/vllm/vllm-openai:v0.34.0, which the bundle does not carry" % REG),
])
def test_one_bad_value_is_refused_naming_object_and_field(tmp_path, extra, field, text):
    out = run(tmp_path, **extra)
    assert failed_task(out).endswith(AUDIT_FAILED), out
    assert "the egress audit of the rendered chart found 1 problem(s), nothing was created" in out
    assert "%s %s %s" % (DEPLOY, field, text) in out
    assert not (tmp_path / "api-key").exists()  # nothing after the audit ran: not even the key was generated


def test_a_declared_exception_is_printed_and_lets_the_render_through(tmp_path):
    exc = [dict(rule="public-url", object=DEPLOY, field="*.env[HF_ENDPOINT].value",
                reason="a site-run hub mirror answers at that name through the site DNS")]
    out = run(tmp_path, serving_exceptions=exc,
              serving_values={"engine": {"extraEnv": [{"name": "HF_ENDPOINT", "value": "https://huggingface.co"}]}})
    assert failed_task(out).endswith(CLUSTER_TASK), out
    assert ("vllm_serving: egress audit exception (public-url): %s %s.env[HF_ENDPOINT].value names https://huggingface.co"
            % (DEPLOY, ENGINE)) in out
    assert "declared: a site-run hub mirror answers at that name through the site DNS" in out


def test_pull_policy_always_is_not_a_choice(tmp_path):
    out = run(tmp_path, serving_values={}, vllm_serving_pull_policy="Always")
    assert "vllm_serving_pull_policy" in out and "Always" in out
