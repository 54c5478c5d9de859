"""checkpoint_store_verify against a fake store: every problem named (missing, resized, corrupt, another manifest, a
digest the stage did not record), extra objects listed but not a problem, and a clean prefix ok."""
import hashlib

import pytest

from ansible_collections.llmops.onprem.plugins.module_utils import _checkpoint
from ansible_collections.llmops.onprem.plugins.module_utils._s3_endpoint import OnpremError
from ansible_collections.llmops.onprem.plugins.modules import checkpoint_store_verify as mod

FILES = {"config.json": b'{"a": 1}', "model.safetensors": b"\0" * 64, "tokenizer.json": b"{}"}


def manifest(files=None):
    files = FILES if files is None else files
    return _checkpoint.build_manifest("demo", [dict(path=k, size=len(v), sha256=hashlib.sha256(v).hexdigest())
                                               for k, v in sorted(files.items())])


class FakeStore(object):
    def __init__(self, objects):
        self.objects = objects

    def list(self):
        return dict((k, len(v)) for k, v in self.objects.items())

    def get_bytes(self, rel):
        return self.objects.get(rel)

    def read_back(self, files):
        return [f["path"] for f in files if hashlib.sha256(self.objects[f["path"]]).hexdigest() != f["sha256"]]


def params(**kw):
    p = dict(endpoint_url="http://127.0.0.1:1", access_key="a", secret_key="s", region="us-east-1", ca_path=None, timeout=5,
             bucket="model-checkpoints", prefix="demo/abc", manifest=None, digest=None, parallel=4, fail_on_problems=False)
    p.update(kw)
    return p


def run(objects, **kw):
    return mod.run(params(**kw), store_factory=lambda *a, **k: FakeStore(objects))


def stored(files=None, extra=None):
    out = dict(FILES if files is None else files)
    out[_checkpoint.MANIFEST_KEY] = _checkpoint.canonical_bytes(manifest())
    out.update(extra or {})
    return out


def test_a_clean_prefix_is_ok_and_every_object_was_read_back():
    r = run(stored(extra={"notes.txt": b"x", ".llmops/other": b"y"}), digest=_checkpoint.manifest_digest(manifest()))
    assert (r["ok"], r["files"], r["checked"], r["problems"], r["extra"]) == (True, 3, 3, [], ["notes.txt"])
    assert r["bytes"] == sum(len(v) for v in FILES.values())


def test_a_changed_object_of_the_same_size_is_found_by_its_bytes():
    objects = stored()
    objects["config.json"] = b'{"a": 2}'
    r = run(objects)
    assert r["ok"] is False and r["corrupt"] == ["config.json"]
    assert r["problems"] == ["1 of 3 object(s) in s3://model-checkpoints/demo/abc hold other bytes than the manifest says "
                             "(sha256 of the bytes read back): config.json"]


def test_missing_resized_another_manifest_and_digest_are_each_named(tmp_path):
    objects = stored()
    del objects["tokenizer.json"]
    objects["model.safetensors"] = b"\0" * 10
    local = tmp_path / "m.json"
    other = manifest(dict(FILES, **{"config.json": b'{"b": 1}'}))
    local.write_bytes(_checkpoint.canonical_bytes(other))
    r = run(objects, manifest=str(local), digest="0" * 64)
    text = "\n".join(r["problems"])
    assert "the manifest in s3://model-checkpoints/demo/abc is not the bundle's (%s)" % local in text
    assert "the manifest of s3://model-checkpoints/demo/abc has digest %s, the checkpoints stage recorded %s" % (
        _checkpoint.manifest_digest(other), "0" * 64) in text
    assert "1 of 3 file(s) are missing from s3://model-checkpoints/demo/abc: tokenizer.json" in text
    assert "1 of 3 object(s) in s3://model-checkpoints/demo/abc have another size than the manifest says: model.safetensors" in text
    assert "config.json" in r["corrupt"]  # checked against the bundle's manifest, not the store's


def test_a_prefix_without_its_manifest_says_the_sync_never_finished():
    r = run(dict(FILES))
    assert r["ok"] is False and r["files"] == 0
    assert r["problems"] == ["s3://model-checkpoints/demo/abc has no manifest (.llmops/manifest.json): the checkpoints stage "
                             "writes it last, so the sync never finished"]


def test_an_empty_prefix_is_refused_before_anything_is_read():
    with pytest.raises(OnpremError, match="prefix '/' must name a key prefix"):
        mod.run(params(prefix="/"), store_factory=lambda *a, **k: pytest.fail("no store may be opened"))
