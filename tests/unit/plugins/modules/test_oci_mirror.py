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
