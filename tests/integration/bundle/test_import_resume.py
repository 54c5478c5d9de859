"""A bundle import killed mid-copy (SIGKILL, as a pulled plug or a lost SSH session would) resumes:
the re-run verifies and copies only what was not yet verified in place, and leaves the files that
were verified before the kill untouched. The fault comes from the test: the first import runs the
real Importer in a child Python that the test wraps so that the child SIGKILLs itself right after
the third journal line is written (production code carries no hook). The resume runs the real
module through ansible, from a read-only copy of the media where the machine allows a read-only
bind mount (root)."""
import json
import os
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ansible_collections.llmops.onprem.plugins.modules import bundle_pack, bundle_seal

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
ANSIBLE = os.path.join(REPO, ".venv", "bin", "ansible")


@pytest.fixture
def media(tmp_path):
    k = ed25519.Ed25519PrivateKey.generate()
    priv, pub = tmp_path / "k.pem", tmp_path / "k.pub.pem"
    priv.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    pub.write_bytes(k.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    root = tmp_path / "bundle"
    for i in range(8):
        p = root / "models" / "m" / ("shard-%d.safetensors" % i)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(3 * 1024 * 1024 + i))
    bundle_seal.run(dict(path=str(root), private_key=str(priv), spec={}, versions={}, images=[]), False)
    out = tmp_path / "media"
    bundle_pack.run(dict(src=str(root), dest=str(out), private_key=str(priv), segment_size="5MiB", read_back=True,
                         progress_file=None), False)
    ro = tmp_path / "ro"
    ro.mkdir()
    mounted = os.geteuid() == 0 and subprocess.call(["mount", "--bind", str(out), str(ro)]) == 0
    if mounted:
        mounted = subprocess.call(["mount", "-o", "remount,ro,bind", str(ro)]) == 0
    yield dict(src=str(ro if mounted else out), pub=str(pub), readonly=mounted)
    if mounted or os.path.ismount(str(ro)):
        subprocess.call(["umount", str(ro)])


def run_import(src, pub, dest, progress, env=None):
    e = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), NO_COLOR="1")
    e.update(env or {})
    args = "src=%s public_key=%s dest=%s progress_file=%s" % (src, pub, dest, progress)
    p = subprocess.run([ANSIBLE, "localhost", "-m", "llmops.onprem.bundle_verify", "-a", args, "-o"], check=False,
                       capture_output=True, text=True, env=e, cwd=REPO)
    return p.returncode, p.stdout + p.stderr


def parse(out):
    line = [x for x in out.splitlines() if "=>" in x][-1]
    return json.loads(line.split("=>", 1)[1])


# The fault, injected from outside: the child wraps Importer._journal so that the process kills
# itself (SIGKILL, no cleanup) as soon as the third verified file is journaled.
KILLED_IMPORT = """
import os, signal, sys
sys.path.insert(0, %(collections)r)
from ansible_collections.llmops.onprem.plugins.module_utils import _bundle as B
journal = B.Importer._journal
def journal_then_die(self, path, rec):
    journal(self, path, rec)
    self.journaled = getattr(self, "journaled", 0) + 1
    if self.journaled == 3:
        os.kill(os.getpid(), signal.SIGKILL)
B.Importer._journal = journal_then_die
B.Importer(%(src)r, %(pub)r, %(dest)r, %(progress)r).run()
"""


def test_killed_import_resumes_without_recopying(media, tmp_path):
    dest, progress = tmp_path / "dest", tmp_path / "progress.json"
    code = KILLED_IMPORT % dict(collections=os.path.join(REPO, ".cache", "collections"), src=media["src"], pub=media["pub"],
                                dest=str(dest), progress=str(progress))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == -9, p.stdout + p.stderr
    assert not (dest / ".llmops-import" / "manifest.json").exists()  # not done, so nothing counts as installed
    # The killed run left one journal line per verified file (no snapshot yet).
    assert not (dest / ".llmops-import" / "state.json").exists()
    lines = (dest / ".llmops-import" / "state.journal").read_text().splitlines()
    state = [json.loads(line)["path"] for line in lines]
    assert len(state) == 3
    before = {p: os.stat(str(dest / p)).st_ino for p in state}
    rc, out = run_import(media["src"], media["pub"], dest, progress)
    assert rc == 0, out
    res = parse(out)
    assert res["changed"] is True
    assert (res["files_skipped"], res["files_copied"]) == (3, 5)
    assert res["bytes_copied"] == sum(3 * 1024 * 1024 + i for i in range(8)) - sum(os.path.getsize(str(dest / p)) for p in state)
    assert {p: os.stat(str(dest / p)).st_ino for p in state} == before  # the verified files were not written again
    # The finished run folded the journal into the snapshot.
    assert not (dest / ".llmops-import" / "state.journal").exists()
    assert len(json.loads((dest / ".llmops-import" / "state.json").read_text())["files"]) == 8
    prog = json.loads(progress.read_text())
    assert prog["phase"] == "done" and prog["bytes_done"] == prog["bytes_total"] == res["bytes_copied"]
    rc, out = run_import(media["src"], media["pub"], dest, progress)
    assert rc == 0 and parse(out)["changed"] is False and parse(out)["files_copied"] == 0


def test_readonly_media_is_never_written(media):
    if not media["readonly"]:
        pytest.fail("this test needs root to bind-mount the media read-only (CI runs as root)")
    with pytest.raises(OSError):
        open(os.path.join(media["src"], "probe"), "w")
