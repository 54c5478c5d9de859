"""oci_mirror against a hostile registry (issue 14 items 7 and 13, issue 19 item 6): the push credentials go
only to the registry's own origin (a Location or a resume record on another host is refused or ignored, and
that host sees nothing), a token service that answers without a token is a clear error, and check mode with no
registry yet predicts from the layout without logging in. Each test builds its layout and registry from
scratch and runs the real module in its own process."""
import hashlib
import json
import os
import re
import socket
import subprocess
import sys

import pytest

from conftest import COLLECTIONS, ROOT, snapshot
from hostile_registry import HostileRegistry

from ansible_collections.llmops.onprem.plugins.module_utils._oci import UploadState

MODULE = os.path.join(ROOT, "plugins", "modules", "oci_mirror.py")
SOURCE = "example.com/team/app:1.0"
REPOSITORY = "example.com/team/app"


def blob(layout, data):
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return "sha256:" + digest


def make_layout(d):
    """A one-image OCI layout: a config, one layer, a manifest, index.json naming it SOURCE."""
    layout = d / "layout"
    (layout / "blobs" / "sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    layer = os.urandom(3000)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blob(layout, config),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": blob(layout, layer),
                    "size": len(layer)}]}).encode()
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": blob(layout, manifest),
        "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": SOURCE}}]}
    (layout / "index.json").write_text(json.dumps(index))
    return layout, hashlib.sha256(layer).hexdigest()


def mirror(tmp_path, args, check_mode=False):
    f = tmp_path / ("args-%s.json" % os.urandom(4).hex())
    f.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": dict(args, _ansible_check_mode=check_mode)}))
    p = subprocess.run([sys.executable, MODULE, str(f)], capture_output=True, text=True, timeout=120, check=False,
                       env=dict(os.environ, PYTHONPATH=COLLECTIONS))
    try:
        return p.returncode, json.loads(p.stdout)
    except ValueError:
        raise AssertionError("module printed no JSON (rc %d):\n%s\n%s" % (p.returncode, p.stdout, p.stderr))


@pytest.fixture
def registry(tmp_path):
    reg = HostileRegistry(tmp_path)
    yield reg
    reg.stop()


@pytest.fixture
def setup(tmp_path, registry):
    layout, layer = make_layout(tmp_path)
    state = tmp_path / "state"
    args = dict(layout=str(layout), registry=registry.host, username="pusher", password="s3cret-push-password",
                ca_path=registry.cert, state_dir=str(state), parallel=1)
    return args, layout, state, "sha256:" + layer


def test_a_location_on_another_host_is_refused_and_gets_no_credentials(tmp_path, registry, setup):
    args, layout, state, _layer = setup
    registry.location_elsewhere = True
    before = snapshot(str(layout))
    rc, out = mirror(tmp_path, args)
    assert rc == 1 and out["failed"], out
    elsewhere = "https://127.0.0.1:%d/v2/%s/blobs/uploads/" % (registry.other.port, REPOSITORY)
    assert re.fullmatch(re.escape("the registry %s sent a Location on another host (%s" % (registry.host, elsewhere))
                        + "[0-9a-f]{32}" + re.escape(
                            "): refused, the push credentials are sent only to https://%s. A registry behind a proxy "
                            "or load balancer must answer with its own address (check the proxy's Host forwarding, or "
                            "the registry's http.host setting)" % registry.host), out["msg"]), out["msg"]
    assert registry.elsewhere == [], "the other origin was contacted: %r" % registry.elsewhere
    assert snapshot(str(layout)) == before
    # Nothing recorded that a later run could follow.
    assert not state.exists() or not any(state.iterdir())
    assert "s3cret-push-password" not in json.dumps(out)


def test_a_resume_record_naming_another_host_is_ignored(tmp_path, registry, setup):
    args, layout, state, layer = setup
    elsewhere = "https://127.0.0.1:%d/v2/%s/blobs/uploads/planted" % (registry.other.port, REPOSITORY)
    UploadState(str(state)).save(registry.host, REPOSITORY, layer, elsewhere, 1000)
    before = snapshot(str(layout))
    rc, out = mirror(tmp_path, args)
    assert rc == 0, out.get("msg", out)
    assert registry.elsewhere == [], "the other origin was contacted: %r" % registry.elsewhere
    assert out["resumed"] == [] and out["restarted"] == [layer]
    assert registry.manifests[(REPOSITORY, "1.0")]
    assert snapshot(str(layout)) == before


@pytest.mark.parametrize("answer,shown", [
    ((200, "text/html", b"<html><body>Please sign in</body></html>"),
     "text/html instead of a JSON object with a \"token\" or \"access_token\": '<html><body>Please sign in</body></html>'"),
    ((200, "application/json", b'{"detail": "ok", "expires_in": 300}'),
     "application/json instead of a JSON object with a \"token\" or \"access_token\": '{\"detail\": \"ok\", \"expires_in\": 300}'"),
    ((200, "text/html", b"<html>" + b"x" * (8 << 20)),
     "text/html instead of a JSON object with a \"token\" or \"access_token\": '<html>" + "x" * 194 + "' (truncated)"),
], ids=["html", "json-without-token", "8-mib-html"])
def test_a_token_service_without_a_token_is_a_clear_error(tmp_path, registry, setup, answer, shown):
    args, layout, _state, _layer = setup
    registry.token_answer = answer
    before = snapshot(str(layout))
    rc, out = mirror(tmp_path, args)
    assert rc == 1 and out["failed"], out
    assert out["msg"] == ("the token service https://127.0.0.1:%d/token (named by the registry %s) answered HTTP 200 "
                          "with %s. Check that the registry's auth.token.realm points at its token service"
                          % (registry.port, registry.host, shown))
    assert "Traceback" not in json.dumps(out)
    assert snapshot(str(layout)) == before


def test_check_mode_without_a_registry_predicts_from_the_layout_without_logging_in(tmp_path, setup):
    args, _layout, _state, _layer = setup
    with socket.socket() as s:   # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = dict(args, registry="127.0.0.1:%d" % port)
    before = snapshot(str(tmp_path))
    rc, out = mirror(tmp_path, args, check_mode=True)
    assert rc == 0, out.get("msg", out)
    assert out["changed"] is True and out["registry_checked"] is False
    assert out["msg"] == ("check mode: the registry 127.0.0.1:%d does not answer yet, so the prediction comes from the "
                          "bundle alone (every image pushed); a real run needs the registry" % port)
    assert [(i["source"], i["action"]) for i in out["images"]] == [(SOURCE, "push")]
    assert out["blobs_uploaded"] == 2 and out["bytes_moved"] == 0
    after = snapshot(str(tmp_path))
    assert {k: v for k, v in after.items() if not k.startswith("args-")} == before


def test_check_mode_with_a_registry_reads_it(tmp_path, registry, setup):
    args, _layout, _state, _layer = setup
    rc, out = mirror(tmp_path, args, check_mode=True)
    assert rc == 0, out.get("msg", out)
    assert out["registry_checked"] is True and out["changed"] is True
    assert not [r for r in registry.requests if r[0] in ("POST", "PATCH", "PUT", "DELETE")]
