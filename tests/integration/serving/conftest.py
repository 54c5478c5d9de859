"""Fixtures for the serving tests: the vLLM stand-in as a local process on 127.0.0.1."""
import pytest

from standin import Standin, make_checkpoint


@pytest.fixture
def checkpoint(tmp_path):
    return make_checkpoint(tmp_path / "ckpt")


@pytest.fixture
def standin(tmp_path):
    """Factory: standin(args, env=None, module_form=False) -> started Standin; all stopped after."""
    procs = []

    def start(args, env=None, module_form=False):
        s = Standin(args, tmp_path, env=env, module_form=module_form)
        procs.append(s)
        return s

    yield start
    for s in procs:
        s.stop()
