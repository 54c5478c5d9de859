"""module_utils/_errors.py: OnpremError is the root of every error of the collection (issue 13 item 3)."""
import importlib.util
import os

import pytest

from ansible_collections.llmops.onprem.plugins.module_utils._bundle import BundleError
from ansible_collections.llmops.onprem.plugins.module_utils._checkpoint import CheckpointError
from ansible_collections.llmops.onprem.plugins.module_utils._debrepo import PackagesError
from ansible_collections.llmops.onprem.plugins.module_utils._endpoint import EndpointError
from ansible_collections.llmops.onprem.plugins.module_utils._errors import OnpremError
from ansible_collections.llmops.onprem.plugins.modules.bundle_images import ImageError

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))


def _model_pull():
    spec = importlib.util.spec_from_file_location("model_pull_for_errors", os.path.join(ROOT, "serving", "model-pull", "model_pull.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("cls", [BundleError, CheckpointError, PackagesError, EndpointError, ImageError])
def test_every_error_is_an_onprem_error_and_keeps_its_message(cls):
    with pytest.raises(OnpremError, match=r"^the bundle is torn$") as e:
        raise cls("the bundle is torn")
    assert e.type is cls


def test_the_network_errors_keep_kind_status_code_and_details():
    e = OnpremError("GET / answered HTTP 503", status=503, code="SlowDown")
    assert (e.kind, e.status, e.code) == ("http", 503, "SlowDown")
    assert e.details == dict(error_kind="http", http_status=503, error_code="SlowDown")
    assert OnpremError("x", kind="tls").details["error_kind"] == "tls"


def test_a_refusal_says_refused_and_each_keeps_its_own_details():
    assert BundleError("x").kind == "refused" and BundleError("x").details["error_kind"] == "refused"
    assert CheckpointError("bad", ["a", "b"]).details == dict(problems=["a", "b"])
    assert CheckpointError("bad").problems == ["bad"]
    assert PackagesError("no key", key="k").details == dict(key="k")
    e = EndpointError("HTTP 401", status=401, kind="api_key_not_enforced")
    assert (e.status, e.kind, e.details) == (401, "api_key_not_enforced", dict(changed=False, ready=False, endpoints=[]))


def test_model_pull_errors_are_onprem_errors_with_their_exit_code():
    mp = _model_pull()
    e = mp.PullError(mp.EXIT_VERIFY, "the manifest is not a checkpoint manifest")
    assert isinstance(e, mp._errors.OnpremError) and e.code == mp.EXIT_VERIFY
    assert str(e) == "the manifest is not a checkpoint manifest"
