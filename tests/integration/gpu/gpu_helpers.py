"""Shared by the GPU layer's tests: the real GPU operator chart (../shared/upstream/gpu-operator
from the repository root), the real helm, and ansible-playbook runs on the controller."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
CHART = os.path.normpath(os.path.join(ROOT, "..", "shared", "upstream", "gpu-operator"))
HELM = os.environ.get("HELM", os.path.join(ROOT, ".tools", "bin", "helm"))
VENV_BIN = os.path.dirname(sys.executable)
PLAYBOOKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "playbooks")


def need_chart_and_helm():
    """The tests need both; a missing one is a failure with the fix, not a skip."""
    if not os.path.isfile(os.path.join(CHART, "Chart.yaml")):
        raise AssertionError("the GPU operator chart is not at %s (the shared upstream checkout)" % CHART)
    if not os.access(HELM, os.X_OK):
        raise AssertionError("helm not found at %s: run make setup (or set HELM)" % HELM)


def playbook(name, extra, check=False):
    """ansible-playbook PLAYBOOKS/name with extra vars; (process, output dict or None)."""
    env = dict(os.environ)
    env.update(ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default",
               ANSIBLE_NOCOLOR="1", PATH=VENV_BIN + os.pathsep + env.get("PATH", ""))
    out = extra["gpu_out"]
    if os.path.exists(out):
        os.unlink(out)
    extra = dict(extra, gpu_python=sys.executable)
    cmd = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", "localhost,", os.path.join(PLAYBOOKS, name),
           "-e", json.dumps(extra)] + (["--check"] if check else [])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    result = None
    if os.path.exists(out):
        with open(out, encoding="utf-8") as f:
            result = json.load(f)
    return proc, result
