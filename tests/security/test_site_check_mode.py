"""Issue 19 item 3 with item 6: a --check first run of site.yml with a real bundle imports nothing, and
the summary says why each bundle stage did not run (check mode), instead of blaming a missing
llmops_bundle. The inventory has no hosts (only the implicit localhost): nothing connects anywhere."""
import json
import os
import re
import subprocess

from conftest import ROOT, snapshot
from importcase import Case


def stage_table(stdout):
    """The summary's stage table: [(stage, state, where)], its columns cut where the header's names start."""
    part = stdout.split("site_summary : Print the site summary]", 1)[1]
    lines = json.loads(re.search(r"ok: \[localhost\] => (\{.*?\n\})", part, re.S).group(1))["msg"]
    cut = lines[0].index("state"), lines[0].index("where")
    return [(x[:cut[0]].strip(), x[cut[0]:cut[1]].strip(), x[cut[1]:].strip()) for x in lines[1:]]


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
    rows = stage_table(r.stdout)
    skipped = ["%s: %s" % (stage, state) for stage, state, _where in rows if state.startswith("skipped")]
    assert skipped[:2] == ["packages_repo: skipped: no imported bundle (check mode imports nothing)",
                           "pki: skipped: the inventory has no hosts"]
    assert "checkpoints: skipped: no imported bundle (check mode imports nothing)" in skipped
    assert ("bundle_import", "done", "check mode, NOT imported into %s" % (site / ".bundle")) in rows
    # What the run would change: the import it would record, from the bundle's verification (nothing recorded here).
    part = r.stdout.split("site_summary : Print what changed in this run, per stage]", 1)[1]
    assert json.loads(re.search(r"ok: \[localhost\] => (\{.*?\n\})", part, re.S).group(1))["msg"] == [
        "What changed in this run, per stage:", "bundle_import (check mode, a real run would record): first run (no earlier record)"]
    # The verification report ran last, in check mode: its lines printed, nothing written.
    assert "Report: not written (check mode)" in r.stdout
    assert snapshot(str(tmp_path)) == before


def _site_yml(site, media, case, *args):
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_CALLBACK_RESULT_FORMAT="json",
               ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    return subprocess.run([os.path.join(ROOT, ".venv", "bin", "ansible-playbook"), "-i", str(site), "playbooks/site.yml",
                           "-e", "llmops_bundle=%s" % media, "-e", "bundle_import_public_key=%s" % case.pub] + list(args),
                          cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=300)


def test_the_import_is_recorded_in_a_0600_state_file_without_a_secret_and_read_by_a_later_run(tmp_path):
    """Issue 13 item 2 with issue 20 item 2: a real run records llmops_site.bundle_import in
    <inventory>/.private/site-state.json (0600 in a 0700 directory, no key material); a second run changes nothing;
    a run of the summary alone, without llmops_bundle, reads the recorded bundle."""
    case = Case(tmp_path)
    case.seal()
    media = case.pack()
    site = tmp_path / "site"
    site.mkdir()
    (site / "hosts.yml").write_text("---\nall:\n  hosts: {}\n", encoding="utf-8")
    r = _site_yml(site, media, case)
    assert r.returncode == 0, r.stdout + r.stderr
    state = site / ".private" / "site-state.json"
    assert oct(os.stat(str(state)).st_mode & 0o777) == "0o600"
    assert oct(os.stat(str(site / ".private")).st_mode & 0o777) == "0o700"
    text = state.read_text(encoding="utf-8")
    record = json.loads(text)
    assert list(record) == ["bundle_import"]
    assert record["bundle_import"]["dir"] == str(site / ".bundle")
    assert record["bundle_import"]["src"] == str(media)
    assert re.fullmatch(r"[0-9a-f]{64}", record["bundle_import"]["manifest_sha256"])
    with open(case.priv, encoding="utf-8") as f:
        key = f.read()
    assert "PRIVATE KEY" not in text and key.strip().splitlines()[1] not in text
    # Again: the import is in place, the record the same, nothing changed.
    r = _site_yml(site, media, case)
    assert r.returncode == 0 and re.search(r"localhost\s+: ok=\d+\s+changed=0\s", r.stdout), r.stdout + r.stderr
    assert state.read_text(encoding="utf-8") == text
    # The summary alone, without llmops_bundle: the bundle comes from the record.
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_CALLBACK_RESULT_FORMAT="json",
               ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    r = subprocess.run([os.path.join(ROOT, ".venv", "bin", "ansible-playbook"), "-i", str(site), "playbooks/site.yml",
                        "--tags", "summary"], cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    part = r.stdout.split("site_summary : Print where things are]", 1)[1]
    lines = [re.sub(r"\s+", " ", line) for line in json.loads(re.search(r"ok: \[localhost\] => (\{.*?\n\})", part, re.S).group(1))["msg"]]
    assert [line for line in lines if line.startswith("Bundle %s: imported into %s by an earlier run (" % (media, site / ".bundle"))], lines
    rows = stage_table(r.stdout)
    assert ("packages_repo", "skipped: no host in the groups redis, registry, postgres, minio, packages_repo", "-") in rows
    assert ("bundle_import", "skipped: llmops_bundle is not set", "%s (from %s)" % (site / ".bundle", media)) in rows
