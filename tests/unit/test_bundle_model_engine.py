"""The bundle role takes model-engine's images from the same settings the model_engine role reads:
roles/bundle/vars/main.yml, templated by the real Ansible (an ad-hoc `debug` on localhost, nothing
else runs) with this collection's filters."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TAG = "e360bfb1d21d9d4e7b7fcb6b29ca752095b4d0f4"
NAMES = ("bundle_model_engine_refs", "bundle_images_wanted", "bundle_charts_wanted")


def bundle_vars(tmp_path, **variables):
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps(dict(variables, ansible_python_interpreter=sys.executable)))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".cache", "collections"),
               ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json")
    msg = "{{ {%s} | to_json }}" % ", ".join("'%s': %s" % (n, n) for n in NAMES)
    p = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible"), "localhost", "-c", "local",
                        "-e", "@" + os.path.join(ROOT, "roles", "bundle", "vars", "main.yml"), "-e", "@" + str(extra),
                        "-m", "ansible.builtin.debug", "-a", json.dumps({"msg": msg})],
                       env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    out = json.loads(p.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]["msg"]
    return json.loads(out) if isinstance(out, str) else out


def test_without_model_engine_the_spec_is_unchanged(tmp_path):
    out = bundle_vars(tmp_path, bundle_spec={"images": [{"ref": "docker.io/library/nginx:1.25"}]})
    assert out == {"bundle_model_engine_refs": [], "bundle_images_wanted": [{"ref": "docker.io/library/nginx:1.25"}],
                   "bundle_charts_wanted": []}


def test_model_engine_images_come_from_the_inventorys_model_engine_settings(tmp_path):
    out = bundle_vars(tmp_path, bundle_spec={"images": [{"ref": "curlimages/curl:7.72.0", "source": "oci-archive:/x.tar"}],
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


def test_the_spec_may_name_its_own_settings(tmp_path):
    out = bundle_vars(tmp_path, bundle_spec={"model_engine": {"images": {
        "tag": "v1.2.3", "frameworks": {"vllm_batch": "", "vllm_batch_v2": ""},
        "utility": {"ubuntu": "docker.io/library/ubuntu:24.04"}}}}, model_engine_images={"tag": "ignored"})
    assert out["bundle_model_engine_refs"] == [
        "docker.io/curlimages/curl:7.72.0", "docker.io/library/ubuntu:24.04",
        "public.ecr.aws/b2z8n5q1/model-engine:v1.2.3", "public.ecr.aws/docker/library/busybox:1.36.1"]
