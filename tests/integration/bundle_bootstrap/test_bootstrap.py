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
    """An interpreter of `version` ("3.12") with venv: $PYTHON312-style variable, /usr/bin/python3 when it is
    that version (the distro's, as at a site), python3.12 on PATH, or pyenv's; None when this machine has none."""
    candidates = [os.environ.get("PYTHON" + version.replace(".", ""), ""), "/usr/bin/python3", shutil.which("python" + version) or ""]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/%s.*/bin/python3" % version)))
    for c in candidates:
        if not c or not os.path.exists(c):
            continue
        r = subprocess.run([c, "-c", "import sys, venv, ensurepip; assert '%%d.%%d' %% sys.version_info[:2] == %r; print(sys.executable)" % version],
                           capture_output=True, text=True, check=False)
        if r.returncode == 0:
            return r.stdout.strip()
    return None


# The versions the bundle carries by default (roles/bundle_python), each version's source lock and its
# lock in the bundle, and versions it refuses (a real interpreter where the machine has one, else a stub).
CARRIED = ["3.11", "3.12", "3.13"]
SOURCE_LOCK = {"3.11": "bundle/requirements-controller-py311.lock", "3.12": "bundle/requirements-controller.lock",
               "3.13": "bundle/requirements-controller.lock"}
BUNDLE_LOCK = {"3.11": "requirements-3.11.lock", "3.12": "requirements.lock", "3.13": "requirements.lock"}
REFUSED = ["3.10", "3.9"]
CARRIED_TEXT = "3.11, 3.12, 3.13"
CORES_TEXT = "ansible-core 2.19 on Python 3.11, 2.21 on 3.12 and 3.13"


def core_of(version):
    """The ansible-core minor release ("2.19") that the version's source lock pins."""
    with open(os.path.join(ROOT, SOURCE_LOCK[version])) as f:
        return re.search(r"(?m)^ansible-core==(\d+\.\d+)\.", f.read()).group(1)


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


def refused_python(version, tmp_path):
    """An interpreter of `version` the bundle has no wheels for: this machine's, else a stub that reports
    that version (bootstrap.sh refuses on the version before it runs anything else)."""
    py = find_python(version)
    if py:
        return py
    stub = os.path.join(str(tmp_path), "stub", "python" + version)
    os.makedirs(os.path.dirname(stub), exist_ok=True)
    with open(stub, "w") as f:
        f.write("#!/bin/sh\necho %s\n" % version)
    os.chmod(stub, 0o755)
    return stub


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


def build(dest, tmp, *extra, prefix=(), env=None):
    """Run the connected-side role (extra: more ansible-playbook arguments; prefix: a command prefix such as
    OFFLINE; env: more environment); returns the completed process."""
    playbook = os.path.join(str(tmp), "build.yml")
    with open(playbook, "w") as f:
        f.write("- hosts: localhost\n  gather_facts: false\n  roles:\n"
                "    - role: llmops.onprem.bundle_python\n      bundle_python_dest: %s\n" % dest)
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1", **(env or {}))
    argv = list(prefix) + [os.path.join(BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local",
                           "-e", "ansible_python_interpreter=" + sys.executable, playbook] + list(extra)
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, check=False)


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
    listing = os.listdir(os.path.join(dest, "python"))
    wheels = sorted(w for w in listing if w.endswith(".whl"))
    assert sorted(set(listing) - set(wheels)) == ["requirements-3.11.lock", "requirements.lock"]
    digests = set()
    for version in CARRIED:
        with open(os.path.join(ROOT, SOURCE_LOCK[version])) as f:
            pins = re.findall(r"(?m)^([A-Za-z0-9._-]+==[^\s\\]+)", f.read())
        with open(os.path.join(dest, "python", BUNDLE_LOCK[version])) as f:
            lock = f.read()
        # Exactly one wheel of each pin (at the pinned version) serves each carried version; pure ones are there once.
        want = sorted("%s-%s" % (re.sub(r"[-_.]+", "_", p.split("==")[0]).lower(), p.split("==")[1]) for p in pins)
        served = sorted("-".join(w.split("-")[:2]).lower() for w in wheels
                        if serves(w, version) and "-".join(w.split("-")[:2]).lower() in want)
        assert served == want, (version, served)
        hashed = re.findall(r"(?m)^([A-Za-z0-9._-]+==\S+) \\\n(?:    --hash=sha256:[0-9a-f]{64} \\\n)*    --hash=sha256:[0-9a-f]{64}$", lock)
        assert hashed == pins
        assert re.search(r"(?m)^# llmops-python-versions: (.*)$", lock).group(1).split() == [v for v in CARRIED if BUNDLE_LOCK[v] == BUNDLE_LOCK[version]]
        assert re.search(r"(?m)^ansible-core==%s\." % re.escape(core_of(version)), lock)
        digests |= set(re.findall(r"--hash=sha256:([0-9a-f]{64})", lock))
    assert core_of("3.11") == "2.19" and core_of("3.13") != "2.19"
    assert len(wheels) == len(set(wheels)) and any(w.startswith("ansible_core-2.19.") and w.endswith("-py3-none-any.whl") for w in wheels)
    assert all(any("-cp%s-cp%s-" % (v, v) in w for w in wheels) for v in ("311", "312", "313"))
    # Each hash is a wheel in python/, and each wheel's sha256 is in a lock.
    assert digests == {sha256_of(os.path.join(dest, "python", w)) for w in wheels}
    collections = sorted(os.listdir(os.path.join(dest, "collections")))
    assert [re.sub(r"-[0-9][^-]*\.tar\.gz$", "", c) for c in collections] == [
        "ansible-posix", "community-crypto", "community-postgresql", "kubernetes-core", "llmops-onprem"]
    assert os.access(os.path.join(dest, "bootstrap.sh"), os.X_OK)


def sha256_of(path):
    import hashlib
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.mark.parametrize("locks", ['{"311": "/x.lock"}', '{"3.11": "/x.lock", "3": "/y.lock"}'])
def test_a_version_lock_map_that_is_not_versions_to_locks_is_refused_before_anything(tmp_path, locks):
    dest = os.path.join(str(tmp_path), "bundle")
    r = build(dest, tmp_path, "-e", '{"bundle_python_version_locks": %s}' % locks)
    assert r.returncode == 2, r.stdout[-3000:]
    out = re.sub(r"\s+", " ", r.stdout)
    assert "a mapping of such versions to lock files" in out, out[-3000:]
    assert not os.path.exists(dest)


INDEX_TASK = "TASK [llmops.onprem.bundle_python : Download the wheels the cache lacks from the index into the cache]"


def index_runs(stdout):
    """The "version: lock" labels of the versions a build asked the index for (the cache alone could not serve them)."""
    after = stdout.split(INDEX_TASK, 1)[1].split("\nTASK [", 1)[0]
    return re.findall(r"(?m)^ok: \[localhost\] => \(item=([^)]*)\)", after)


def test_second_build_changes_nothing_and_asks_no_index(bundle):
    # With the network cut where this machine allows it: the cache holds every pinned wheel, so the re-run
    # takes them from there and never asks the index.
    second = build(bundle["dest"], bundle["tmp"], prefix=OFFLINE)
    assert second.returncode == 0, second.stdout[-3000:]
    assert recap_changed(bundle["first"].stdout) > 0
    changed_tasks = re.findall(r"(?m)^TASK \[([^\]]+)\][^\n]*\n(?:.*\n)*?changed:", second.stdout)
    assert recap_changed(second.stdout) == 0, changed_tasks
    assert index_runs(second.stdout) == [] and "skipping: [localhost]" in second.stdout.split(INDEX_TASK, 1)[1][:300]


def test_a_wheel_missing_from_the_cache_is_fetched_from_the_index_for_its_version_only(bundle, tmp_path):
    """The cache less one wheel only Python 3.13 takes: that version alone goes to the index, which puts the wheel
    back in the cache and in the bundle."""
    cache = tmp_path / "cache"
    # A cache of exactly the pinned wheels: the bundle's python/ holds each once.
    shutil.copytree(os.path.join(bundle["dest"], "python"), str(cache / "wheels"), ignore=shutil.ignore_patterns("*.lock"))
    [gone] = [w for w in os.listdir(str(cache / "wheels")) if w.startswith("pyyaml-") and "-cp313-cp313-" in w]
    os.remove(str(cache / "wheels" / gone))
    dest = str(tmp_path / "bundle")
    r = build(dest, tmp_path, env={"LLMOPS_CACHE": str(cache)})
    assert r.returncode == 0, r.stdout[-3000:]
    assert index_runs(r.stdout) == ["3.13: requirements-controller.lock"], r.stdout[-3000:]
    assert os.path.isfile(str(cache / "wheels" / gone)) and os.path.isfile(os.path.join(dest, "python", gone))
    assert sorted(os.listdir(os.path.join(dest, "python"))) == sorted(os.listdir(os.path.join(bundle["dest"], "python")))


@pytest.mark.parametrize("version", CARRIED)
def test_bootstrap_offline_then_ansible_and_the_collection_work(bundle, tmp_path, version):
    """The same built bundle bootstraps on each Python it carries wheels for."""
    python = needs(version)
    dest = bundle["dest"]
    where = extract(bundle, tmp_path)
    r = bootstrap(where, tmp_path, "--python", python, "--inventory", "inventories/site1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert ("bootstrap: using %s (Python %s, ansible-core %s from python/%s; the bundle carries wheels for %s)"
            % (python, version, core_of(version), BUNDLE_LOCK[version], CARRIED_TEXT)) in r.stderr
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
    assert version_out.returncode == 0 and "[core %s." % core_of(version) in version_out.stdout, version_out.stdout + version_out.stderr
    assert re.search(r"(?m)^\s*python version = %s\.\d+" % re.escape(version), version_out.stdout), version_out.stdout
    doc = subprocess.run(OFFLINE + [os.path.join(prefix, "venv", "bin", "ansible-doc"), "llmops.onprem.s3_buckets"],
                         capture_output=True, text=True, env=env, check=False)
    assert doc.returncode == 0, doc.stderr
    assert os.path.join(colls, "ansible_collections", "llmops", "onprem", "plugins", "modules", "s3_buckets.py") in doc.stdout
    listing = subprocess.run([os.path.join(prefix, "venv", "bin", "ansible-galaxy"), "collection", "list", "--format", "json"],
                             capture_output=True, text=True, env=env, check=False)
    installed = set(json_keys(listing.stdout, colls))
    assert {"ansible.posix", "community.crypto", "community.postgresql", "kubernetes.core", "llmops.onprem"} <= installed
    # A playbook with the collection's module and filters runs offline in the bootstrapped venv, with no
    # warning that the collection does not support this ansible-core (meta/runtime.yml requires_ansible).
    play = os.path.join(str(tmp_path), "tiny.yml")
    with open(play, "w") as f:
        f.write("- hosts: localhost\n  gather_facts: false\n  tasks:\n"
                "    - llmops.onprem.path_space:\n        paths: [%s]\n      register: space\n"
                "    - ansible.builtin.assert:\n        that:\n"
                "          - space.paths | length == 1\n"
                "          - (\"quay.io/x/vllm:v1\" | llmops.onprem.site_image(\"reg.site:5000\") | llmops.onprem.image_ref).tag == \"v1\"\n"
                % prefix)
    tiny = subprocess.run(OFFLINE + [os.path.join(prefix, "venv", "bin", "ansible-playbook"), "-i", "localhost,", "-c", "local",
                                     "-e", "ansible_python_interpreter=" + os.path.join(prefix, "venv", "bin", "python"), play],
                          capture_output=True, text=True, env=dict(env, ANSIBLE_NOCOLOR="1"), check=False)
    assert tiny.returncode == 0, tiny.stdout[-3000:] + tiny.stderr[-2000:]
    assert re.search(r"(?m)^localhost\s+:\s+ok=2\s+changed=0\s+unreachable=0\s+failed=0", tiny.stdout), tiny.stdout
    assert "does not support Ansible version" not in tiny.stderr, tiny.stderr

    # Again, with no --python: PATH's python3 is one the bundle has no wheels for (when this machine
    # has one), so bootstrap.sh passes it over for python<version>, then finds the work done.
    fakebin = os.path.join(str(tmp_path), "bin")
    os.makedirs(fakebin)
    os.symlink(python, os.path.join(fakebin, "python" + version))
    older = refused_python(REFUSED[0], tmp_path)
    os.symlink(older, os.path.join(fakebin, "python3"))
    env_again = dict(_env(tmp_path), PATH=fakebin + ":/usr/bin:/bin")
    again = subprocess.run(OFFLINE + [SH, os.path.join(where, "bootstrap.sh"), "--inventory", "inventories/site1"],
                           capture_output=True, text=True, env=env_again, check=False)
    assert again.returncode == 0, again.stderr
    assert "bootstrap: using %s/python%s (Python %s," % (fakebin, version, version) in again.stderr
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
    assert ("bootstrap: /nonexistent/python3.12 not found. This bundle carries wheels for Python %s (%s): install one from the site's "
            "OS media (Debian 12: python3-venv; Ubuntu 24.04: python3.12-venv;" % (CARRIED_TEXT, CORES_TEXT)) in r.stderr
    assert not os.path.exists(os.path.join(str(tmp_path), ".local"))


@pytest.mark.parametrize("version", REFUSED)
def test_python_without_wheels_is_refused_naming_the_versions(bundle, tmp_path, version):
    """A Python older than any the bundle carries is refused with what the bundle carries, before anything is created."""
    python = refused_python(version, tmp_path)
    where = extract(bundle, tmp_path)
    r = bootstrap(where, tmp_path, "--python", python)
    assert r.returncode == 1
    assert ("bootstrap: %s is Python %s, and this bundle carries wheels for Python %s only (%s): install one from the site's OS media"
            % (python, version, CARRIED_TEXT, CORES_TEXT)) in r.stderr
    assert r.stderr.rstrip().endswith("or pass --python /path/to/python3.X. Nothing was installed"), r.stderr
    assert not os.path.exists(os.path.join(str(tmp_path), ".local"))


def test_no_python_on_path_with_wheels_is_refused(bundle, tmp_path):
    """No --python, and PATH holds only an interpreter the bundle has no wheels for: /bin's tools, none of its Pythons."""
    older = refused_python(REFUSED[0], tmp_path)
    fakebin = os.path.join(str(tmp_path), "bin")
    os.makedirs(fakebin)
    for name in os.listdir("/bin"):
        if not name.startswith("python"):
            os.symlink(os.path.join("/bin", name), os.path.join(fakebin, name))
    os.symlink(older, os.path.join(fakebin, "python3"))
    where = extract(bundle, tmp_path)
    r = subprocess.run([SH, os.path.join(where, "bootstrap.sh")], capture_output=True, text=True,
                       env=dict(_env(tmp_path), PATH=fakebin), check=False)
    assert r.returncode == 1
    assert ("bootstrap: no Python on PATH that this bundle has wheels for (Python %s: %s; %s/python3 is %s): install one"
            % (CARRIED_TEXT, CORES_TEXT, fakebin, REFUSED[0])) in r.stderr, r.stderr
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
