"""Issue 14 item 1 and issue 19 item 1: nothing from the medium runs or is installed before the
manifest's signature is checked with the site's key, by tools a stock Debian 12 has.

Each test builds a signed bundle from scratch with the collection's own seal and pack (small:
a fake wheel, a fake collection tarball, a model file, 64 KiB segments so files split across
segments), tampers with it, and runs the real procedure of docs/airgap.md under dash: the
openssl/sha256sum commands, `sh llmops-verify.sh`, `sh bootstrap.sh`. A refusal must name the
cause and leave nothing behind: no extraction directory, no venv, no temporary files.
"""
import base64
import glob
import os
import re
import shutil
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from conftest import ROOT, snapshot
from ansible_collections.llmops.onprem.plugins.modules import bundle_pack, bundle_seal

SH = shutil.which("dash") or "/bin/sh"
WHEEL = "python/probe-1.0-py3-none-any.whl"
COLLECTION = "collections/llmops-onprem-1.0.0.tar.gz"
SITE_KEY_DOC = "/etc/llmops/bundle-signing.pub.pem"


def keypair(d, name):
    k = ed25519.Ed25519PrivateKey.generate()
    priv, pub = os.path.join(d, name + ".pem"), os.path.join(d, name + ".pub.pem")
    with open(priv, "wb") as f:
        f.write(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with open(pub, "wb") as f:
        f.write(k.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


def make_wheel(path, payload=b"probe"):
    """A small, real wheel (pip can install it), so --require-hashes is exercised for real."""
    import zipfile
    import hashlib
    files = {"probe/__init__.py": b"VALUE = %r\n" % payload,
             "probe-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: probe\nVersion: 1.0\n",
             "probe-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = []
    for n, b in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(b).digest()).rstrip(b"=").decode()
        record.append("%s,sha256=%s,%d" % (n, digest, len(b)))
    record.append("probe-1.0.dist-info/RECORD,,")
    with zipfile.ZipFile(path, "w") as z:
        for n, b in files.items():
            z.writestr(n, b)
        z.writestr("probe-1.0.dist-info/RECORD", "\n".join(record) + "\n")


def build(tmp, priv, name="bundle", collection=None, stale_lock=False, extra_lock=None):
    """Build, seal and pack a bundle as roles/bundle does; returns (bundle dir, media dir)."""
    b = os.path.join(tmp, name)
    for d in ("python", "collections", "models/m"):
        os.makedirs(os.path.join(b, d))
    shutil.copy(os.path.join(ROOT, "bundle", "bootstrap.sh"), os.path.join(b, "bootstrap.sh"))
    shutil.copy(os.path.join(ROOT, "bundle", "llmops-verify.sh"), os.path.join(b, "llmops-verify.sh"))
    make_wheel(os.path.join(b, WHEEL))
    with open(os.path.join(tmp, name + ".src.lock"), "w") as f:
        f.write("probe==1.0\n")
    subprocess.run([sys.executable, os.path.join(ROOT, "roles", "bundle_python", "files", "hash_lock.py"),
                    "--python-versions", "3.12 3.13", os.path.join(tmp, name + ".src.lock"), os.path.join(b, "python", "requirements.lock"),
                    os.path.join(b, WHEEL)], check=True, capture_output=True)
    if extra_lock is not None:  # a second lock (python/requirements-3.11.lock: another Python's closure)
        with open(os.path.join(b, "python", "requirements-3.11.lock"), "w") as f:
            f.write(extra_lock)
    if stale_lock:  # the lock pins another wheel than the one shipped (a broken or hostile build)
        make_wheel(os.path.join(b, WHEEL), payload=b"other")
    with open(os.path.join(b, COLLECTION), "wb") as f:
        f.write(collection if collection is not None else os.urandom(150000))
    with open(os.path.join(b, "models", "m", "x.bin"), "wb") as f:
        f.write(os.urandom(200000))
    bundle_seal.run(dict(path=b, private_key=priv, spec={"models": [{"name": "m", "path": "/data/m"}]}, versions={}, images=[]), False)
    media = os.path.join(tmp, name + "-media")
    bundle_pack.run(dict(src=b, dest=media, private_key=priv, segment_size="64KiB", read_back=True, progress_file=None), False)
    shutil.copy(os.path.join(b, "llmops-verify.sh"), os.path.join(media, "llmops-verify.sh"))  # as roles/bundle does
    return b, media


def flip_in_media(media, path):
    """Change one byte of `path`'s data inside the segment that holds it (or its first part)."""
    import tarfile
    for seg in sorted(os.listdir(media)):
        if not seg.endswith(".tar"):
            continue
        with tarfile.open(os.path.join(media, seg)) as t:
            for ti in t.getmembers():
                if ti.name == path or ti.name.startswith(path + ".part-0001-of-"):
                    at = ti.offset_data + ti.size // 2
                    break
            else:
                continue
        with open(os.path.join(media, seg), "r+b") as f:
            f.seek(at)
            b = f.read(1)
            f.seek(at)
            f.write(bytes([b[0] ^ 0xFF]))
        return seg
    raise AssertionError("%s not found in %s" % (path, media))


@pytest.fixture
def site(tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    priv, pub = keypair(str(keys), "signing-key")
    bad_priv, bad_pub = keypair(str(keys), "attacker")
    work = tmp_path / "work"
    work.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "tmp").mkdir()
    env = dict(PATH="/usr/local/bin:/usr/bin:/bin", HOME=str(home), TMPDIR=str(tmp_path / "tmp"), LC_ALL="C")
    return dict(tmp=tmp_path, priv=priv, pub=pub, bad_priv=bad_priv, work=str(work), home=str(home), env=env)


def verify(site, bundle, extract=None, key=None):
    argv = [SH, os.path.join(bundle, "llmops-verify.sh"), "--key", key or site["pub"], "--bundle", bundle]
    if extract:
        argv += ["--extract", extract]
    return subprocess.run(argv, capture_output=True, text=True, env=site["env"], check=False)


def bootstrap(site, where, *args):
    return subprocess.run([SH, os.path.join(where, "bootstrap.sh")] + list(args), capture_output=True, text=True,
                          env=site["env"], check=False)


def untouched(site, before):
    """Nothing changed under the test's whole tree: every path with the same type, mode, size and
    mtime, none added or removed. Only the mtimes of TMPDIR and of the extraction's parent
    (home) may move: the scripts make their private directories there with mktemp and remove
    them (the snapshot proves they are gone)."""
    def strip(snap):
        return dict((k, v if k not in ("tmp", "home") else v[:2]) for k, v in snap.items())
    assert os.listdir(site["env"]["TMPDIR"]) == []
    return strip(snapshot(str(site["tmp"]))) == strip(before)


def refused_and_untouched(site, before, r, text):
    assert r.returncode == 1, r.stdout + r.stderr
    assert text in r.stderr, r.stderr
    assert "nothing was extracted or installed" in r.stderr or "Nothing was installed" in r.stderr, r.stderr
    assert untouched(site, before), "a refused run left files behind"


# ---- the happy path ----------------------------------------------------------------------------

@pytest.mark.parametrize("form", ["media", "directory"])
def test_verified_extraction_holds_exactly_the_signed_bootstrap(site, form):
    b, media = build(site["work"], site["priv"])
    src = media if form == "media" else b
    dest = os.path.join(site["home"], "llmops-bootstrap")
    r = verify(site, src, extract=dest)
    assert r.returncode == 0, r.stderr
    assert "llmops-verify: signature of manifest.json verified with %s" % site["pub"] in r.stderr
    assert "llmops-verify: verified and extracted the controller bootstrap (4 files) to %s" % dest in r.stderr
    got = sorted(os.path.relpath(os.path.join(d, f), dest) for d, dummy, fs in os.walk(dest) for f in fs)
    assert got == sorted(["SHA256SUMS", "VERIFIED", "bootstrap.sh", "python/requirements.lock", WHEEL, COLLECTION])
    for rel in ("bootstrap.sh", "python/requirements.lock", WHEEL, COLLECTION):
        with open(os.path.join(dest, rel), "rb") as x, open(os.path.join(b, rel), "rb") as y:
            assert x.read() == y.read(), rel
    with open(os.path.join(dest, "python", "requirements.lock")) as f:
        assert re.search(r"(?m)^probe==1\.0 \\\n    --hash=sha256:[0-9a-f]{64}$", f.read())
    assert os.listdir(site["env"]["TMPDIR"]) == []
    # bootstrap.sh from the extraction passes its own checks and stops at the missing Python,
    # naming what the site needs, before it creates anything.
    r = bootstrap(site, dest, "--python", "/nonexistent/python3.12", "--prefix", os.path.join(site["home"], "p"))
    assert r.returncode == 1
    # (The probe lock pins no ansible-core, so the message names no ansible-core release.)
    assert ("bootstrap: /nonexistent/python3.12 not found. This bundle carries wheels for Python 3.12, 3.13: install one from "
            "the site's OS media (Debian 12: python3-venv;") in r.stderr
    assert not os.path.exists(os.path.join(site["home"], "p"))


def test_documented_first_step_runs_as_written(site):
    """The commands of docs/airgap.md's site procedure, step 1 and 2, run verbatim (only the
    medium and key paths replaced): they verify a good bundle and refuse a re-signed one."""
    with open(os.path.join(ROOT, "docs", "airgap.md")) as f:
        doc = f.read()
    block = re.search(r"```sh\n(# 1\. On the controller.*?)\n# 3\. ", doc, re.S).group(1)
    for readme in ("README.md", os.path.join("docs", "install.md")):
        with open(os.path.join(ROOT, readme)) as f:
            text = f.read()
        for line in block.splitlines():
            if not line.startswith("#"):
                assert line in text, "%s lacks the documented step %r" % (readme, line)
    b, media = build(site["work"], site["priv"])
    script = "set -e\n" + block.replace("/media/usb", media).replace(SITE_KEY_DOC, site["pub"])
    r = subprocess.run([SH, "-c", script], capture_output=True, text=True, env=site["env"], check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Signature Verified Successfully" in r.stdout
    assert "llmops-verify.sh: OK" in r.stdout
    assert os.path.isfile(os.path.join(site["home"], "llmops-bootstrap", "bootstrap.sh"))

    # A verifier edited on the medium is caught by step 1, before it runs.
    shutil.rmtree(site["home"])
    os.makedirs(site["home"])
    with open(os.path.join(media, "llmops-verify.sh"), "a") as f:
        f.write("\necho pwned > \"$HOME/pwned\"\n")
    r = subprocess.run([SH, "-c", script], capture_output=True, text=True, env=site["env"], check=False)
    assert r.returncode != 0
    assert "llmops-verify.sh: FAILED" in r.stdout, r.stdout + r.stderr
    assert not os.path.exists(os.path.join(site["home"], "pwned"))
    assert not os.path.exists(os.path.join(site["home"], "llmops-bootstrap"))

    # A bundle re-signed with the attacker's key fails at openssl.
    shutil.rmtree(site["home"])
    os.makedirs(site["home"])
    b2, media2 = build(site["work"], site["bad_priv"], name="evil")
    r = subprocess.run([SH, "-c", script.replace(media, media2)], capture_output=True, text=True, env=site["env"], check=False)
    assert r.returncode != 0
    assert "Signature Verification Failure" in r.stdout + r.stderr
    assert not os.path.exists(os.path.join(site["home"], "llmops-bootstrap"))


# ---- refusals before anything is extracted or installed ---------------------------------------

@pytest.mark.parametrize("form", ["media", "directory"])
def test_collection_signed_by_an_attacker_is_refused(site, form):
    """(b) The attacker's collection (whose verify_signature() would return early) in a bundle
    validly signed with the attacker's key, the verifier on the medium included."""
    b, media = build(site["work"], site["bad_priv"], collection=b"def verify_signature(*a):\n    return\n" * 4000)
    src = media if form == "media" else b
    dest = os.path.join(site["home"], "llmops-bootstrap")
    before = snapshot(str(site["tmp"]))
    r = verify(site, src, extract=dest)
    refused_and_untouched(site, before, r, "llmops-verify: the signature of %s/manifest.json does not verify with the public key %s: "
                          "the manifest was changed after signing, or the bundle was signed with another key. Refusing the bundle; "
                          "nothing was extracted or installed." % (src, site["pub"]))
    assert not os.path.exists(dest)


@pytest.mark.parametrize("victim", [COLLECTION, WHEEL, "python/requirements.lock", "bootstrap.sh"])
def test_changed_bytes_on_the_medium_are_refused(site, victim):
    """(a) the collection tarball, (c) a wheel, the lock, bootstrap.sh: one flipped byte inside
    the segments, the manifest and its signature untouched."""
    b, media = build(site["work"], site["priv"])
    flip_in_media(media, victim)
    dest = os.path.join(site["home"], "llmops-bootstrap")
    before = snapshot(str(site["tmp"]))
    r = verify(site, media, extract=dest)
    refused_and_untouched(site, before, r, "llmops-verify: sha256 mismatch for %s: the signed manifest says " % victim)
    assert "The medium is damaged or was tampered with: refusing the bundle, nothing was extracted or installed" in r.stderr
    assert not os.path.exists(dest)


def test_changed_collection_in_a_bundle_directory_is_refused(site):
    b, media = build(site["work"], site["priv"])
    with open(os.path.join(b, COLLECTION), "r+b") as f:
        f.seek(1000)
        f.write(b"evil")
    dest = os.path.join(site["home"], "llmops-bootstrap")
    before = snapshot(str(site["tmp"]))
    r = verify(site, b, extract=dest)
    refused_and_untouched(site, before, r, "llmops-verify: sha256 mismatch for %s: the signed manifest says " % COLLECTION)


def test_a_larger_file_is_never_read_past_its_signed_size(site):
    b, media = build(site["work"], site["priv"])
    with open(os.path.join(b, COLLECTION), "ab") as f:
        f.truncate(150000 + 512 * 1024 * 1024)  # sparse: 512 MiB more than signed
    dest = os.path.join(site["home"], "llmops-bootstrap")
    before = snapshot(str(site["tmp"]))
    r = verify(site, b, extract=dest)
    refused_and_untouched(site, before, r, "llmops-verify: sha256 mismatch for %s" % COLLECTION)
    assert "(more than 150000 bytes)" in r.stderr


def test_a_missing_segment_is_refused(site):
    b, media = build(site["work"], site["priv"])
    seg = flip_in_media(media, COLLECTION)
    os.unlink(os.path.join(media, seg))
    before = snapshot(str(site["tmp"]))
    r = verify(site, media, extract=os.path.join(site["home"], "x"))
    assert r.returncode == 1
    assert re.search(r"llmops-verify: (missing file %s: the signed manifest lists it|sha256 mismatch for %s)"
                     % (re.escape(COLLECTION), re.escape(COLLECTION)), r.stderr), r.stderr
    assert untouched(site, before)


def test_a_key_inside_the_bundle_is_refused(site):
    b, media = build(site["work"], site["priv"])
    shutil.copy(site["pub"], os.path.join(b, "key.pub.pem"))
    before = snapshot(str(site["tmp"]))
    r = verify(site, b, extract=os.path.join(site["home"], "x"), key=os.path.join(b, "key.pub.pem"))
    assert r.returncode == 1
    assert ("llmops-verify: the public key %s/key.pub.pem lies inside the bundle %s: a key that travels with the bundle proves "
            "nothing. Use the site's copy, carried out of band" % (b, b)) in r.stderr
    assert untouched(site, before)


def test_bootstrap_from_the_medium_is_refused_before_anything(site):
    """The old habit, `sh <bundle>/bootstrap.sh`, no longer installs an unverified bundle."""
    b, media = build(site["work"], site["bad_priv"])
    before = snapshot(str(site["tmp"]))
    r = bootstrap(site, b, "--prefix", os.path.join(site["home"], "p"))
    refused_and_untouched(site, before, r, "bootstrap: %s was not extracted by llmops-verify.sh (no SHA256SUMS/VERIFIED): nothing from "
                          "a bundle runs before its signature is checked." % os.path.realpath(b))


def test_bootstrap_refuses_a_wheel_changed_after_verification(site):
    b, media = build(site["work"], site["priv"])
    dest = os.path.join(site["home"], "llmops-bootstrap")
    assert verify(site, media, extract=dest).returncode == 0
    make_wheel(os.path.join(dest, WHEEL), payload=b"evil")
    before = snapshot(str(site["tmp"]))
    r = bootstrap(site, dest, "--prefix", os.path.join(site["home"], "p"))
    refused_and_untouched(site, before, r, "bootstrap: files in %s differ from the sha256 that llmops-verify.sh checked against the "
                          "signed manifest" % dest)
    assert "%s: FAILED" % WHEEL in r.stderr
    assert not os.path.exists(os.path.join(site["home"], "p"))


def test_bootstrap_refuses_an_unlisted_wheel(site):
    b, media = build(site["work"], site["priv"])
    dest = os.path.join(site["home"], "llmops-bootstrap")
    assert verify(site, media, extract=dest).returncode == 0
    make_wheel(os.path.join(dest, "python", "evil-1.0-py3-none-any.whl"))
    r = bootstrap(site, dest, "--prefix", os.path.join(site["home"], "p"))
    assert r.returncode == 1
    assert "bootstrap: %s/python/evil-1.0-py3-none-any.whl is not in SHA256SUMS (not from the signed bundle). Nothing was installed." % dest in r.stderr
    assert not os.path.exists(os.path.join(site["home"], "p"))


def _python312():
    pyenv = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3")))
    for c in [os.environ.get("PYTHON312", ""), shutil.which("python3.12") or ""] + pyenv:
        if c and subprocess.run([c, "-c", "import sys, venv, ensurepip; assert sys.version_info[:2] == (3, 12)"],
                                capture_output=True, check=False).returncode == 0:
            return c
    return None


@pytest.mark.skipif(_python312() is None, reason="needs Python 3.12 with venv (PATH, PYTHON312 or pyenv; make setup needs one too)")
def test_pip_requires_the_pinned_hash(site):
    """A wheel that matches the signed manifest but not the lock's pinned sha256 (a build whose
    lock and wheels disagree) is refused by pip --require-hashes: the probe is never installed."""
    b, media = build(site["work"], site["priv"], stale_lock=True)
    dest = os.path.join(site["home"], "llmops-bootstrap")
    assert verify(site, media, extract=dest).returncode == 0
    prefix = os.path.join(site["home"], "p")
    r = bootstrap(site, dest, "--prefix", prefix, "--python", _python312())
    assert r.returncode == 1, r.stderr
    assert "bootstrap: pip could not install from %s/python (full log: %s/bootstrap.log)" % (dest, prefix) in r.stderr
    assert "DO NOT MATCH THE HASHES" in r.stderr
    site_packages = subprocess.run([os.path.join(prefix, "venv", "bin", "python"), "-c", "import probe"],
                                   capture_output=True, check=False)
    assert site_packages.returncode != 0
    assert not os.path.exists(os.path.join(prefix, "collections"))
    assert not os.path.exists(os.path.join(prefix, "bootstrap.stamp"))


def test_a_second_lock_without_hashes_is_refused_before_extraction(site):
    """Every python/requirements*.lock must pin sha256s, not only requirements.lock: a signed bundle whose
    3.11 lock has bare pins (built by a broken builder) is refused, and nothing is extracted."""
    b, media = build(site["work"], site["priv"], extra_lock="# llmops-python-versions: 3.11\nprobe==1.0\n")
    dest = os.path.join(site["home"], "llmops-bootstrap")
    before = snapshot(str(site["tmp"]))
    r = verify(site, media, extract=dest)
    assert r.returncode == 1, r.stdout + r.stderr
    assert ("llmops-verify: python/requirements-3.11.lock carries no --hash=sha256: pins: the bundle was built by an older "
            "llmops.onprem, whose wheels pip cannot check. Rebuild the bundle. Nothing was extracted or installed") in r.stderr, r.stderr
    assert untouched(site, before), "a refused run left files behind"


def test_the_verifier_beside_the_segments_is_accepted_by_pack_and_import(site):
    """llmops-verify.sh lies on the medium outside the segments (as roles/bundle writes it): a
    re-pack does not call it foreign, and the import neither refuses it nor needs it."""
    from ansible_collections.llmops.onprem.plugins.module_utils._bundle import Importer
    b, media = build(site["work"], site["priv"])
    again = bundle_pack.run(dict(src=b, dest=media, private_key=site["priv"], segment_size="64KiB", read_back=True,
                                 progress_file=None), False)
    assert again["changed"] is False
    r = Importer(media, site["pub"], dest=os.path.join(site["work"], "imported")).run()
    assert r["files_copied"] == r["files_total"] == 6
    with open(os.path.join(site["work"], "imported", "llmops-verify.sh"), "rb") as x, open(os.path.join(media, "llmops-verify.sh"), "rb") as y:
        assert x.read() == y.read()
