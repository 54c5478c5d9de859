"""vllm_serving's argument spec has real options for a model entry: the example sites' models pass, a misspelled or
mistyped key is refused naming it, before anything runs (the role's own validation, the same spec)."""
import json
import os
import re
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def validate(tmp_path, models):
    with open(os.path.join(ROOT, "roles", "vllm_serving", "meta", "argument_specs.yml"), encoding="utf-8") as f:
        spec = yaml.safe_load(f)["argument_specs"]["main"]["options"]
    play = tmp_path / "validate.yml"
    play.write_text(yaml.safe_dump([{
        "hosts": "localhost", "gather_facts": False,
        "tasks": [{"ansible.builtin.validate_argument_spec": {
            "argument_spec": {"vllm_serving_models": spec["vllm_serving_models"]},
            "provided_arguments": {"vllm_serving_models": models}}}]}]), encoding="utf-8")
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    return subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,", str(play)],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=120)


def example_models(site):
    with open(os.path.join(ROOT, "inventories", site, "group_vars", "all", "cluster.yml"), encoding="utf-8") as f:
        return yaml.safe_load(f)["vllm_serving_models"]


def test_the_example_sites_models_pass(tmp_path):
    models = example_models("example-site") + example_models("local")
    models.append({"name": "direct", "preset": "completion", "load": "stream", "device": "gpu", "replicas": 2, "chat": False,
                   "gpu_product": "NVIDIA-H100-80GB-HBM3", "ingress_host": "direct.site", "startup_failure_threshold": 90,
                   "quantization": "fp8", "resources": {"limits": {"memory": "64Gi"}},
                   "checkpoint": {"bucket": "ckpt", "prefix": "direct/" + "a" * 64, "digest": "a" * 64, "bytes": 1024}})
    r = validate(tmp_path, models)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_misspelled_key_is_refused_naming_it(tmp_path):
    models = [dict(example_models("local")[0], tensor_parallel=2)]
    r = validate(tmp_path, models)
    assert r.returncode == 2, r.stdout
    out = re.sub(r"\s+", " ", r.stdout)
    assert "Validation of arguments failed: vllm_serving_models.tensor_parallel. Supported parameters include: args, chat," in out, out


def test_a_missing_or_mistyped_key_is_refused_naming_it(tmp_path):
    model = dict(example_models("local")[0])
    del model["preset"]
    r = validate(tmp_path, [model, dict(model, preset="chat", name="two", gpus="many"),
                            dict(model, preset="chat", name="three", load="lazy")])
    assert r.returncode == 2, r.stdout
    out = json.dumps(r.stdout)
    assert "preset" in out and "many" in out and "lazy" in out, r.stdout
