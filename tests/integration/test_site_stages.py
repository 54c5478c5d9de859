"""site.yml's first play refuses a misspelled variable before any stage; a stage that does not run
says so and why in the summary; packages_repo runs on the service hosts only, never exclusive on a node.

Runs the real ansible-playbook on the controller only: the inventories here have no hosts (only the
implicit localhost) or are only listed (--list-hosts), so nothing connects anywhere.
"""
import importlib.util
import json
import os
import re
import stat
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
    # The floor run (tests/tools/test.sh sanity_floor) points LLMOPS_ANSIBLE_BIN at .venv-floor/bin.
    exe = os.path.join(os.environ.get("LLMOPS_ANSIBLE_BIN") or os.path.dirname(sys.executable), tool)
    return subprocess.run([exe, "-i", inventory] + list(args), cwd=ROOT, env=env, capture_output=True, text=True, check=False,
                          timeout=300)


def site(tmp_path, group_vars):
    """An inventory without hosts (the controller is the implicit localhost) and these group_vars/all."""
    inv = tmp_path / "site"
    (inv / "group_vars" / "all").mkdir(parents=True)
    (inv / "hosts.yml").write_text("---\nall:\n  hosts: {}\n", encoding="utf-8")
    (inv / "group_vars" / "all" / "site.yml").write_text("---\n" + group_vars, encoding="utf-8")
    return str(inv)


def table(stdout):
    """The summary's stage table: [(stage, state, where)], its columns cut where the header's names start."""
    part = stdout.split("site_summary : Print the site summary]", 1)[1]
    lines = json.loads(re.search(r"ok: \[localhost\] => (\{.*?\n\})", part, re.S).group(1))["msg"]
    head = lines[0]
    assert re.match(r"stage +state +where$", head), head
    a, b = head.index("state"), head.index("where")
    return [(x[:a].strip(), x[a:b].strip(), x[b:].strip()) for x in lines[1:]]


def summary(stdout):
    """The rows of the stage table that did not run, as `stage: skipped: reason`."""
    return ["%s: %s" % (stage, state) for stage, state, _where in table(stdout) if state.startswith("skipped: ")]


def changes(stdout):
    """The summary's change report: what changed in this run, per stage (or that nothing did)."""
    part = stdout.split("site_summary : Print what changed in this run, per stage]", 1)[1]
    return json.loads(re.search(r"ok: \[localhost\] => (\{.*?\n\})", part, re.S).group(1))["msg"]


def details(stdout):
    """The summary's lines of where things are, in detail (after the table)."""
    part = stdout.split("site_summary : Print where things are]", 1)[1]
    return json.loads(re.search(r"ok: \[localhost\] => (\{.*?\n\})", part, re.S).group(1))["msg"]


def outside_the_report(snap):
    """A snapshot without the site verification report, which site.yml's last stage writes under the inventory (and
    without the directories' times: a new entry in a directory touches it; the entries themselves are compared)."""
    return dict((p, v[0] if stat.S_ISDIR(v[0]) else v) for p, v in snap.items()
                if not re.search(r"(^|/)\.private(/verify(/.*)?)?$", p))


SKIPPED_WITHOUT_ANYTHING = [
    "bundle_import: skipped: llmops_bundle is not set",
    "packages_repo: skipped: no imported bundle (llmops_bundle is not set)",
    "pki: skipped: the inventory has no hosts",
    "redis: skipped: no host in the group redis",
    "registry: skipped: no host in the group registry",
    "image_mirror (push): skipped: no imported bundle (llmops_bundle is not set)",
    "image_mirror (nodes): skipped: no host in the group k8s_nodes",
    "image_mirror (pull check): skipped: llmops_kubeconfig is not set",
    "nvidia_driver: skipped: llmops_gpu_layer is not true",
    "postgres: skipped: no host in the group postgres",
    "minio: skipped: no host in the group minio",
    "checkpoints: skipped: no imported bundle (llmops_bundle is not set)",
    "cluster_secrets: skipped: llmops_kubeconfig is not set",
    "gpu_operator: skipped: llmops_gpu_layer is not true",
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
    rows = table(r.stdout)
    assert rows[0][:2] == ("preflight", "done") and [x[0] for x in rows][-1] == "verify"
    assert rows[-1] == ("verify", "next: the site verification report", "report %s/.private/verify/report.html" % inv)
    assert rows[-2] == ("prune", "done", "nothing left from earlier bundles")
    # preflight runs first, even with nothing to check: nothing to plan, no problem
    assert "Capacity plan: nothing to plan (no bundle: llmops_bundle is not set)" in r.stdout
    assert "preflight: no problem on 0 host(s)" in r.stdout
    # verify runs last: every check skipped with its reason, a green report under the inventory, nothing else written
    assert "PLAY [Stage verify" in r.stdout and "SKIPPED checkpoints / object checksums: the checkpoints stage has no record" in r.stdout
    with open(os.path.join(inv, ".private", "verify", "report.json"), encoding="utf-8") as f:
        assert json.load(f)["ok"] is True
    assert re.search(r"localhost\s+: ok=\d+\s+changed=0\s+unreachable=0\s+failed=0", r.stdout), r.stdout
    assert outside_the_report(snapshot(str(tmp_path))) == outside_the_report(before)


def test_llmops_allow_unknown_variables_runs_anyway(tmp_path):
    inv = site(tmp_path, "vllm_serving_model: []\nllmops_allow_unknown_variables: true\n")
    r = ansible("ansible-playbook", inv, "playbooks/site.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert summary(r.stdout) == SKIPPED_WITHOUT_ANYTHING


def test_an_empty_variable_that_turns_a_stage_on_is_named(tmp_path):
    """With the cluster configured but nothing to serve and no pull-check image (the summary alone: the cluster
    stages would need a cluster)."""
    inv = site(tmp_path, "llmops_kubeconfig: /nonexistent/site.kubeconfig\nvllm_serving_models: []\nimage_mirror_check_image: ''\n")
    r = ansible("ansible-playbook", inv, "playbooks/site.yml", "--tags", "summary")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = summary(r.stdout)
    assert "vllm_serving: skipped: vllm_serving_models is empty" in lines
    assert "image_mirror (pull check): skipped: image_mirror_check_image is empty" in lines
    assert ("preflight", "not run (not selected by the tags)", "-") in table(r.stdout)
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
    assert "TASK [llmops.onprem.gpu_operator : Stop before installing when the cluster or the bundle lacks what the GPU operator needs]" in out
    assert "the bundle lacks 7 of the 7 images the GPU operator v26.7.0 needs in host mode" in out
    assert "PLAY [Stage nvidia_driver" in out and "skipping: no hosts matched" in out


def test_the_gpu_layer_without_a_bundle_or_gpu_hosts_says_why_it_skipped(tmp_path):
    inv = site(tmp_path, "llmops_gpu_layer: true\n")
    r = ansible("ansible-playbook", inv, "playbooks/site.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = summary(r.stdout)
    assert "nvidia_driver: skipped: no host in the group gpu_nodes" in lines
    assert "gpu_operator: skipped: no imported bundle (llmops_bundle is not set)" in lines
    assert not [line for line in lines if line.startswith("gpu_operator: skipped: llmops_gpu_layer")]


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


# Issue 13 item 2 with issue 20 item 2: every stage is one tag, its hand-offs are records in the state file.
STAGES = ["preflight", "bundle_import", "packages_repo", "pki", "redis", "registry", "image_mirror", "nvidia_driver", "postgres",
          "minio", "checkpoints", "cluster_secrets", "gpu_operator", "model_engine", "vllm_serving", "prune", "summary", "verify"]
STATE = os.path.join(".private", "site-state.json")


def test_every_play_of_site_yml_has_its_stage_tag():
    """Static: the inventory check is `always`; every other play is a stage's (`Stage <name>`: site.yml is production
    only, with no lab play) and carries exactly the tag <name>; the tags are the stages, in order, each documented in
    README and the runbook."""
    import yaml
    with open(os.path.join(ROOT, "playbooks", "site.yml"), encoding="utf-8") as f:
        plays = yaml.safe_load(f)
    assert plays[0]["name"].startswith("Check the inventory") and plays[0]["tags"] == ["always"]
    order = []
    for play in plays[1:]:
        m = re.match(r"Stage (\w+) - ", play["name"])
        assert m, "not a stage's play: %s" % play["name"]
        assert play.get("tags") == [m.group(1)], play["name"]
        assert play["tags"][0] in STAGES, play["name"]
        assert not play.get("pre_tasks"), play["name"]  # the stage's prerequisites are checked once, in the first play
        if play["tags"][0] not in order:
            order.append(play["tags"][0])
    assert order == STAGES
    for doc in ("README.md", os.path.join("docs", "runbook.md"), os.path.join("docs", "architecture.md")):
        with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
            text = f.read()
        assert [s for s in STAGES if "`%s`" % s not in text] == [], doc
        assert "--tags" in text and "--skip-tags" in text, doc


def state_site(tmp_path, records, hosts="all:\n  children:\n    redis:\n      hosts:\n        redis-1: {ansible_host: 192.0.2.1}\n"):
    """A site whose hosts are never contacted (the run stops before, or runs on the controller only)."""
    inv = site(tmp_path, "llmops_kubeconfig: /nonexistent/site.kubeconfig\n")
    (tmp_path / "site" / "hosts.yml").write_text("---\n" + hosts, encoding="utf-8")
    if records is not None:
        (tmp_path / "site" / ".private").mkdir(mode=0o700)
        (tmp_path / "site" / STATE).write_text(json.dumps(records), encoding="utf-8")
        os.chmod(str(tmp_path / "site" / STATE), 0o600)
    return inv


REDIS_RECORD = {"inventory_host": "redis-1", "hostname": "redis-1", "host": "192.0.2.1", "port": 6379, "tls": True,
                "url": "rediss://192.0.2.1:6379/0", "ca_file": "/site/.private/pki/ca.crt",
                "password_file": "/site/.private/redis/password", "k8s_secret": {"name": "llmops-redis", "key": "password"}}


def test_a_stage_run_alone_without_its_earlier_stages_stops_at_once_naming_them(tmp_path):
    inv = state_site(tmp_path, None)
    before = snapshot(str(tmp_path))
    r = ansible("ansible-playbook", inv, "playbooks/site.yml", "--tags", "cluster_secrets")
    assert r.returncode == 2, r.stdout + r.stderr
    out = re.sub(r"\s+", " ", r.stdout)
    assert ("site: stage cluster_secrets reads what stages pki, redis record, and those stages have never run on this site "
            "(no record on the controller, nor in %s). Run pki, redis first (ansible-playbook -i <inventory> "
            "playbooks/site.yml --tags pki,redis), or the whole site.yml." % os.path.join(inv, STATE)) in out
    assert "PLAY [Stage" not in r.stdout  # before any stage
    assert snapshot(str(tmp_path)) == before


def test_one_missing_record_is_named_alone_and_a_stage_run_in_the_same_run_counts(tmp_path):
    inv = state_site(tmp_path, {"pki": {"ca_file": "/site/.private/pki/ca.crt", "hosts_ca_file": "/etc/llmops/pki/ca.crt"}})
    r = ansible("ansible-playbook", inv, "playbooks/site.yml", "--tags", "cluster_secrets")
    assert r.returncode == 2, r.stdout + r.stderr
    out = re.sub(r"\s+", " ", r.stdout)
    assert "site: stage cluster_secrets reads what stage redis records, and that stage has never run on this site" in out
    assert "Run redis first (ansible-playbook -i <inventory> playbooks/site.yml --tags redis)" in out
    # Skipping the stage that needs it, or naming the earlier stage too, passes the check (the redis host is then
    # contacted: --list-tasks shows what would run without connecting).
    r = ansible("ansible-playbook", inv, "playbooks/site.yml", "--tags", "redis,cluster_secrets", "--list-tasks")
    assert r.returncode == 0, r.stdout + r.stderr
    r = ansible("ansible-playbook", inv, "playbooks/site.yml", "--skip-tags", "cluster_secrets,redis,pki,summary",
                "--tags", "cluster_secrets,summary")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PLAY [Stage cluster_secrets" in r.stdout and "TASK [Put the stack's credentials into the cluster]" not in r.stdout


def test_a_stage_run_alone_reads_what_earlier_runs_recorded(tmp_path):
    """With the pki and redis records in the state file, cluster_secrets alone gets past the check and into the role
    (which then needs the cluster); the summary alone prints the recorded Redis from the state file."""
    records = {"pki": {"ca_file": "/site/.private/pki/ca.crt", "hosts_ca_file": "/etc/llmops/pki/ca.crt"},
               "redis": REDIS_RECORD}
    inv = state_site(tmp_path, records)
    before = snapshot(str(tmp_path))
    r = ansible("ansible-playbook", inv, "playbooks/site.yml", "--tags", "cluster_secrets")
    assert r.returncode == 2, r.stdout + r.stderr
    out = re.sub(r"\s+", " ", r.stdout)
    assert "site: stage" not in out
    assert "cluster_secrets: no kubeconfig at /nonexistent/site.kubeconfig" in out
    r = ansible("ansible-playbook", inv, "playbooks/site.yml", "--tags", "summary")
    assert r.returncode == 0, r.stdout + r.stderr
    assert ("redis", "not run (not selected by the tags); recorded by an earlier run", "rediss://192.0.2.1:6379/0 on redis-1") in table(r.stdout)
    lines = details(r.stdout)
    assert ("Redis on redis-1: rediss://192.0.2.1:6379/0 (TLS; password file on the controller: /site/.private/redis/password; "
            "Kubernetes secret llmops-redis)") in [re.sub(r"\s+", " ", line) for line in lines]
    assert "Site CA (controller): /site/.private/pki/ca.crt" in lines
    assert "PLAY [Stage redis" not in r.stdout or "skipping" in r.stdout
    assert changes(r.stdout) == ["No stage's record changed in this run."]  # read, not changed
    assert snapshot(str(tmp_path)) == before  # loading the records writes nothing


def tiny_bundle(tmp_path, name, payload, priv):
    """A signed bundle of one binary (and the root tooling), packed into segments; its media directory."""
    from ansible_collections.llmops.onprem.plugins.modules import bundle_pack, bundle_seal
    root = tmp_path / name / "bundle"
    (root / "binaries").mkdir(parents=True)
    (root / "binaries" / "tool").write_bytes(payload)
    for tool in ("llmops-verify.sh", "bootstrap.sh"):
        with open(os.path.join(ROOT, "bundle", tool), "rb") as f:
            (root / tool).write_bytes(f.read())
    bundle_seal.run(dict(path=str(root), private_key=priv, spec={"name": name}, versions={}, images=[]), False)
    media = tmp_path / name / "media"
    bundle_pack.run(dict(src=str(root), dest=str(media), private_key=priv, segment_size="256KiB", read_back=True,
                         progress_file=None), False)
    return str(media)


def test_the_summary_says_what_changed_per_stage_in_an_upgrade(tmp_path):
    """Issue 18 item 1: site.yml with a newer bundle is the upgrade, and the summary says what each stage's record
    changed. Bundle 1 imported (a first run of bundle_import), bundle 2 in check mode (nothing imported, nothing
    written: the lines say what the real run then prints), bundle 2 (its manifest, size, time and medium replace
    bundle 1's), bundle 2 again (nothing changed, changed=0)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    key = ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "keys").mkdir()
    priv, pub = tmp_path / "keys" / "site.pem", tmp_path / "keys" / "site.pub.pem"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    one = tiny_bundle(tmp_path, "one", os.urandom(3000), str(priv))
    two = tiny_bundle(tmp_path, "two", os.urandom(5000), str(priv))
    inv = site(tmp_path, "bundle_import_public_key: %s\n" % pub)
    state = os.path.join(inv, STATE)

    def run(bundle, *extra):
        r = ansible("ansible-playbook", inv, "playbooks/site.yml", "--tags", "bundle_import,summary", "-e", "llmops_bundle=" + bundle,
                    *extra)
        assert r.returncode == 0, r.stdout + r.stderr
        return r

    r = run(one)
    assert changes(r.stdout) == ["What changed in this run, per stage:", "bundle_import: first run (no earlier record)"]
    assert [row[1] for row in table(r.stdout) if row[0] == "bundle_import"] == ["changed"]
    with open(state, encoding="utf-8") as f:
        first = json.load(f)["bundle_import"]
    before = snapshot(inv)
    checked = changes(run(two, "--check").stdout)
    assert snapshot(inv) == before  # check mode imports and writes nothing
    r = run(two)
    with open(state, encoding="utf-8") as f:
        second = json.load(f)["bundle_import"]
    assert first["manifest_sha256"] != second["manifest_sha256"] and first["bytes_total"] != second["bytes_total"]
    lines = changes(r.stdout)
    assert lines[0] == "What changed in this run, per stage:" and len(lines) == 2, lines
    assert lines[1].startswith("bundle_import: "), lines
    parts = lines[1][len("bundle_import: "):].split("; ")
    expected = ["bytes_total %s -> %s" % (first["bytes_total"], second["bytes_total"]),
                "manifest_sha256 %s\u2026 -> %s\u2026" % (first["manifest_sha256"][:12], second["manifest_sha256"][:12]),
                # a long path keeps both ends: where it is and which medium
                "src %s\u2026%s -> %s\u2026%s" % (one[:24], one[-35:], two[:24], two[-35:])]
    if first["created"] != second["created"]:
        expected.insert(1, "created %s -> %s" % (first["created"], second["created"]))
    assert parts == expected, lines
    assert [row[1] for row in table(r.stdout) if row[0] == "bundle_import"] == ["changed"]
    # Check mode said the same, from the bundle's verification (it records nothing itself).
    assert checked == [lines[0], "bundle_import (check mode, a real run would record): " + "; ".join(parts)], checked
    r = run(two)
    assert changes(r.stdout) == ["No stage's record changed in this run."]
    assert [row[1] for row in table(r.stdout) if row[0] == "bundle_import"] == ["done"]
    assert re.search(r"localhost\s+: ok=\d+\s+changed=0\s", r.stdout), r.stdout


def test_a_state_file_that_is_not_a_mapping_is_refused(tmp_path):
    inv = state_site(tmp_path, ["pki"])
    r = ansible("ansible-playbook", inv, "playbooks/site.yml", "--tags", "summary")
    assert r.returncode == 2, r.stdout + r.stderr
    assert ("site_state: %s does not hold a JSON object (stage name to record); move it away and run site.yml again."
            % os.path.join(inv, STATE)) in re.sub(r"\s+", " ", r.stdout)
    assert "PLAY [Stage" not in r.stdout


def record_play(tmp_path, record):
    play = tmp_path / "record.yml"
    play.write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.include_role: {name: llmops.onprem.site_state, tasks_from: record}\n"
        "      vars: {site_state_stage: redis, site_state_record: %s}\n"
        "    - ansible.builtin.debug: {msg: 'SITE {{ llmops_site | to_json }}'}\n" % json.dumps(record), encoding="utf-8")
    return str(play)


def test_a_record_is_a_fact_of_the_controller_and_a_0600_state_file(tmp_path):
    inv = site(tmp_path, "llmops_bundle_sizes: {}\n")
    play = record_play(tmp_path, REDIS_RECORD)
    r = ansible("ansible-playbook", inv, play)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"localhost\s+: ok=\d+\s+changed=2\s", r.stdout), r.stdout  # the .private dir and the file
    path = os.path.join(inv, STATE)
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert oct(os.stat(os.path.dirname(path)).st_mode & 0o777) == "0o700"
    with open(path, encoding="utf-8") as f:
        assert json.load(f) == {"redis": REDIS_RECORD}
    assert '"SITE {\\"redis\\": {' in r.stdout
    # Again: nothing changes.
    r = ansible("ansible-playbook", inv, play)
    assert r.returncode == 0 and re.search(r"localhost\s+: ok=\d+\s+changed=0\s", r.stdout), r.stdout + r.stderr


def test_a_record_that_holds_a_secret_is_refused_and_nothing_is_written(tmp_path):
    inv = site(tmp_path, "llmops_bundle_sizes: {}\n")
    before = snapshot(str(tmp_path / "site"))
    play = record_play(tmp_path, dict(REDIS_RECORD, password="hunter2-not-printed", admin={"secret_key": "x-not-printed"}))
    r = ansible("ansible-playbook", inv, play)
    assert r.returncode == 2, r.stdout + r.stderr
    out = re.sub(r"\s+", " ", r.stdout)
    assert ("site_state: a record needs site_state_stage (a stage name, 'redis') and site_state_record (a mapping) without "
            "secrets; a record names the file a secret is in, never the secret (keys found: password, secret_key).") in out
    assert "not-printed" not in r.stdout + r.stderr
    assert snapshot(str(tmp_path / "site")) == before


def test_a_record_in_check_mode_sets_the_fact_and_writes_nothing(tmp_path):
    inv = site(tmp_path, "llmops_bundle_sizes: {}\n")
    before = snapshot(str(tmp_path / "site"))
    r = ansible("ansible-playbook", inv, record_play(tmp_path, REDIS_RECORD), "--check")
    assert r.returncode == 0, r.stdout + r.stderr
    assert '"SITE {\\"redis\\": {' in r.stdout
    assert snapshot(str(tmp_path / "site")) == before


def test_an_inventory_that_is_not_a_path_keeps_the_records_as_facts_only(tmp_path):
    """`-i localhost,` (the role tests): no inventory directory, so no state file is written anywhere."""
    play = record_play(tmp_path, REDIS_RECORD)
    before = snapshot(str(tmp_path))
    r = ansible("ansible-playbook", "localhost,", play, "-c", "local")
    assert r.returncode == 0, r.stdout + r.stderr
    assert '"SITE {\\"redis\\": {' in r.stdout
    assert re.search(r"localhost\s+: ok=\d+\s+changed=0\s", r.stdout), r.stdout
    assert not os.path.exists(os.path.join(os.sep, ".private"))
    assert snapshot(str(tmp_path)) == before


def test_a_role_run_on_its_own_adds_its_record_to_the_state_file(tmp_path):
    """A playbook of its own (no site.yml first play to load the file) joins the records already there: two such
    runs, one per stage, leave both records, and running either again changes nothing (the molecule scenarios)."""
    inv = site(tmp_path, "llmops_bundle_sizes: {}\n")
    r = ansible("ansible-playbook", inv, record_play(tmp_path, REDIS_RECORD))
    assert r.returncode == 0, r.stdout + r.stderr
    pki = tmp_path / "pki.yml"
    pki.write_text(open(record_play(tmp_path, REDIS_RECORD), encoding="utf-8").read()
                   .replace("site_state_stage: redis", "site_state_stage: pki")
                   .replace("site_state_record: %s" % json.dumps(REDIS_RECORD), "site_state_record: {ca_file: /site/ca.crt}"),
                   encoding="utf-8")
    r = ansible("ansible-playbook", inv, str(pki))
    assert r.returncode == 0, r.stdout + r.stderr
    with open(os.path.join(inv, STATE), encoding="utf-8") as f:
        assert json.load(f) == {"redis": REDIS_RECORD, "pki": {"ca_file": "/site/ca.crt"}}
    for play in (record_play(tmp_path, REDIS_RECORD), str(pki)):
        r = ansible("ansible-playbook", inv, play)
        assert r.returncode == 0 and re.search(r"localhost\s+: ok=\d+\s+changed=0\s", r.stdout), r.stdout + r.stderr
