"""site_image and image_ref: the mapping every values renderer and node mirror relies on."""
import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.onprem.plugins.filter.image_ref import image_ref
from ansible_collections.llmops.onprem.plugins.filter.site_image import FilterModule, site_image

REG = "registry.site.example:5000"
DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize("ref, expected", [
    ("public.ecr.aws/b2z8n5q1/vllm:v0.6.3", REG + "/public.ecr.aws/b2z8n5q1/vllm:v0.6.3"),
    ("public.ecr.aws/b2z8n5q1/llm-engine/batch-infer-vllm:0.1", REG + "/public.ecr.aws/b2z8n5q1/llm-engine/batch-infer-vllm:0.1"),
    ("nvcr.io/nvidia/gpu-operator:v24.9.0", REG + "/nvcr.io/nvidia/gpu-operator:v24.9.0"),
    ("nginx:1.25", REG + "/docker.io/library/nginx:1.25"),
    ("nginx", REG + "/docker.io/library/nginx"),
    ("bitnami/redis:7.2", REG + "/docker.io/bitnami/redis:7.2"),
    ("docker.io/library/busybox:1.36", REG + "/docker.io/library/busybox:1.36"),
    ("index.docker.io/library/busybox:1.36", REG + "/docker.io/library/busybox:1.36"),
    ("quay.io/prometheus/node-exporter@" + DIGEST, REG + "/quay.io/prometheus/node-exporter@" + DIGEST),
    ("ghcr.io/a/b:v1@" + DIGEST, REG + "/ghcr.io/a/b:v1@" + DIGEST),
    ("localhost:5000/app:2", REG + "/localhost_5000/app:2"),
    ("Upstream.Example:8443/team/app:1", REG + "/upstream.example_8443/team/app:1"),
    ("registry.k8s.io/pause:3.9", REG + "/registry.k8s.io/pause:3.9"),
])
def test_maps_into_one_namespace_per_upstream(ref, expected):
    assert site_image(ref, REG) == expected


def test_registry_without_port_and_with_a_path_prefix():
    assert site_image("nginx:1.25", "reg.example") == "reg.example/docker.io/library/nginx:1.25"
    assert site_image("nginx:1.25", "reg.example:443/mirror/") == "reg.example:443/mirror/docker.io/library/nginx:1.25"


def test_no_registry_gives_the_normalised_upstream_reference():
    assert site_image("nginx:1.25", "") == "docker.io/library/nginx:1.25"


def test_a_site_reference_is_not_mapped_twice():
    once = site_image("public.ecr.aws/b2z8n5q1/vllm:v0.6.3", REG)
    assert site_image(once, REG) == once


def test_same_path_on_two_upstreams_does_not_collide():
    assert site_image("docker.io/x/y:1", REG) != site_image("quay.io/x/y:1", REG)


@pytest.mark.parametrize("ref, words", [
    ("nginx", "has neither a tag nor a digest"),
    ("public.ecr.aws/b2z8n5q1/vllm", "has neither a tag nor a digest"),
    ("nginx:latest", "uses the tag 'latest'"),
    ("public.ecr.aws/b2z8n5q1/vllm:latest", "uses the tag 'latest'"),
])
def test_strict_refuses_unpinned_references(ref, words):
    with pytest.raises(AnsibleFilterError) as e:
        site_image(ref, REG, strict=True)
    assert str(e.value).startswith("site_image: image reference %r %s" % (ref, words))


@pytest.mark.parametrize("ref", ["nginx:1.25", "nginx@" + DIGEST, "nginx:latest@" + DIGEST])
def test_strict_accepts_pinned_references(ref):
    assert site_image(ref, REG, strict=True).startswith(REG + "/docker.io/library/nginx")


@pytest.mark.parametrize("ref, words", [
    ("https://nginx:1", "must not have a scheme"),
    ("Nginx:1", "invalid repository 'library/Nginx'"),
    ("nginx:1@sha256:abc", "invalid digest 'sha256:abc'"),
    ("nginx:1@sha256:" + "AB" * 32, "invalid sha256 digest"),
    ("nginx:-bad", "invalid tag '-bad'"),
    ("", "must be a non-empty string"),
])
def test_bad_references_are_named(ref, words):
    with pytest.raises(AnsibleFilterError) as e:
        site_image(ref, REG)
    assert words in str(e.value)


@pytest.mark.parametrize("registry", ["https://reg:5000", "reg:5000:1", "reg/Bad"])
def test_bad_site_registry_is_named(registry):
    with pytest.raises(AnsibleFilterError) as e:
        site_image("nginx:1", registry)
    assert repr(registry) in str(e.value)


def test_image_ref_parts():
    assert image_ref(REG + "/public.ecr.aws/b2z8n5q1/vllm:v0.6.3@" + DIGEST) == dict(
        registry=REG, repository="public.ecr.aws/b2z8n5q1/vllm", tag="v0.6.3", digest=DIGEST,
        name=REG + "/public.ecr.aws/b2z8n5q1/vllm",
        reference=REG + "/public.ecr.aws/b2z8n5q1/vllm:v0.6.3@" + DIGEST)
    assert image_ref("nginx") == dict(registry="docker.io", repository="library/nginx", tag=None, digest=None,
                                      name="docker.io/library/nginx", reference="docker.io/library/nginx")
    assert image_ref("[::1]:5000/a/b:1")["registry"] == "[::1]:5000"


def test_image_ref_refuses_garbage():
    with pytest.raises(AnsibleFilterError) as e:
        image_ref("a b")
    assert "image_ref: image reference 'a b' has an invalid" in str(e.value)


def test_filter_module_exports_site_image():
    assert FilterModule().filters()["site_image"] is site_image
