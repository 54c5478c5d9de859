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


def find_python(version):
    """An interpreter of `version` ("3.12") with venv: $PYTHON312-style variable, python3.12 on PATH,
    /usr/bin/python3 when it is that version, or pyenv's; None when this machine has none."""
    candidates = [os.environ.get("PYTHON" + version.replace(".", ""), ""), shutil.which("python" + version) or "", "/usr/bin/python3"]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/%s.*/bin/python3" % version)))
    for c in candidates:
        if not c or not os.path.exists(c):
            continue
        r = subprocess.run([c, "-c", "import sys, venv, ensurepip; assert '%%d.%%d' %% sys.version_info[:2] == %r; print(sys.executable)" % version],
                           capture_output=True, text=True, check=False)
        if r.returncode == 0:
            return r.stdout.strip()
    return None


# The versions the bundle carries by default (roles/bundle_python), and ones it refuses.
CARRIED = ["3.12", "3.13"]
REFUSED = ["3.11", "3.10"]
PYTHON312 = find_python("3.12")
if PYTHON312 is None:
    raise RuntimeError("no Python 3.12 with venv found (set PYTHON312); make setup needs one too")


def needs(version):
    """The interpreter of `version`, or skip: this machine lacks it (pyenv's or the distro's)."""
    py = find_python(version)
    if py is None:
        pytest.skip("no Python %s with venv on this machine (PATH, /usr/bin/python3, ~/.pyenv/versions/%s.*; or set PYTHON%s)"
                    % (version, version, version.replace(".", "")))
    return py


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


def serves(wheel, version):
    """Whether CPython `version` ("3.12") installs this wheel (by its python and abi tags)."""
    pythons, abi = wheel[:-len(".whl")].rsplit("-", 4)[2:4]
    cp = "cp" + version.replace(".", "")
    return any(t in ("py3", "py2.py3") or t == cp or (abi == "abi3" and t.startswith("cp3") and int(t[3:]) <= int(cp[3:]))
               for t in pythons.split(".")) and abi in ("none", "abi3", cp)


def test_bundle_holds_wheels_for_each_python_collections_and_bootstrap(bundle):
    dest = bundle["dest"]
    wheels = sorted(w for w in os.listdir(os.path.join(dest, "python")) if w != "requirements.lock")
    with open(os.path.join(ROOT, "bundle", "requirements-controller.lock")) as f:
        pins = re.findall(r"(?m)^([A-Za-z0-9._-]+)==", f.read())
    norm = [re.sub(r"[-_.]+", "_", p).lower() for p in pins]
    for version in CARRIED:
        # Exactly one wheel of each pin serves each carried version; pure ones are there once.
        served = sorted(w.split("-")[0].lower() for w in wheels if serves(w, version))
        assert served == sorted(norm), (version, served)
    assert len(wheels) == len(set(wheels)) and any(w.startswith("ansible_core-") and w.endswith("-py3-none-any.whl") for w in wheels)
    assert any("-cp313-cp313-" in w for w in wheels) and any("-cp312-cp312-" in w for w in wheels)
    assert all(w.endswith(".whl") for w in wheels)
    with open(os.path.join(dest, "python", "requirements.lock")) as f:
        lock = f.read()
    assert "\n# llmops-python-versions: 3.12 3.13\n" in lock
    hashed = re.findall(r"(?m)^([A-Za-z0-9._-]+)==\S+ \\\n(?:    --hash=sha256:[0-9a-f]{64} \\\n)*    --hash=sha256:[0-9a-f]{64}$", lock)
    assert hashed == pins
    # Each hash is a wheel in python/, and each wheel's sha256 is in the lock.
    digests = set(re.findall(r"--hash=sha256:([0-9a-f]{64})", lock))
    assert digests == {sha256_of(os.path.join(dest, "python", w)) for w in wheels}
    collections = sorted(os.listdir(os.path.join(dest, "collections")))
    assert [re.sub(r"-[0-9][^-]*\.tar\.gz$", "", c) for c in collections] == [
        "ansible-posix", "community-crypto", "community-postgresql", "kubernetes-core", "llmops-onprem"]
    assert os.access(os.path.join(dest, "bootstrap.sh"), os.X_OK)


def sha256_of(path):
    import hashlib
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_second_build_changes_nothing(bundle):
    second = build(bundle["dest"], bundle["tmp"])
    assert second.returncode == 0, second.stdout[-3000:]
    assert recap_changed(bundle["first"].stdout) > 0
    changed_tasks = re.findall(r"(?m)^TASK \[([^\]]+)\][^\n]*\n(?:.*\n)*?changed:", second.stdout)
    assert recap_changed(second.stdout) == 0, changed_tasks


@pytest.mark.parametrize("version", CARRIED)
def test_bootstrap_offline_then_ansible_and_the_collection_work(bundle, tmp_path, version):
    """The same built bundle bootstraps on each Python it carries wheels for."""
    python = needs(version)
    dest = bundle["dest"]
    where = extract(bundle, tmp_path)
    r = bootstrap(where, tmp_path, "--python", python, "--inventory", "inventories/site1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "bootstrap: using %s (Python %s; the bundle carries wheels for 3.12, 3.13)" % (python, version) in r.stderr
    assert "bootstrap: installing ansible-core and the collection's Python needs from %s/python (no network, --require-hashes)" % where in r.stderr
    prefix = os.path.join(str(tmp_path), ".local", "share", "llmops-onprem")
    colls = os.path.join(prefix, "collections")
    site = os.path.join(colls, "ansible_collections", "llmops", "onprem", "playbooks", "site.yml")
    assert ("ANSIBLE_COLLECTIONS_PATH=%s %s/venv/bin/ansible-playbook -i inventories/site1 %s -e llmops_bundle=%s"
            % (colls, prefix, site, os.path.realpath(dest))) in r.stdout
    assert "-e bundle_import_public_key=%s" % os.path.realpath(bundle["pub"]) in r.stdout

    env = dict(_env(tmp_path), ANSIBLE_COLLECTIONS_PATH=colls)
    version_out = subprocess.run(OFFLINE + [os.path.join(prefix, "venv", "bin", "ansible-playbook"), "--version"],
                                 capture_output=True, text=True, env=env, check=False)
    assert version_out.returncode == 0 and "core 2.21" in version_out.stdout, version_out.stdout + version_out.stderr
    assert re.search(r"(?m)^\s*python version = %s\.\d+" % re.escape(version), version_out.stdout), version_out.stdout
    doc = subprocess.run(OFFLINE + [os.path.join(prefix, "venv", "bin", "ansible-doc"), "llmops.onprem.s3_buckets"],
                         capture_output=True, text=True, env=env, check=False)
    assert doc.returncode == 0, doc.stderr
    assert os.path.join(colls, "ansible_collections", "llmops", "onprem", "plugins", "modules", "s3_buckets.py") in doc.stdout
    listing = subprocess.run([os.path.join(prefix, "venv", "bin", "ansible-galaxy"), "collection", "list", "--format", "json"],
                             capture_output=True, text=True, env=env, check=False)
    installed = set(json_keys(listing.stdout, colls))
    assert {"ansible.posix", "community.crypto", "community.postgresql", "kubernetes.core", "llmops.onprem"} <= installed

    # Again, with no --python: PATH's python3 is one the bundle has no wheels for (when this machine
    # has one), so bootstrap.sh passes it over for python<version>, then finds the work done.
    fakebin = os.path.join(str(tmp_path), "bin")
    os.makedirs(fakebin)
    os.symlink(python, os.path.join(fakebin, "python" + version))
    older = next((p for p in map(find_python, REFUSED) if p), None)
    if older:
        os.symlink(older, os.path.join(fakebin, "python3"))
    env_again = dict(_env(tmp_path), PATH=fakebin + ":/usr/bin:/bin")
    again = subprocess.run(OFFLINE + [SH, os.path.join(where, "bootstrap.sh"), "--inventory", "inventories/site1"],
                           capture_output=True, text=True, env=env_again, check=False)
    assert again.returncode == 0, again.stderr
    if older or version == CARRIED[-1]:
        assert "bootstrap: using %s/python%s (Python %s;" % (fakebin, version, version) in again.stderr
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
    assert ("bootstrap: /nonexistent/python3.12 not found. This bundle carries wheels for Python 3.12, 3.13 (ansible-core 2.21 needs "
            "3.12 or later; Debian 12's python3 is 3.11): install one from the site's OS media (Ubuntu 24.04, RHEL 9: python3.12") in r.stderr
    assert not os.path.exists(os.path.join(str(tmp_path), ".local"))


@pytest.mark.parametrize("version", REFUSED)
def test_python_without_wheels_is_refused_naming_the_versions(bundle, tmp_path, version):
    """Debian 12's stock python3 (3.11), or an older one, is refused with what the bundle carries, before anything is created."""
    python = needs(version)
    where = extract(bundle, tmp_path)
    r = bootstrap(where, tmp_path, "--python", python)
    assert r.returncode == 1
    assert ("bootstrap: %s is Python %s, and this bundle carries wheels for Python 3.12, 3.13 only (ansible-core 2.21 needs 3.12 or "
            "later; Debian 12's stock python3 is 3.11): install one from the site's OS media" % (python, version)) in r.stderr
    assert r.stderr.rstrip().endswith("or pass --python /path/to/python3.X. Nothing was installed"), r.stderr
    assert not os.path.exists(os.path.join(str(tmp_path), ".local"))


def test_no_python_on_path_with_wheels_is_refused(bundle, tmp_path):
    """No --python, and PATH holds only interpreters the bundle has no wheels for."""
    older = [p for p in map(find_python, REFUSED) if p]
    if not older:
        pytest.skip("no Python %s on this machine to stand for the site's" % " or ".join(REFUSED))
    if any(shutil.which("python" + v, path="/bin") for v in CARRIED):
        pytest.skip("/bin holds a Python the bundle carries wheels for")
    fakebin = os.path.join(str(tmp_path), "bin")
    os.makedirs(fakebin)
    os.symlink(older[0], os.path.join(fakebin, "python3"))
    where = extract(bundle, tmp_path)
    r = subprocess.run([SH, os.path.join(where, "bootstrap.sh")], capture_output=True, text=True,
                       env=dict(_env(tmp_path), PATH=fakebin + ":/bin"), check=False)
    assert r.returncode == 1
    v = subprocess.run([older[0], "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True, text=True, check=True).stdout.strip()
    assert ("bootstrap: no Python on PATH that this bundle has wheels for (Python 3.12, 3.13, for ansible-core 2.21; %s/python3 is %s; "
            "Debian 12's stock python3 is 3.11): install one" % (fakebin, v)) in r.stderr
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
