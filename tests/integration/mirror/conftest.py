"""Fixtures of the oci_mirror tests: a real registry (registry_server.py) for the session, and the module
run in its own process (so a test can interrupt it)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(HERE))
MODULE = REPO / "plugins" / "modules" / "oci_mirror.py"

from registry_server import start_registry  # noqa: E402


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def own_registry(tmp_path_factory):
    """A registry of the test file's own, for tests whose garbage collection must not touch other files' blobs."""
    reg = start_registry(tmp_path_factory.mktemp("own-registry"))
    yield reg
    reg.stop()


def _env():
    return dict(os.environ, PYTHONPATH=str(REPO / ".cache" / "collections"))


def write_args(tmp_path, args, check_mode=False, diff=False):
    f = tmp_path / ("args-%s.json" % os.urandom(4).hex())
    f.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": dict(args, _ansible_check_mode=check_mode, _ansible_diff=diff)}))
    return f


@pytest.fixture
def mirror(tmp_path):
    """Run the real module in its own process: mirror(args, check_mode=False) -> (rc, result dict)."""
    def run(args, check_mode=False, diff=True):
        p = subprocess.run([sys.executable, str(MODULE), str(write_args(tmp_path, args, check_mode, diff))],
                           capture_output=True, text=True, env=_env(), check=False)
        try:
            return p.returncode, json.loads(p.stdout)
        except ValueError:
            raise AssertionError("module printed no JSON (rc %d):\n%s\n%s" % (p.returncode, p.stdout, p.stderr))
    return run


@pytest.fixture
def mirror_popen(tmp_path):
    def start(args):
        return subprocess.Popen([sys.executable, str(MODULE), str(write_args(tmp_path, args))],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    return start
