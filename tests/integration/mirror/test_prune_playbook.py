"""playbooks/prune.yml after an upgrade, against a real registry (Debian's docker-registry, TLS, htpasswd): the
image_mirror stage's push of bundle 1 then bundle 2 (the role's push entry point, as site.yml runs it) records what
bundle 2 no longer names (llmops_site.image_mirror.superseded); prune.yml in check mode lists it and deletes nothing,
the run deletes it and records that nothing is left, and a second run changes nothing. The registry host's garbage
collection (registry role, tasks_from: garbage_collect) runs in molecule/services; this inventory has no registry host."""
import json
import os
import re
import subprocess
import uuid
from pathlib import Path

import mirror_layouts as L
import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
BIN = REPO / ".venv" / "bin"
MiB = 1 << 20


@pytest.fixture(scope="module")
def registry(own_registry):
    return own_registry


def playbook(inv, path, *args):
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=str(REPO / ".cache" / "collections"))
    p = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inv), *args, str(path)], capture_output=True, text=True,
                       env=env, cwd=str(REPO), check=False)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-5000:]
    return out, int(re.search(r"localhost\s*:\s*ok=\d+\s+changed=(\d+)", out).group(1))


def test_prune_removes_what_the_new_bundle_no_longer_names_and_then_nothing(tmp_path, registry):
    ns = "prune-pb-" + uuid.uuid4().hex[:8]
    inv = tmp_path / "site"
    (inv / "group_vars" / "all").mkdir(parents=True)
    (inv / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": str(BIN / "python")}}}}))
    (inv / "group_vars" / "all" / "mirror.yml").write_text(yaml.safe_dump(dict(
        image_mirror_registry=registry.host, image_mirror_push_user="pusher",
        image_mirror_push_password=registry.passwords["pusher"], image_mirror_ca_file=registry.ca)))
    push = tmp_path / "push.yml"
    push.write_text("- hosts: localhost\n  gather_facts: false\n  tasks:\n"
                    "    - ansible.builtin.include_role:\n        name: llmops.onprem.image_mirror\n"
                    "        tasks_from: push\n")
    layouts = []
    for n, own in ((1, "a1"), (2, "a2")):
        layout = str(tmp_path / ("bundle%d" % n))
        base = L.layer(layout, 1 * MiB, ns + "base")
        L.image(layout, "public.ecr.aws/%s/app:v%d" % (ns, n), [base, L.layer(layout, 256 * 1024, ns + own)])
        L.image(layout, "public.ecr.aws/%s/tool:1" % ns, [base])
        layouts.append(layout)
        playbook(inv, push, "-e", "image_mirror_push_layout=%s" % layout,
                 "-e", "image_mirror_push_progress_file=%s" % (tmp_path / "progress.json"))
    state_file = inv / ".private" / "site-state.json"
    record = json.loads(state_file.read_text())["image_mirror"]
    repo = "public.ecr.aws/%s/app" % ns
    assert [r.split("@")[0] for r in record["superseded"]] == ["%s/%s:v1" % (registry.host, repo)], record
    assert sorted(r.split("@")[0].rsplit("/", 1)[1] for r in record["pushed"]) == ["app:v2", "tool:1"], record
    v1 = record["superseded"][0].split("@", 1)[1]

    out, changed = playbook(inv, REPO / "playbooks" / "prune.yml", "--check")
    assert changed > 0 and "image_mirror: would remove 1 manifest(s) from %s: %s@%s." % (registry.host, repo, v1) in out, out[-3000:]
    assert registry.manifest_digest(repo, "v1") == v1
    assert json.loads(state_file.read_text())["image_mirror"] == record

    out, changed = playbook(inv, REPO / "playbooks" / "prune.yml")
    assert changed > 0 and "image_mirror: removed 1 manifest(s) from %s: %s@%s." % (registry.host, repo, v1) in out, out[-3000:]
    assert registry.manifest_digest(repo, "v1") is None and registry.manifest_digest(repo, "v2")
    after = json.loads(state_file.read_text())["image_mirror"]
    assert after["superseded"] == [] and after["pushed"] == record["pushed"]

    out, changed = playbook(inv, REPO / "playbooks" / "prune.yml")
    assert changed == 0, out[-3000:]
    assert "image_mirror: removed 0 manifest(s)" in out
