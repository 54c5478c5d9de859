"""The example site inventory (inventories/example-site) renders, site.yml syntax-checks against it,
and playbooks/bundle_size.yml prints its sizing table with the figures docs/runbook.md shows.

Runs the real ansible-inventory and ansible-playbook on the controller only (the sizing play is
localhost, connection local): nothing connects to the example's hosts.
"""
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INVENTORY = os.path.join(ROOT, "inventories", "example-site")
# The house snapshot helper (tests/security/conftest.py), loaded under its own name: `conftest` here is
# tests/integration's.
_spec = importlib.util.spec_from_file_location("security_conftest", os.path.join(ROOT, "tests", "security", "conftest.py"))
_security = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_security)
snapshot = _security.snapshot


def ansible(tool, *args, inventory=INVENTORY):
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_CALLBACK_RESULT_FORMAT="json",
               ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    exe = os.path.join(os.path.dirname(sys.executable), tool)
    return subprocess.run([exe, "-i", inventory] + list(args), cwd=ROOT, env=env, capture_output=True, text=True, check=False,
                          timeout=300)


def task_msg(stdout, task):
    """The msg of one debug task, from the default callback with the JSON result format."""
    part = stdout.split("TASK [%s]" % task, 1)[1]
    body = re.search(r"ok: \[localhost\] => (\{.*?\n\})", part, re.S).group(1)
    return json.loads(body)["msg"]


def test_the_inventory_renders():
    r = ansible("ansible-inventory", "--list")
    assert r.returncode == 0, r.stderr
    inv = json.loads(r.stdout)
    assert inv["infra"]["hosts"] == ["svc-1"]
    for group in ("redis", "registry", "postgres", "minio"):
        assert inv[group]["children"] == ["infra"]
    assert inv["k8s_nodes"]["hosts"] == ["gpu-1", "gpu-2", "gpu-3"]
    hv = inv["_meta"]["hostvars"]
    assert set(hv) == {"svc-1", "gpu-1", "gpu-2", "gpu-3"}  # the controller is the implicit localhost
    for host, v in hv.items():
        assert v["ansible_become"] is True and "become" not in v, host
        assert v["image_mirror_containerd_registry_section"] == 'plugins."io.containerd.grpc.v1.cri".registry'
    assert hv["svc-1"]["llmops_service_address"] == "198.51.100.10"
    assert hv["svc-1"]["minio_backend"] == "minio"
    assert [m["checkpoint"]["name"] for m in hv["gpu-1"]["vllm_serving_models"]] == ["llama-3.1-70b-instruct", "llama-3.1-8b-instruct"]


def test_the_services_host_vars_template():
    """MinIO comes from the bundle, with the sha256 bundle_spec names (templated, without connecting)."""
    r = ansible("ansible", "localhost", "-m", "ansible.builtin.debug", "-a",
                "msg={{ [hostvars['svc-1'].minio_binary_sha256, hostvars['svc-1'].minio_binary_src] }}")
    assert r.returncode == 0, r.stdout + r.stderr
    body = json.loads(re.search(r"=> (\{.*\})", r.stdout, re.S).group(1))
    assert body["msg"] == ["0" * 64, "/binaries/minio"]


def test_site_yml_syntax_checks_against_it():
    r = ansible("ansible-playbook", "--syntax-check", "playbooks/site.yml")
    assert r.returncode == 0, r.stdout + r.stderr


# The example's declared sizes, summed by hand (GB = 10^9 bytes):
#   models 141.1 + 16.1 = 157.2; images 9.6 + 0.045 + 0.0022 = 9.6472;
#   packages 0.35 + python 0.15 + chart 0.0001 + minio 0.105 + helm 0.063 = 0.6681; bundle 167.5153.
EXPECTED = [
    "place                  needs   with 10% spare  holds",
    "connected disk      324.7 GB         357.2 GB  the model checkpoints as downloaded plus the bundle directory",
    "media               167.5 GB         184.3 GB  40 segment(s) of at most 4.3 GB",
    "controller          167.5 GB         184.3 GB  the verified import (<inventory>/.bundle)",
    "registry              9.6 GB          10.6 GB  3 image(s) in the site registry (shared layers counted per image)",
    "object store        157.2 GB         172.9 GB  2 checkpoint(s) (a new version of the weights adds a prefix)",
    "node cache          157.2 GB         172.9 GB  per GPU node: every model served with load: pull",
    "a medium of 64.0 GB holds 14 segments: spread the pack over 3 media of this size (bundle_medium_size, one run per "
    "medium) or use one medium of at least 184.3 GB",
]


def test_bundle_size_prints_the_table_and_writes_nothing():
    before = snapshot(INVENTORY)
    r = ansible("ansible-playbook", "playbooks/bundle_size.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert task_msg(r.stdout, "Print the sizing table") == EXPECTED
    assert snapshot(INVENTORY) == before


def test_the_runbook_shows_the_same_table():
    with open(os.path.join(ROOT, "docs", "runbook.md"), encoding="utf-8") as f:
        runbook = f.read()
    for line in EXPECTED:
        assert line in runbook, line


def test_a_missing_or_negative_size_stops_the_sizing_with_what_to_fix(tmp_path):
    site = tmp_path / "site"
    shutil.copytree(INVENTORY, site)
    path = site / "group_vars" / "all" / "bundle.yml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    del data["llmops_bundle_sizes"]["models"]["llama-3.1-70b-instruct"]
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    before = snapshot(str(tmp_path))
    r = ansible("ansible-playbook", "playbooks/bundle_size.yml", inventory=str(site))
    assert r.returncode == 2
    out = re.sub(r"\s+", " ", r.stdout + r.stderr)
    assert ("bundle_sizing: no size declared for llmops_bundle_sizes.models[llama-3.1-70b-instruct]. Declare each in "
            "llmops_bundle_sizes, beside bundle_spec") in out
    assert snapshot(str(tmp_path)) == before

    data["llmops_bundle_sizes"]["models"]["llama-3.1-70b-instruct"] = "141.1 GB"
    data["llmops_bundle_sizes"]["images"]["docker.io/library/busybox:1.36"] = "-2 MB"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    before = snapshot(str(tmp_path))
    r = ansible("ansible-playbook", "playbooks/bundle_size.yml", inventory=str(site))
    assert r.returncode == 2
    out = re.sub(r"\s+", " ", r.stdout + r.stderr)
    assert "bundle_sizing: llmops_bundle_sizes.images[docker.io/library/busybox:1.36] is -2 MB: a size cannot be negative" in out
    assert snapshot(str(tmp_path)) == before
