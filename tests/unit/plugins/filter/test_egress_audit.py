"""The egress audit (llmops.onprem.egress_audit, module_utils/_egress.py): every rule, the object and
field each finding names, declared exceptions reported and not silent, the bundle rule, and bad input."""
import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.onprem.plugins.filter.egress_audit import egress_audit
from ansible_collections.llmops.onprem.plugins.module_utils._egress import public_host

REG = "registry.site.internal:5000"
ENGINE = REG + "/docker.io/vllm/vllm-openai:v0.34.0"


def deployment(image=ENGINE, policy="IfNotPresent", env=None, init=None):
    c = dict(name="engine", image=image, imagePullPolicy=policy, env=env or [])
    spec = dict(containers=[c])
    if init:
        spec["initContainers"] = [dict(name="model-pull", image=init)]
    return dict(apiVersion="apps/v1", kind="Deployment", metadata=dict(name="tiny", namespace="llmops"),
                spec=dict(template=dict(spec=spec)))


def test_a_clean_object_has_no_problem_and_lists_its_images():
    a = egress_audit([deployment(init=REG + "/localhost/llmops/model-pull:0.1.0")], REG)
    assert a["problems"] == [] and a["excepted"] == [] and not a["bundle_checked"]
    assert [(i["object"], i["field"]) for i in a["images"]] == [
        ("Deployment llmops/tiny", "spec.template.spec.containers[engine].image"),
        ("Deployment llmops/tiny", "spec.template.spec.initContainers[model-pull].image")]


@pytest.mark.parametrize("obj, rule, text", [
    (deployment(image="docker.io/vllm/vllm-openai:v0.34.0"), "outside-registry",
     "Deployment llmops/tiny spec.template.spec.containers[engine].image names docker.io/vllm/vllm-openai:v0.34.0, "
     "outside the site registry " + REG),
    (deployment(image=REG + "/docker.io/vllm/vllm-openai"), "unpinned", "vllm-openai (untagged): pin a version"),
    (deployment(image=REG + "/docker.io/vllm/vllm-openai:latest"), "unpinned", "(latest): pin a version tag or a digest"),
    (deployment(policy="Always"), "pull-always",
     "Deployment llmops/tiny spec.template.spec.containers[engine].imagePullPolicy is imagePullPolicy: Always"),
    (deployment(env=[dict(name="HF_ENDPOINT", value="https://huggingface.co")]), "public-url",
     "Deployment llmops/tiny spec.template.spec.containers[engine].env[HF_ENDPOINT].value names https://huggingface.co, "
     "a host outside the site"),
    (deployment(env=[dict(name="HELPER_IMAGE", value="ghcr.io/x/helper:1")]), "outside-registry",
     "spec.template.spec.containers[engine].env[HELPER_IMAGE].value names ghcr.io/x/helper:1, outside the site registry"),
    (dict(apiVersion="v1", kind="ConfigMap", metadata=dict(name="tpl", namespace="llmops"),
          data={"pod.yaml": "containers:\n  - image: x\n    imagePullPolicy: Always\n"}), "pull-always",
     "ConfigMap llmops/tpl data.pod.yaml is imagePullPolicy: Always"),
    (dict(apiVersion="nvidia.com/v1", kind="ClusterPolicy", metadata=dict(name="cluster-policy"),
          spec=dict(driver=dict(repository="nvcr.io/nvidia", image="driver", version="595.91.07"))), "outside-registry",
     "ClusterPolicy cluster-policy spec.driver.{repository,image,version} names nvcr.io/nvidia/driver:595.91.07, outside"),
])
def test_each_rule_names_object_and_field(obj, rule, text):
    a = egress_audit([obj], REG)
    assert [f["rule"] for f in a["findings"]] == [rule], a["findings"]
    assert text in a["problems"][0]


def test_a_password_in_a_public_url_is_masked():
    a = egress_audit([deployment(env=[dict(name="U", value="https://user:s3cret@example.com/x")])], REG)
    assert "s3cret" not in str(a) and "https://user:***@example.com/x" in a["problems"][0]


@pytest.mark.parametrize("host", ["10.1.2.3", "192.168.0.9", "172.20.0.1", "127.0.0.1", "localhost", "minio",
                                  "minio.llmops", "s3.llmops.svc", "s3.llmops.svc.cluster.local", "nas.lan",
                                  "s3.site.example", "sub.s3.site.example", "::1", "fd00::1", "100.64.1.1"])
def test_site_and_cluster_hosts_are_not_public(host):
    assert not public_host(host, namespaces=("llmops",), hosts=("s3.site.example",))


@pytest.mark.parametrize("host", ["huggingface.co", "8.8.8.8", "pypi.org", "site.example.evil.com", "2001:db8::1"])
def test_public_hosts_are_public(host):
    assert public_host(host, namespaces=("llmops",), hosts=("site.example",))


def test_comments_in_embedded_scripts_are_not_urls():
    cm = dict(kind="ConfigMap", metadata=dict(name="s"), data={"run.sh": "# see https://github.com/x/y/issues/1\necho ok\n"})
    assert egress_audit([cm], REG)["problems"] == []


def test_the_bundle_rule_matches_site_copies_by_tag_or_digest():
    bundle = {"manifests": [{"annotations": {"org.opencontainers.image.ref.name": "docker.io/vllm/vllm-openai:v0.34.0"}},
                            {"annotations": {"org.opencontainers.image.ref.name": "localhost/llmops/model-pull@sha256:" + "a" * 64}}]}
    ok = [deployment(init=REG + "/localhost/llmops/model-pull@sha256:" + "a" * 64)]
    a = egress_audit(ok, REG, bundle_images=bundle)
    assert a["bundle_checked"] and a["problems"] == []
    a = egress_audit([deployment(image=REG + "/docker.io/vllm/vllm-openai:v0.35.0")], REG, bundle_images=bundle)
    assert [f["rule"] for f in a["findings"]] == ["not-in-bundle"]
    assert "names %s/docker.io/vllm/vllm-openai:v0.35.0, which the bundle does not carry" % REG in a["problems"][0]
    # An image outside the registry is refused for that; the bundle is not blamed as well.
    a = egress_audit([deployment(image="ghcr.io/x/y:1")], REG, bundle_images=bundle)
    assert [f["rule"] for f in a["findings"]] == ["outside-registry"]
    # An empty bundle carries nothing: every image is refused.
    assert [f["rule"] for f in egress_audit([deployment()], REG, bundle_images=[])["findings"]] == ["not-in-bundle"]


def test_a_declared_exception_is_reported_with_its_reason_and_is_not_a_problem():
    pod = dict(kind="Pod", metadata=dict(name="llmops-pull-check-ab12", namespace="llmops"),
               spec=dict(containers=[dict(name="pull", image="docker.io/library/busybox:1.36", imagePullPolicy="Always")]))
    exc = [dict(rule="pull-always", object="Pod llmops/llmops-pull-check-*", field="*.imagePullPolicy", reason="on purpose"),
           dict(rule="outside-registry", object="Pod llmops/llmops-pull-check-*", reason="the mirror redirects it")]
    a = egress_audit([pod], REG, bundle_images=["docker.io/library/busybox:1.36"], exceptions=exc)
    assert a["problems"] == []
    assert sorted((e["rule"], e["reason"]) for e in a["excepted"]) == [
        ("outside-registry", "the mirror redirects it"), ("pull-always", "on purpose")]
    # The bundle rule still runs for an excepted upstream reference.
    a = egress_audit([pod], REG, bundle_images=["docker.io/library/busybox:1.35"], exceptions=exc)
    assert [f["rule"] for f in a["findings"]] == ["not-in-bundle"]
    # An exception for another object does not apply.
    other = [dict(exc[0], object="Pod llmops/other-*")]
    assert "pull-always" in [f["rule"] for f in egress_audit([pod], REG, exceptions=other)["findings"]]


def test_yaml_text_from_helm_template_is_read():
    text = "---\n# Source: x\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n" \
           "  - name: c\n    image: nginx\n---\n"
    a = egress_audit(text, REG)
    assert sorted(f["rule"] for f in a["findings"]) == ["outside-registry", "unpinned"]


@pytest.mark.parametrize("manifests, exceptions, text", [
    ("a: [", [], "the rendered manifests are not YAML"),
    (42, [], "expected rendered YAML text or a list of objects, got int"),
    ([], [dict(rule="nope", reason="x")], "exception 0 must be a dict with rule (one of outside-registry"),
    ([], [dict(rule="public-url")], "reason (why it is safe; it is printed)"),
])
def test_bad_input_is_refused_with_the_reason(manifests, exceptions, text):
    with pytest.raises(AnsibleFilterError) as e:
        egress_audit(manifests, REG, exceptions=exceptions)
    assert text in str(e.value)


def test_exception_patterns_take_brackets_literally():
    d = deployment(env=[dict(name="HF_ENDPOINT", value="https://huggingface.co")])
    exc = [dict(rule="public-url", object="Deployment llmops/*", field="*.containers[engine].env[HF_ENDPOINT].value",
                reason="a mirror")]
    assert egress_audit([d], REG, exceptions=exc)["problems"] == []
    exc = [dict(exc[0], field="*.containers[e].env[HF_ENDPOINT].value")]
    assert len(egress_audit([d], REG, exceptions=exc)["problems"]) == 1
