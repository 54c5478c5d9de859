"""The controller bootstrap of the air-gap bundle, for real.

The connected side (this machine, which reaches PyPI) builds a bundle's python/, collections/
and bootstrap.sh with the llmops.onprem.bundle_python role; wheels are cached under
${LLMOPS_CACHE:-~/.cache/llmops-onprem}/wheels so re-runs download nothing. Then bootstrap.sh
runs with the network cut: in a new network namespace (`unshare -n`, only a loopback that is
down) where the user may create one, and always with PIP_NO_INDEX=1.
"""
import glob
import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BIN = os.path.dirname(sys.executable)


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


def bootstrap(bundle, home, *args, prefix=None):
    argv = (prefix if prefix is not None else OFFLINE) + [os.path.join(bundle, "bootstrap.sh")] + list(args)
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
    return dict(dest=dest, tmp=tmp, first=first)


def test_bundle_holds_wheels_collections_and_bootstrap(bundle):
    dest = bundle["dest"]
    wheels = sorted(os.listdir(os.path.join(dest, "python")))
    with open(os.path.join(ROOT, "bundle", "requirements-controller.lock")) as f:
        pins = re.findall(r"(?m)^([A-Za-z0-9._-]+)==", f.read())
    assert "requirements.lock" in wheels
    assert len(wheels) == len(pins) + 1
    assert any(w.startswith("ansible_core-") for w in wheels)
    assert all(w.endswith(".whl") for w in wheels if w != "requirements.lock")
    collections = sorted(os.listdir(os.path.join(dest, "collections")))
    assert [re.sub(r"-[0-9][^-]*\.tar\.gz$", "", c) for c in collections] == [
        "community-crypto", "community-postgresql", "kubernetes-core", "llmops-onprem"]
    assert os.access(os.path.join(dest, "bootstrap.sh"), os.X_OK)


def test_second_build_changes_nothing(bundle):
    second = build(bundle["dest"], bundle["tmp"])
    assert second.returncode == 0, second.stdout[-3000:]
    assert recap_changed(bundle["first"].stdout) > 0
    changed_tasks = re.findall(r"(?m)^TASK \[([^\]]+)\][^\n]*\n(?:.*\n)*?changed:", second.stdout)
    assert recap_changed(second.stdout) == 0, changed_tasks


def test_bootstrap_offline_then_ansible_and_the_collection_work(bundle, tmp_path):
    dest = bundle["dest"]
    r = bootstrap(dest, tmp_path, "--python", PYTHON312, "--inventory", "inventories/site1")
    assert r.returncode == 0, r.stdout + r.stderr
    prefix = os.path.join(str(tmp_path), ".local", "share", "llmops-onprem")
    colls = os.path.join(prefix, "collections")
    site = os.path.join(colls, "ansible_collections", "llmops", "onprem", "playbooks", "site.yml")
    assert ("ANSIBLE_COLLECTIONS_PATH=%s %s/venv/bin/ansible-playbook -i inventories/site1 %s -e llmops_bundle=%s"
            % (colls, prefix, site, dest)) in r.stdout

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
    assert {"community.crypto", "community.postgresql", "kubernetes.core", "llmops.onprem"} <= installed

    again = bootstrap(dest, tmp_path, "--python", PYTHON312, "--inventory", "inventories/site1")
    assert again.returncode == 0, again.stderr
    assert "already bootstrapped from this bundle content in %s; nothing to do" % prefix in again.stderr
    assert "-e llmops_bundle=%s" % dest in again.stdout


def json_keys(text, colls):
    import json
    data = json.loads(text)
    return data.get(os.path.join(colls, "ansible_collections"), {}).keys()


def test_missing_python_is_named(bundle, tmp_path):
    r = bootstrap(bundle["dest"], tmp_path, "--python", "/nonexistent/python3.12")
    assert r.returncode == 1
    assert ("bootstrap: /nonexistent/python3.12 not found. ansible-core needs Python 3.12: install it from the site's OS media "
            "(Debian 13 / Ubuntu 24.04: apt-get install python3.12 python3.12-venv") in r.stderr
    assert not os.path.exists(os.path.join(str(tmp_path), ".local"))


def test_not_enough_space_is_refused_with_the_figures(bundle, tmp_path):
    # A 1 MiB tmpfs in a private mount namespace stands for a full disk.
    script = ('set -e; mkdir -p "$1"; mount -t tmpfs -o size=1m llmops-small "$1"; shift; exec "$@"')
    small = os.path.join(str(tmp_path), "small")
    r = bootstrap(bundle["dest"], tmp_path, "--python", PYTHON312, "--prefix", small + "/p",
                  prefix=["unshare", "-m", "-n", "sh", "-c", script, "sh", small])
    assert r.returncode == 1, r.stdout + r.stderr
    assert re.search(r"bootstrap: not enough space in %s/p: need about \d+ MiB, 1 MiB free\. Free space or pass --prefix elsewhere"
                     % re.escape(small), r.stderr), r.stderr


def test_pip_failure_is_reported_and_not_stamped(bundle, tmp_path):
    broken = os.path.join(str(tmp_path), "broken")
    shutil.copytree(bundle["dest"], broken, copy_function=os.link)
    victim = [w for w in os.listdir(os.path.join(broken, "python")) if w.startswith("jmespath-")][0]
    os.unlink(os.path.join(broken, "python", victim))
    r = bootstrap(broken, tmp_path, "--python", PYTHON312)
    prefix = os.path.join(str(tmp_path), ".local", "share", "llmops-onprem")
    assert r.returncode == 1
    assert "bootstrap: pip could not install from %s/python (full log: %s/bootstrap.log)" % (broken, prefix) in r.stderr
    assert "jmespath" in r.stderr
    assert not os.path.exists(os.path.join(prefix, "bootstrap.stamp"))
