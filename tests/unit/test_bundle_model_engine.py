"""The bundle role takes model-engine's images from the same settings the model_engine role reads
(roles/bundle/vars/main.yml, templated here with the real Ansible templar and this collection's filters)."""
import os

import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import init_plugin_loader
from ansible.template import Templar, trust_as_template

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TAG = "e360bfb1d21d9d4e7b7fcb6b29ca752095b4d0f4"


_LOADED = []


def bundle_vars(**variables):
    if not _LOADED:
        init_plugin_loader()
        _LOADED.append(True)
    with open(os.path.join(ROOT, "roles", "bundle", "vars", "main.yml"), encoding="utf-8") as f:
        role_vars = yaml.safe_load(f)
    all_vars = dict((k, trust_as_template(v)) for k, v in role_vars.items())
    all_vars.update(variables)
    templar = Templar(loader=DataLoader(), variables=all_vars)
    return dict((k, templar.template(trust_as_template(v))) for k, v in role_vars.items())


def test_without_model_engine_the_spec_is_unchanged():
    out = bundle_vars(bundle_spec={"images": [{"ref": "docker.io/library/nginx:1.25"}]})
    assert out["bundle_model_engine_refs"] == []
    assert out["bundle_images_wanted"] == [{"ref": "docker.io/library/nginx:1.25"}]
    assert out["bundle_charts_wanted"] == []


def test_model_engine_images_come_from_the_inventorys_model_engine_settings():
    out = bundle_vars(bundle_spec={"images": [{"ref": "curlimages/curl:7.72.0", "source": "oci-archive:/x.tar"}],
                                   "model_engine": {"chart": "/src/llm-engine/charts/model-engine"}},
                      model_engine_images={"frameworks": {"vllm": "0.11.0"}})
    assert out["bundle_model_engine_refs"] == sorted([
        "public.ecr.aws/b2z8n5q1/model-engine:" + TAG, "public.ecr.aws/b2z8n5q1/vllm:0.11.0",
        "public.ecr.aws/b2z8n5q1/llm-engine/batch-infer-vllm:0.17.1-batch",
        "public.ecr.aws/docker/library/busybox:1.36.1", "docker.io/curlimages/curl:7.72.0",
        "public.ecr.aws/ubuntu/ubuntu:22.04"])
    # curl is listed already (a short docker.io name, with its own source): kept once, as the spec gives it.
    assert out["bundle_images_wanted"][0] == {"ref": "curlimages/curl:7.72.0", "source": "oci-archive:/x.tar"}
    assert [i["ref"] for i in out["bundle_images_wanted"][1:]] == [
        r for r in out["bundle_model_engine_refs"] if r != "docker.io/curlimages/curl:7.72.0"]
    assert out["bundle_charts_wanted"] == [{"name": "model-engine", "path": "/src/llm-engine/charts/model-engine"}]


def test_the_spec_may_name_its_own_settings():
    out = bundle_vars(bundle_spec={"model_engine": {"images": {"tag": "v1.2.3", "frameworks": {"vllm_batch": "", "vllm_batch_v2": ""},
                                                               "utility": {"ubuntu": "docker.io/library/ubuntu:24.04"}}}},
                      model_engine_images={"tag": "ignored"})
    assert out["bundle_model_engine_refs"] == [
        "docker.io/curlimages/curl:7.72.0", "docker.io/library/ubuntu:24.04",
        "public.ecr.aws/b2z8n5q1/model-engine:v1.2.3", "public.ecr.aws/docker/library/busybox:1.36.1"]
