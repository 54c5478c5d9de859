"""oci_mirror's pure planner and the layout reader: each blob uploaded once, mounted elsewhere, skipped
where present; images already at the right digest left alone."""
import hashlib
import json
import os

import pytest

from ansible_collections.llmops.onprem.plugins.module_utils._oci import Layout, OnpremError
from ansible_collections.llmops.onprem.plugins.modules.oci_mirror import describe, plan, select_images


def img(source, repo, digest, blobs):
    return dict(source=source, repository=repo, target="reg/" + repo + ":1", digest=digest, blobs=blobs)


def test_each_missing_blob_is_uploaded_once_and_mounted_elsewhere():
    a = img("x.io/a:1", "x.io/a", "sha256:ma", {"base": 100, "a": 10})
    b = img("x.io/b:1", "x.io/b", "sha256:mb", {"base": 100, "b": 20})
    p = plan([a, b], {}, {})
    assert [(u["digest"], u["repository"]) for u in p["uploads"]] == [("a", "x.io/a"), ("b", "x.io/b"), ("base", "x.io/a")]
    assert p["mounts"] == [dict(repository="x.io/b", digest="base", source="x.io/a", size=100)]
    assert p["bytes_total"] == 130 and p["present"] == 0


def test_unchanged_images_are_left_alone_and_lend_their_blobs():
    a = img("x.io/a:1", "x.io/a", "sha256:ma", {"base": 100})
    b = img("x.io/b:1", "x.io/b", "sha256:mb", {"base": 100, "b": 20})
    p = plan([a, b], {a["target"]: "sha256:ma"}, {("x.io/b", "b"): True})
    assert p["todo"] == [b]
    assert p["uploads"] == [] and p["bytes_total"] == 0
    assert p["mounts"] == [dict(repository="x.io/b", digest="base", source="x.io/a", size=100)]
    assert p["present"] == 1


def test_nothing_to_do_when_every_tag_has_its_digest():
    a = img("x.io/a:1", "x.io/a", "sha256:ma", {"base": 100})
    assert plan([a], {a["target"]: "sha256:ma"}, {}) == dict(todo=[], uploads=[], mounts=[], present=0, bytes_total=0)


def _blob(layout, data):
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    with open(os.path.join(layout, "blobs", "sha256", d[7:]), "wb") as f:
        f.write(data)
    return d


@pytest.fixture
def layout(tmp_path):
    (tmp_path / "blobs" / "sha256").mkdir(parents=True)
    (tmp_path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    layer = _blob(str(tmp_path), b"layer")
    cfg = _blob(str(tmp_path), b"{}")
    man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                      "config": {"digest": cfg, "size": 2}, "layers": [{"digest": layer, "size": 5}]}).encode()
    md = _blob(str(tmp_path), man)
    (tmp_path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": len(man),
         "annotations": {"org.opencontainers.image.ref.name": "nginx:1.25"}}]}))
    return tmp_path, md, layer, cfg


def test_layout_images_are_named_by_normalised_upstream_reference(layout):
    path, md, layer, cfg = layout
    lay = Layout(str(path))
    [(source, desc)] = select_images(lay, ["docker.io/library/nginx:1.25"])
    assert source == "docker.io/library/nginx:1.25"
    [d] = describe(lay, [(source, desc)], "reg.example:5000")
    assert d["target"] == "reg.example:5000/docker.io/library/nginx:1.25"
    assert d["repository"] == "docker.io/library/nginx" and d["digest"] == md
    assert d["blobs"] == {layer: 5, cfg: 2}


def test_corrupt_manifest_and_unknown_image_are_named(layout):
    path, md, _layer, _cfg = layout
    lay = Layout(str(path))
    with pytest.raises(OnpremError) as e:
        select_images(lay, ["nginx:1.26"])
    assert str(e.value) == "image(s) not in the layout %s: nginx:1.26 (it holds: docker.io/library/nginx:1.25)" % path
    (path / "blobs" / "sha256" / md[7:]).write_bytes(b"{}")
    with pytest.raises(OnpremError) as e:
        describe(lay, select_images(lay, []), "reg:5000")
    assert str(e.value).startswith("blob %s in %s is corrupt" % (md, path))


def test_not_a_layout(tmp_path):
    with pytest.raises(OnpremError) as e:
        Layout(str(tmp_path))
    assert str(e.value) == "%s is not an OCI image layout (it needs oci-layout and index.json)" % tmp_path


# ---- push_blob: one resume after a transport hiccup, never a second POST for one failure ----------------------

class _State(object):
    def __init__(self):
        self.rec = None

    def load(self, registry, repository, digest):
        return self.rec


class _Reg(object):
    host = "registry.site:5000"


def _reset():
    try:
        raise ConnectionResetError(104, "Connection reset by peer")
    except OSError as e:
        raise OnpremError("cannot talk to https://registry.site:5000: %s" % e, kind="unreachable") from e


def _push(state, steps):
    from ansible_collections.llmops.onprem.plugins.module_utils import _retry
    from ansible_collections.llmops.onprem.plugins.modules.oci_mirror import push_blob
    calls = []

    def upload(reg, st, repository, digest, size, path, chunk_size, stop, on_bytes):
        calls.append(1)
        return steps.pop(0)()

    u = dict(repository="r", digest="sha256:" + "e" * 64, size=10)
    result = push_blob(_Reg(), state, u, "/blob", 1 << 20, None, None, upload=upload,
                       tries=_retry.Retry("PUT", 2, sleep=lambda s: None))
    return result, calls


def test_push_blob_resumes_once_after_a_reset_that_came_after_recorded_progress():
    state = _State()

    def progressed_then_reset():
        state.rec = dict(location="/v2/r/blobs/uploads/u1", offset=4)
        _reset()

    assert _push(state, [progressed_then_reset, lambda: (6, 4)]) == ((6, 4), [1, 1])


def test_push_blob_does_not_try_again_when_the_failure_recorded_nothing():
    # The POST that opens the upload session failed (or its answer was lost): a second try would POST again.
    with pytest.raises(OnpremError, match="reset by peer"):
        _push(_State(), [_reset, lambda: (10, None)])


def test_push_blob_gives_up_after_two_tries_and_on_a_non_transient_error():
    state = _State()
    n = [0]

    def progressed_then_reset():
        n[0] += 1
        state.rec = dict(location="/v2/r/blobs/uploads/u1", offset=n[0])
        _reset()

    with pytest.raises(OnpremError, match="reset by peer"):
        _push(state, [progressed_then_reset, progressed_then_reset, lambda: (1, None)])

    def progressed_then_refused_status():
        state.rec = dict(location="/v2/r/blobs/uploads/u2", offset=9)
        raise OnpremError("PATCH /v2/r/blobs/uploads/u2 on registry.site:5000: HTTP 400", status=400)

    with pytest.raises(OnpremError, match="HTTP 400"):
        _push(state, [progressed_then_refused_status, lambda: (1, None)])


def test_report_is_what_check_mode_returns_for_a_plan():
    from ansible_collections.llmops.onprem.plugins.modules.oci_mirror import report
    a = img("x.io/a:1", "x.io/a", "sha256:ma", {"base": 100})
    b = img("x.io/b:1", "x.io/b", "sha256:mb", {"base": 100, "b": 20})
    current = {a["target"]: "sha256:ma", b["target"]: None}
    r = report([a, b], current, plan([a, b], current, {}), True, "reg")
    assert r["changed"] and r["registry_checked"] and "msg" not in r
    assert [(i["source"], i["action"], i["bytes"]) for i in r["images"]] == [("x.io/a:1", "none", 0), ("x.io/b:1", "push", 20)]
    assert (r["bytes_total"], r["bytes_moved"], r["blobs_uploaded"], r["blobs_mounted"], r["blobs_present"]) == (20, 0, 1, 1, 0)
    assert r["diff"] == dict(before=dict(images=[a["target"]]), after=dict(images=[a["target"], b["target"]]))


def test_report_without_a_registry_says_the_prediction_is_from_the_bundle():
    from ansible_collections.llmops.onprem.plugins.modules.oci_mirror import report
    a = img("x.io/a:1", "x.io/a", "sha256:ma", {"base": 100})
    r = report([a], {a["target"]: None}, plan([a], {a["target"]: None}, {}), False, "registry.site.example:5000")
    assert r["changed"] and not r["registry_checked"]
    assert r["msg"] == ("check mode: the registry registry.site.example:5000 does not answer yet, so the prediction comes "
                        "from the bundle alone (every image pushed); a real run needs the registry")


@pytest.mark.parametrize("parallel, chunk", [(0, 128), (4, 0)])
def test_gather_refuses_bad_numbers_before_reading_anything(parallel, chunk, tmp_path):
    from ansible_collections.llmops.onprem.plugins.modules.oci_mirror import gather
    p = dict(registry="registry.site.example:5000", parallel=parallel, chunk_size=chunk, layout=str(tmp_path / "none"))
    with pytest.raises(OnpremError) as e:
        gather(p, check_mode=True)
    assert str(e.value) == "parallel (%d) and chunk_size (%d MiB) must be at least 1" % (parallel, chunk)
