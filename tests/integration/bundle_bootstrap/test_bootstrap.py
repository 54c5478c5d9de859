"""The controller bootstrap of the air-gap bundle, for real.

The connected side (this machine, which reaches PyPI) builds a bundle's python/, collections/
and bootstrap.sh with the llmops.onprem.bundle_python role; wheels are cached under
${LLMOPS_CACHE:-~/.cache/llmops-onprem}/wheels so re-runs download nothing. The bundle is then
sealed and signed as roles/bundle does. At the "site", llmops-verify.sh checks the signature
with the site's key and extracts the bootstrap, and bootstrap.sh runs from that extraction under
dash, with the network cut: in a new network namespace (`unshare -n`, only a loopback that is
down) where the user may create one, and always with PIP_NO_INDEX=1.
"""
import glob
import os
import re
import shutil
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ansible_collections.llmops.onprem.plugins.modules import bundle_seal

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BIN = os.path.dirname(sys.executable)
SH = shutil.which("dash") or "/bin/sh"


def _python312():
    candidates = [os.environ.get("PYTHON312", ""), shutil.which("python3.12") or ""]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3")))
    for c in candidates:
        if not c:
            continue
        r = subprocess.run([c, "-c", "import sys, venv, ensurepip; assert sys.version_info[:2] == (3, 12); print(sys.executable)"],
                           capture_output=True, text=True, check=False)
        if r.returncode == 0:
            return r.stdout.strip()
    raise RuntimeError("no Python 3.12 with venv found (set PYTHON312); make setup needs one too")


PYTHON312 = _python312()


def _offline_prefix():
    """The command prefix that cuts the network: unshare -n where allowed."""
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False).returncode == 0:
        return ["unshare", "-n"]
    return []


OFFLINE = _offline_prefix()


def _env(home):
    env = dict(os.environ, HOME=str(home), PIP_NO_INDEX="1", PIP_CONFIG_FILE=os.devnull)
    env.pop("ANSIBLE_COLLECTIONS_PATH", None)
    env.pop("ANSIBLE_CONFIG", None)
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    return env


def build(dest, tmp):
    """Run the connected-side role; returns the completed process."""
    playbook = os.path.join(str(tmp), "build.yml")
    with open(playbook, "w") as f:
        f.write("- hosts: localhost\n  gather_facts: false\n  roles:\n"
                "    - role: llmops.onprem.bundle_python\n      bundle_python_dest: %s\n" % dest)
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    return subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local",
                           "-e", "ansible_python_interpreter=" + sys.executable, playbook],
                          capture_output=True, text=True, env=env, cwd=ROOT, check=False)


def seal(dest, tmp):
    """Sign the bundle as roles/bundle does (llmops-verify.sh at its root, then bundle_seal)."""
    k = ed25519.Ed25519PrivateKey.generate()
    priv, pub = os.path.join(str(tmp), "signing", "k.pem"), os.path.join(str(tmp), "signing", "k.pub.pem")
    os.makedirs(os.path.dirname(priv))
    with open(priv, "wb") as f:
        f.write(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with open(pub, "wb") as f:
        f.write(k.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    shutil.copy(os.path.join(ROOT, "bundle", "llmops-verify.sh"), os.path.join(dest, "llmops-verify.sh"))
    bundle_seal.run(dict(path=dest, private_key=priv, spec={}, versions={}, images=[]), False)
    return pub


def extract(bundle, home):
    """The site's first step: llmops-verify.sh checks the signature and extracts the bootstrap."""
    where = os.path.join(str(home), "llmops-bootstrap")
    r = subprocess.run([SH, os.path.join(bundle["dest"], "llmops-verify.sh"), "--key", bundle["pub"], "--bundle", bundle["dest"],
                        "--extract", where], capture_output=True, text=True, env=_env(home), check=False)
    assert r.returncode == 0, r.stderr
    return where


def bootstrap(where, home, *args, prefix=None):
    argv = (prefix if prefix is not None else OFFLINE) + [SH, os.path.join(where, "bootstrap.sh")] + list(args)
    return subprocess.run(argv, capture_output=True, text=True, env=_env(home), check=False)


def recap_changed(stdout):
    m = re.search(r"(?m)^localhost\s+:\s+ok=\d+\s+changed=(\d+)\s+unreachable=0\s+failed=0", stdout)
    assert m, stdout[-3000:]
    return int(m.group(1))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bundle-build")
    dest = str(tmp / "bundle")
    first = build(dest, tmp)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
    pub = seal(dest, tmp)
    return dict(dest=dest, tmp=tmp, first=first, pub=pub)


def test_bundle_holds_wheels_collections_and_bootstrap(bundle):
    dest = bundle["dest"]
    wheels = sorted(os.listdir(os.path.join(dest, "python")))
    with open(os.path.join(ROOT, "bundle", "requirements-controller.lock")) as f:
        pins = re.findall(r"(?m)^([A-Za-z0-9._-]+)==", f.read())
    assert "requirements.lock" in wheels
    assert len(wheels) == len(pins) + 1
    with open(os.path.join(dest, "python", "requirements.lock")) as f:
        hashed = re.findall(r"(?m)^([A-Za-z0-9._-]+)==\S+ \\\n    --hash=sha256:[0-9a-f]{64}$", f.read())
    assert hashed == pins
    assert any(w.startswith("ansible_core-") for w in wheels)
    assert all(w.endswith(".whl") for w in wheels if w != "requirements.lock")
    collections = sorted(os.listdir(os.path.join(dest, "collections")))
    assert [re.sub(r"-[0-9][^-]*\.tar\.gz$", "", c) for c in collections] == [
        "ansible-posix", "community-crypto", "community-postgresql", "kubernetes-core", "llmops-onprem"]
    assert os.access(os.path.join(dest, "bootstrap.sh"), os.X_OK)


def test_second_build_changes_nothing(bundle):
    second = build(bundle["dest"], bundle["tmp"])
    assert second.returncode == 0, second.stdout[-3000:]
    assert recap_changed(bundle["first"].stdout) > 0
    changed_tasks = re.findall(r"(?m)^TASK \[([^\]]+)\][^\n]*\n(?:.*\n)*?changed:", second.stdout)
    assert recap_changed(second.stdout) == 0, changed_tasks


def test_bootstrap_offline_then_ansible_and_the_collection_work(bundle, tmp_path):
    dest = bundle["dest"]
    where = extract(bundle, tmp_path)
    r = bootstrap(where, tmp_path, "--python", PYTHON312, "--inventory", "inventories/site1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "bootstrap: installing ansible-core and the collection's Python needs from %s/python (no network, --require-hashes)" % where in r.stderr
    prefix = os.path.join(str(tmp_path), ".local", "share", "llmops-onprem")
    colls = os.path.join(prefix, "collections")
    site = os.path.join(colls, "ansible_collections", "llmops", "onprem", "playbooks", "site.yml")
    assert ("ANSIBLE_COLLECTIONS_PATH=%s %s/venv/bin/ansible-playbook -i inventories/site1 %s -e llmops_bundle=%s"
            % (colls, prefix, site, os.path.realpath(dest))) in r.stdout
    assert "-e bundle_import_public_key=%s" % os.path.realpath(bundle["pub"]) in r.stdout

    env = dict(_env(tmp_path), ANSIBLE_COLLECTIONS_PATH=colls)
    version = subprocess.run(OFFLINE + [os.path.join(prefix, "venv", "bin", "ansible-playbook"), "--version"],
                             capture_output=True, text=True, env=env, check=False)
    assert version.returncode == 0 and "core 2.21" in version.stdout, version.stdout + version.stderr
    doc = subprocess.run(OFFLINE + [os.path.join(prefix, "venv", "bin", "ansible-doc"), "llmops.onprem.s3_buckets"],
                         capture_output=True, text=True, env=env, check=False)
    assert doc.returncode == 0, doc.stderr
    assert os.path.join(colls, "ansible_collections", "llmops", "onprem", "plugins", "modules", "s3_buckets.py") in doc.stdout
    listing = subprocess.run([os.path.join(prefix, "venv", "bin", "ansible-galaxy"), "collection", "list", "--format", "json"],
                             capture_output=True, text=True, env=env, check=False)
    installed = set(json_keys(listing.stdout, colls))
    assert {"ansible.posix", "community.crypto", "community.postgresql", "kubernetes.core", "llmops.onprem"} <= installed

    again = bootstrap(where, tmp_path, "--python", PYTHON312, "--inventory", "inventories/site1")
    assert again.returncode == 0, again.stderr
    assert "already bootstrapped from this bundle content in %s; nothing to do" % prefix in again.stderr
    assert "-e llmops_bundle=%s" % os.path.realpath(dest) in again.stdout


def json_keys(text, colls):
    import json
    data = json.loads(text)
    return data.get(os.path.join(colls, "ansible_collections"), {}).keys()


def test_missing_python_is_named(bundle, tmp_path):
    where = extract(bundle, tmp_path)
    r = bootstrap(where, tmp_path, "--python", "/nonexistent/python3.12")
    assert r.returncode == 1
    assert ("bootstrap: /nonexistent/python3.12 not found. ansible-core needs Python 3.12 (Debian 12's python3 is 3.11): install it "
            "from the site's OS media (Debian 13 / Ubuntu 24.04: apt-get install python3.12 python3.12-venv") in r.stderr
    assert not os.path.exists(os.path.join(str(tmp_path), ".local"))


def test_python_311_is_explained(bundle, tmp_path):
    """Debian 12's stock python3 (3.11) is refused with what the site needs, before anything is created."""
    py311 = shutil.which("python3.11")
    if not py311:
        pytest.skip("no python3.11 here")
    where = extract(bundle, tmp_path)
    r = bootstrap(where, tmp_path, "--python", py311)
    assert r.returncode == 1
    assert ("bootstrap: %s is Python 3.11, and ansible-core 2.21 and the bundle's wheels need Python 3.12 (Debian 12's stock python3 "
            "is 3.11): install python3.12" % py311) in r.stderr
    assert not os.path.exists(os.path.join(str(tmp_path), ".local"))


def test_not_enough_space_is_refused_with_the_figures(bundle, tmp_path):
    # A 1 MiB tmpfs in a private mount namespace stands for a full disk.
    script = ('set -e; mkdir -p "$1"; mount -t tmpfs -o size=1m llmops-small "$1"; shift; exec "$@"')
    small = os.path.join(str(tmp_path), "small")
    where = extract(bundle, tmp_path)
    r = bootstrap(where, tmp_path, "--python", PYTHON312, "--prefix", small + "/p",
                  prefix=["unshare", "-m", "-n", "sh", "-c", script, "sh", small])
    assert r.returncode == 1, r.stdout + r.stderr
    assert re.search(r"bootstrap: not enough space in %s/p: need about \d+ MiB, 1 MiB free\. Free space or pass --prefix elsewhere"
                     % re.escape(small), r.stderr), r.stderr


def test_a_wheel_missing_after_verification_is_refused_before_anything(bundle, tmp_path):
    where = extract(bundle, tmp_path)
    victim = [w for w in os.listdir(os.path.join(where, "python")) if w.startswith("jmespath-")][0]
    os.unlink(os.path.join(where, "python", victim))
    r = bootstrap(where, tmp_path, "--python", PYTHON312)
    assert r.returncode == 1
    assert "python/%s: FAILED open or read" % victim in r.stderr
    assert ("bootstrap: files in %s differ from the sha256 that llmops-verify.sh checked against the signed manifest (above): they "
            "changed after verification. Nothing was installed." % where) in r.stderr
    assert not os.path.exists(os.path.join(str(tmp_path), ".local"))


def test_bootstrap_in_the_bundle_itself_is_refused(bundle, tmp_path):
    """`sh <bundle>/bootstrap.sh`, the old documented step, installs nothing unverified."""
    r = bootstrap(bundle["dest"], tmp_path, "--python", PYTHON312)
    assert r.returncode == 1
    assert "bootstrap: %s was not extracted by llmops-verify.sh" % os.path.realpath(bundle["dest"]) in r.stderr
    assert not os.path.exists(os.path.join(str(tmp_path), ".local"))
