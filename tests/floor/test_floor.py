"""The floor run (tests/tools/test.sh sanity_floor): the collection's modules and filters with the
ansible-core in $LLMOPS_ANSIBLE_BIN, which the floor run sets to .venv-floor/bin (Python 3.11 and
the ansible-core of bundle/requirements-controller-py311.lock, what a Debian 12 site bootstraps).
Without it, the tests run with this venv's ansible-core (the tested one)."""
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("LLMOPS_ANSIBLE_BIN") or os.path.dirname(sys.executable)


def pinned_core(lock):
    with open(os.path.join(ROOT, lock), encoding="utf-8") as f:
        return re.search(r"(?m)^ansible-core==(\S+)", f.read()).group(1)


def run(*argv, **env):
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1", **env)
    return subprocess.run([os.path.join(BIN, argv[0])] + list(argv[1:]), cwd=ROOT, env=env, capture_output=True, text=True,
                          check=False, timeout=300)


def test_the_floor_run_uses_the_floor():
    """With LLMOPS_ANSIBLE_BIN set (the floor run), it is the 3.11 closure's ansible-core on Python 3.11."""
    r = run("ansible-playbook", "--version")
    assert r.returncode == 0, r.stderr
    if os.environ.get("LLMOPS_ANSIBLE_BIN"):
        assert "[core %s]" % pinned_core("bundle/requirements-controller-py311.lock") in r.stdout, r.stdout
        assert re.search(r"(?m)^\s*python version = 3\.11\.", r.stdout), r.stdout
    else:
        assert "[core %s]" % pinned_core("requirements-dev.lock") in r.stdout, r.stdout


def recap(stdout):
    m = re.search(r"(?m)^localhost\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=0\s+failed=0", stdout)
    assert m, stdout[-4000:]
    return int(m.group(1)), int(m.group(2))


def test_modules_and_filters_run_and_a_second_run_changes_nothing(tmp_path):
    argv = ("ansible-playbook", "-i", "localhost,", "-c", "local", "-e", "floor_work=%s" % tmp_path,
            "-e", "ansible_python_interpreter=%s" % os.path.join(BIN, "python"), "tests/floor/modules.yml")
    first = run(*argv, ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    assert "does not support Ansible version" not in first.stderr, first.stderr
    ok, changed = recap(first.stdout)
    assert changed >= 5, first.stdout[-4000:]
    shown = json.loads(re.search(r"ok: \[localhost\] => (\{.*?\n\})", first.stdout.split("What the modules and filters returned]", 1)[1],
                                 re.S).group(1))["msg"]
    assert shown["image"]["name"] == "registry.site.example:5000/public.ecr.aws/b2z8n5q1/vllm" and shown["image"]["tag"] == "v0.6.3"
    assert "sbom" in " ".join(shown["inspect_keys"]) and "listing" in shown["inspect_keys"], shown
    assert os.path.isfile(os.path.join(str(tmp_path), "import", "python", "requirements.lock"))
    second = run(*argv, ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    assert second.returncode == 0, second.stdout[-4000:]
    assert recap(second.stdout) == (ok, 0), second.stdout[-4000:]
