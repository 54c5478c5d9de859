"""Issue 19 item 3 with item 6: a --check first run of site.yml with a real bundle imports nothing, and
the summary says why each bundle stage did not run (check mode), instead of blaming a missing
llmops_bundle. The inventory has no hosts (only the implicit localhost): nothing connects anywhere."""
import json
import os
import re
import subprocess

from conftest import ROOT, snapshot
from importcase import Case


def test_check_mode_names_the_reason_the_bundle_stages_are_skipped(tmp_path):
    case = Case(tmp_path)
    case.seal()
    media = case.pack()
    site = tmp_path / "site"
    site.mkdir()
    (site / "hosts.yml").write_text("---\nall:\n  hosts: {}\n", encoding="utf-8")
    before = snapshot(str(tmp_path))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_CALLBACK_RESULT_FORMAT="json",
               ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    r = subprocess.run([os.path.join(ROOT, ".venv", "bin", "ansible-playbook"), "-i", str(site), "playbooks/site.yml", "--check",
                        "-e", "llmops_bundle=%s" % media, "-e", "bundle_import_public_key=%s" % case.pub],
                       cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    part = r.stdout.split("site_summary : Print the site summary]", 1)[1]
    lines = json.loads(re.search(r"ok: \[localhost\] => (\{.*?\n\})", part, re.S).group(1))["msg"]
    skipped = [line for line in lines if "skipped" in line]
    assert skipped[:2] == ["packages_repo: skipped: no imported bundle (check mode imports nothing)",
                           "pki: skipped: the inventory has no hosts"]
    assert "checkpoints: skipped: no imported bundle (check mode imports nothing)" in skipped
    assert not [line for line in lines if line.startswith("bundle_import: skipped")]
    assert snapshot(str(tmp_path)) == before
