"""site.yml's first play refuses a misspelled variable before any stage; a stage that does not run
says so and why in the summary; packages_repo runs on the service hosts only, never exclusive on a node.

Runs the real ansible-playbook on the controller only: the inventories here have no hosts (only the
implicit localhost) or are only listed (--list-hosts), so nothing connects anywhere.
"""
import importlib.util
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE_SITE = os.path.join(ROOT, "inventories", "example-site")
_spec = importlib.util.spec_from_file_location("security_conftest", os.path.join(ROOT, "tests", "security", "conftest.py"))
_security = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_security)
snapshot = _security.snapshot


def ansible(tool, inventory, *args):
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_CALLBACK_RESULT_FORMAT="json",
               ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    exe = os.path.join(os.path.dirname(sys.executable), tool)
    return subprocess.run([exe, "-i", inventory] + list(args), cwd=ROOT, env=env, capture_output=True, text=True, check=False,
                          timeout=300)


def site(tmp_path, group_vars):
    """An inventory without hosts (the controller is the implicit localhost) and these group_vars/all."""
    inv = tmp_path / "site"
    (inv / "group_vars" / "all").mkdir(parents=True)
    (inv / "hosts.yml").write_text("---\nall:\n  hosts: {}\n", encoding="utf-8")
    (inv / "group_vars" / "all" / "site.yml").write_text("---\n" + group_vars, encoding="utf-8")
    return str(inv)


def summary(stdout):
    part = stdout.split("TASK [Print the site summary]", 1)[1]
    body = re.search(r"ok: \[localhost\] => (\{.*?\n\})", part, re.S).group(1)
    return json.loads(body)["msg"]


SKIPPED_WITHOUT_ANYTHING = [
    "bundle_import: skipped: llmops_bundle is not set",
    "packages_repo: skipped: no imported bundle (llmops_bundle is not set)",
    "pki: skipped: the inventory has no hosts",
    "redis: skipped: no host in the group redis",
    "registry: skipped: no host in the group registry",
    "image_mirror (push to the site registry): skipped: no imported bundle (llmops_bundle is not set)",
    "image_mirror (node mirrors): skipped: no host in the group k8s_nodes",
    "image_mirror (per-node pull check): skipped: llmops_kubeconfig is not set",
    "postgres: skipped: no host in the group postgres",
    "minio: skipped: no host in the group minio",
    "checkpoints: skipped: no imported bundle (llmops_bundle is not set)",
    "cluster_secrets: skipped: llmops_kubeconfig is not set",
    "nvidia_driver, gpu_operator: skipped: llmops_gpu_layer is not true",
    "model_engine: skipped: model_engine_enabled is false",
    "vllm_serving: skipped: llmops_kubeconfig is not set",
]


def test_a_misspelled_variable_fails_the_run_before_any_stage(tmp_path):
    inv = site(tmp_path, "llmops_kubeconfig: /nonexistent/site.kubeconfig\nvllm_serving_model: []\n")
    before = snapshot(str(tmp_path))
    r = ansible("ansible-playbook", inv, "playbooks/site.yml")
    assert r.returncode == 2, r.stdout + r.stderr
    out = re.sub(r"\s+", " ", r.stdout + r.stderr)
    assert ("site: the inventory sets 1 variable(s) that no role and no play of llmops.onprem reads: "
            "vllm_serving_model (set for localhost; did you mean vllm_serving_models?). A misspelled name would silently "
            "skip or misconfigure a stage. Correct the name(s) (the roles' variables: docs/roles/; the site-level ones: "
            "playbooks/vars/site_variables.yml), or set llmops_allow_unknown_variables: true to run anyway.") in out
    assert "PLAY [Stage" not in r.stdout  # no stage started
    assert re.search(r"localhost\s+: ok=0\s+changed=0\s+unreachable=0\s+failed=1", r.stdout), r.stdout
    assert snapshot(str(tmp_path)) == before


def test_every_skipped_stage_is_in_the_summary_with_its_reason(tmp_path):
    inv = site(tmp_path, "llmops_bundle_sizes: {}\n")
    before = snapshot(str(tmp_path))
    r = ansible("ansible-playbook", inv, "playbooks/site.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert summary(r.stdout) == SKIPPED_WITHOUT_ANYTHING
    # preflight runs first, even with nothing to check: nothing to plan, no problem
    assert "Capacity plan: nothing to plan (no bundle: llmops_bundle is not set)" in r.stdout
    assert "preflight: no problem on 0 host(s)" in r.stdout
    # the inventory check, preflight's 6 (argument check, inputs, plan, record, table, report), the summary
    assert re.search(r"localhost\s+: ok=8\s+changed=0\s+unreachable=0\s+failed=0", r.stdout), r.stdout
    assert snapshot(str(tmp_path)) == before


def test_llmops_allow_unknown_variables_runs_anyway(tmp_path):
    inv = site(tmp_path, "vllm_serving_model: []\nllmops_allow_unknown_variables: true\n")
    r = ansible("ansible-playbook", inv, "playbooks/site.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert summary(r.stdout) == SKIPPED_WITHOUT_ANYTHING


def test_an_empty_variable_that_turns_a_stage_on_is_named(tmp_path):
    """With the cluster configured but nothing to serve and no pull-check image (the summary alone: the cluster
    stages would need a cluster)."""
    inv = site(tmp_path, "llmops_kubeconfig: /nonexistent/site.kubeconfig\nvllm_serving_models: []\nimage_mirror_check_image: ''\n")
    r = ansible("ansible-playbook", inv, "playbooks/site.yml", "--start-at-task", "Print the site summary")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = summary(r.stdout)
    assert "vllm_serving: skipped: vllm_serving_models is empty" in lines
    assert "image_mirror (per-node pull check): skipped: image_mirror_check_image is empty" in lines
    assert not [line for line in lines if line.startswith("cluster_secrets")]


def test_the_gpu_layer_runs_when_switched_on_and_refuses_a_bundle_without_its_images(tmp_path):
    """llmops_gpu_layer: true runs gpu_operator on the controller (no cluster: render and check only) with the real
    chart; the bundle here carries no image, so the stage stops before installing and names them."""
    chart = os.path.normpath(os.path.join(ROOT, "..", "shared", "upstream", "gpu-operator"))
    helm = os.path.join(ROOT, ".tools", "bin", "helm")
    inv = site(tmp_path, "llmops_gpu_layer: true\ngpu_operator_chart: %s\ngpu_operator_helm_binary: %s\n"
                         "gpu_operator_bundle_images: []\n" % (chart, helm))
    r = ansible("ansible-playbook", inv, "playbooks/site.yml", "-e", "ansible_python_interpreter=" + sys.executable)
    assert r.returncode == 2, r.stdout + r.stderr
    out = re.sub(r"\s+", " ", r.stdout)
    assert "TASK [llmops.onprem.gpu_operator : Stop before installing when the bundle lacks images" in out
    assert "the bundle lacks 7 of the 7 images the GPU operator v26.7.0 needs in host mode" in out
    assert "PLAY [Stage nvidia_driver" in out and "skipping: no hosts matched" in out


def test_the_gpu_layer_without_a_bundle_or_gpu_hosts_says_why_it_skipped(tmp_path):
    inv = site(tmp_path, "llmops_gpu_layer: true\n")
    r = ansible("ansible-playbook", inv, "playbooks/site.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = summary(r.stdout)
    assert "nvidia_driver: skipped: no host in the group gpu_nodes" in lines
    assert "gpu_operator: skipped: no imported bundle (llmops_bundle is not set)" in lines
    assert not [line for line in lines if line.startswith("nvidia_driver, gpu_operator")]


def plays(stdout):
    """[(pattern, title, sorted hosts)] from ansible-playbook --list-hosts."""
    out = []
    for block in re.split(r"\n(?=  play #\d+ )", stdout)[1:]:
        head = re.match(r"  play #\d+ \((.*?)\): (.*?)\tTAGS", block)
        out.append((head.group(1), head.group(2), sorted(re.findall(r"^      (\S+)$", block, re.M))))
    return out


def test_packages_repo_runs_on_the_service_hosts_only():
    r = ansible("ansible-playbook", EXAMPLE_SITE, "playbooks/site.yml", "--list-hosts")
    assert r.returncode == 0, r.stdout + r.stderr
    listed = plays(r.stdout)
    assert [(p, h) for p, t, h in listed if t.startswith("Stage packages_repo")] == [
        ("redis:registry:postgres:minio:packages_repo", ["svc-1"])]
    assert [h for p, t, h in listed if t.startswith("Stage pki")] == [["gpu-1", "gpu-2", "gpu-3", "svc-1"]]
    assert [h for p, t, h in listed if t.startswith("Stage image_mirror - every Kubernetes node")] == [["gpu-1", "gpu-2", "gpu-3"]]
    assert [h for p, t, h in listed if t.startswith("Stage nvidia_driver")] == [["gpu-1", "gpu-2", "gpu-3"]]


def test_the_exclusive_default_is_off_for_nodes_and_on_for_service_hosts(tmp_path):
    """The role's own default, templated for each host of the example site (connection local: nothing connects)."""
    play = tmp_path / "exclusive.yml"
    play.write_text(
        "- hosts: all\n  connection: local\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.include_vars: {file: %s}\n"
        "    - ansible.builtin.debug: {msg: 'EXCLUSIVE {{ inventory_hostname }} {{ packages_repo_exclusive | bool }}'}\n"
        % os.path.join(ROOT, "roles", "packages_repo", "defaults", "main.yml"), encoding="utf-8")
    r = ansible("ansible-playbook", EXAMPLE_SITE, str(play))
    assert r.returncode == 0, r.stdout + r.stderr
    got = dict(re.findall(r'"EXCLUSIVE (\S+) (True|False)"', r.stdout))
    assert got == {"svc-1": "True", "gpu-1": "False", "gpu-2": "False", "gpu-3": "False"}
