"""The image_mirror role's runtime configuration renders to valid TOML that maps each upstream registry to
its namespace in the site registry, the same mapping as the site_image filter."""
import tomllib
from pathlib import Path

import jinja2

from ansible_collections.llmops.onprem.plugins.filter.site_image import site_image

TEMPLATES = Path(__file__).resolve().parents[3] / "roles" / "image_mirror" / "templates"
REG = "10.0.0.5:5000"


def render(name, **variables):
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), trim_blocks=True, undefined=jinja2.StrictUndefined)
    return env.get_template(name).render(ansible_managed="managed", **variables)


def entry(upstream, fallback=""):
    return dict(name=upstream, url="https://%s/v2/%s" % (REG, upstream.replace(":", "_")), override=True,
                ca="/etc/containerd/certs.d/%s/ca.crt" % REG, fallback=fallback)


def test_containerd_hosts_toml_points_at_the_site_namespace_with_no_fallback():
    doc = tomllib.loads(render("hosts.toml.j2", image_mirror_entry=entry("public.ecr.aws"), image_mirror_auth="Basic eA=="))
    url = "https://%s/v2/public.ecr.aws" % REG
    assert doc["server"] == url and doc["override_path"] is True and doc["header"] == {"Authorization": "Basic eA=="}
    assert doc["host"][url] == {"capabilities": ["pull", "resolve"], "ca": "/etc/containerd/certs.d/%s/ca.crt" % REG,
                                "override_path": True, "header": {"Authorization": "Basic eA=="}}
    # containerd asks the mirror for /v2/<namespace>/<repository>/manifests/<tag>: the site_image name.
    assert site_image("public.ecr.aws/b2z8n5q1/vllm:v0.6.3", REG) == "%s/public.ecr.aws/b2z8n5q1/vllm:v0.6.3" % REG


def test_containerd_hosts_toml_with_fallback_and_without_credentials():
    doc = tomllib.loads(render("hosts.toml.j2", image_mirror_entry=entry("docker.io", "https://registry-1.docker.io"),
                               image_mirror_auth=""))
    assert doc["server"] == "https://registry-1.docker.io"
    assert "header" not in doc and "header" not in doc["host"]["https://%s/v2/docker.io" % REG]


def test_crio_registries_conf_rewrites_each_upstream():
    text = render("registries.conf.j2", image_mirror_registry=REG, image_mirror_registry_hostport=REG,
                  image_mirror_registry_prefix="", image_mirror_upstreams=["docker.io", "nvcr.io", "localhost:5000"],
                  image_mirror_upstream_fallback=False)
    doc = tomllib.loads(text)
    assert [(r["prefix"], r["location"]) for r in doc["registry"]] == [
        ("docker.io", REG + "/docker.io"), ("nvcr.io", REG + "/nvcr.io"), ("localhost:5000", REG + "/localhost_5000")]
    assert all("mirror" not in r for r in doc["registry"])
    with_fallback = tomllib.loads(render("registries.conf.j2", image_mirror_registry=REG, image_mirror_registry_hostport=REG,
                                         image_mirror_registry_prefix="", image_mirror_upstreams=["nvcr.io"],
                                         image_mirror_upstream_fallback=True))
    assert with_fallback["registry"] == [{"prefix": "nvcr.io", "location": "nvcr.io", "mirror": [{"location": REG + "/nvcr.io"}]}]
