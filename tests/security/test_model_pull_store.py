"""model-pull (the serving pod's init container) against a hostile object store and a hostile node cache
(issue 14 items 8, 10 and 11): reads are bounded by the manifest, a longer or shorter object is corrupt
(exit 5), manifest paths follow the collection's one rule, and nothing in the cache is followed through a
link. Each test builds its store and cache from scratch and runs the real program."""
import hashlib
import os

import pytest

from conftest import PEAK_MEMORY_LIMIT, ROOT, run_measured, snapshot
from hostile_store import HostileStore, Obj

from ansible_collections.llmops.onprem.plugins.module_utils import _checkpoint

MODEL_PULL = os.path.join(ROOT, "serving", "model-pull", "model_pull.py")
BUCKET, PREFIX = "models", "demo/v1"
HUGE = 512 << 20
CONFIG = b'{"model_type": "demo"}\n'


def entry(path, data):
    return dict(path=path, size=len(data), sha256=hashlib.sha256(data).hexdigest())


def manifest_of(files, check=True):
    """The manifest dict and its digest; check=False keeps an invalid one (for the path rule)."""
    m = dict(schema=_checkpoint.SCHEMA, name="demo", files=files)
    if check:
        m = _checkpoint.build_manifest("demo", files)
    return m, hashlib.sha256(_checkpoint.canonical_bytes(m)).hexdigest()


def store_with(manifest, objects):
    objs = {"%s/%s" % (PREFIX, _checkpoint.MANIFEST_KEY): Obj(data=_checkpoint.canonical_bytes(manifest))}
    objs.update(("%s/%s" % (PREFIX, k), v) for k, v in objects.items())
    return HostileStore(objs, bucket=BUCKET)


def pull(store, digest, cache):
    """Run model_pull.py as its own program in a measured child: (exit code, stdout + stderr, peak RSS)."""
    argv = ["model-pull", "--endpoint", store.url, "--bucket", BUCKET, "--prefix", PREFIX, "--model", "demo",
            "--digest", digest, "--cache-root", cache, "--parallel", "4"]
    code = "import runpy, sys\nsys.argv = %r\nrunpy.run_path(%r, run_name='__main__')\n" % (argv, MODEL_PULL)
    proc, peak = run_measured(code, env=dict(AWS_ACCESS_KEY_ID="AKIDEXAMPLE", AWS_SECRET_ACCESS_KEY="x" * 40),
                              timeout=120)
    return proc.returncode, proc.stdout + proc.stderr, peak


@pytest.fixture
def world(tmp_path):
    """A cache under tmp_path and a sibling directory that stands for the rest of the node."""
    outside = tmp_path / "node"
    outside.mkdir()
    (outside / "shadow").write_bytes(b"root:secret\n")
    (outside / "etc").mkdir()
    (outside / "etc" / "hosts").write_bytes(b"127.0.0.1 localhost\n")
    return tmp_path / "cache", outside


def corrupt_text(path, size, what):
    return ("model-pull: ERROR: s3://%s/%s/%s: the object store answered %s, but the manifest says %s is %d bytes: the "
            "object is corrupt or was replaced; nothing past the manifest's size was read. Repair it with the "
            "checkpoints stage and checkpoints_read_back: true (it re-uploads objects whose bytes differ)"
            % (BUCKET, PREFIX, path, what, path, size))


@pytest.mark.parametrize("content_length", [True, False], ids=["with-length", "close-delimited"])
def test_a_zero_byte_entry_whose_object_is_512_mib_is_corrupt_and_costs_no_memory(world, content_length):
    cache, outside = world
    before = snapshot(str(outside))
    manifest, digest = manifest_of([entry("config.json", CONFIG), entry("generation_config.json", b"")])
    store = store_with(manifest, {"config.json": Obj(data=CONFIG),
                                  "generation_config.json": Obj(size=HUGE, content_length=content_length)})
    try:
        rc, out, peak = pull(store, digest, str(cache))
    finally:
        store.stop()
    what = "an object of %d bytes" % HUGE if content_length else "more bytes than asked for (bytes 0--1)"
    assert rc == 5, out
    assert corrupt_text("generation_config.json", 0, what) in out
    assert peak < PEAK_MEMORY_LIMIT, "peak RSS %d MiB" % (peak >> 20)
    assert store.bytes_sent < HUGE // 2, "model-pull read %d bytes of a 0-byte file" % store.bytes_sent
    assert not os.path.exists(os.path.join(str(cache), "demo", digest, "generation_config.json"))
    assert snapshot(str(outside)) == before


@pytest.mark.parametrize("content_length", [True, False], ids=["with-length", "close-delimited"])
def test_an_object_shorter_than_its_entry_is_corrupt_not_unreachable(world, content_length):
    cache, outside = world
    before = snapshot(str(outside))
    weights = os.urandom(1000)
    manifest, digest = manifest_of([entry("config.json", CONFIG), entry("model.safetensors", weights)])
    store = store_with(manifest, {"config.json": Obj(data=CONFIG),
                                  "model.safetensors": Obj(data=weights[:10], content_length=content_length)})
    try:
        rc, out, _peak = pull(store, digest, str(cache))
    finally:
        store.stop()
    what = "an object of 10 bytes" if content_length else "a body that ended after 10 bytes (from offset 0)"
    assert rc == 5, out
    assert corrupt_text("model.safetensors", 1000, what) in out
    assert "cannot connect" not in out
    assert snapshot(str(outside)) == before


def test_an_oversized_object_of_a_sized_entry_is_corrupt_and_bounded(world):
    cache, outside = world
    before = snapshot(str(outside))
    weights = os.urandom(4096)
    manifest, digest = manifest_of([entry("model.safetensors", weights)])
    store = store_with(manifest, {"model.safetensors": Obj(size=HUGE, content_length=False)})
    try:
        rc, out, peak = pull(store, digest, str(cache))
    finally:
        store.stop()
    assert rc == 5, out
    # The first 4096 bytes are read (zeros, not the weights); the 4097th is one too many.
    assert corrupt_text("model.safetensors", 4096, "more bytes than asked for (bytes 0-4095)") in out
    assert peak < PEAK_MEMORY_LIMIT, "peak RSS %d MiB" % (peak >> 20)
    assert snapshot(str(outside)) == before


# The one path rule (plugins/module_utils/_paths.py path_problem, the import's, plus _checkpoint.py's dot-file
# rule), which model-pull ships in its image: each bad path with the words of the refusal.
BAD_PATHS = [
    ("../x", "has a '..' component (only plain names may appear)"),
    ("a/../../x", "has a '..' component (only plain names may appear)"),
    ("/etc/passwd", "is absolute (manifest paths are relative to the bundle)"),
    ("a/./b", "has a '.' component (only plain names may appear)"),
    ("a//b", "has an empty component (a doubled or trailing '/')"),
    ("a\\b", "holds a backslash (paths use '/')"),
    (".gitattributes", "names a dot-file or dot-directory, which is not part of a checkpoint (rebuild the bundle)"),
    (".cache/x", "names a dot-file or dot-directory, which is not part of a checkpoint (rebuild the bundle)"),
]


@pytest.mark.parametrize("path,why", BAD_PATHS, ids=[p for p, _w in BAD_PATHS])
def test_model_pull_refuses_each_path_the_collection_refuses(world, path, why):
    cache, outside = world
    before = snapshot(str(outside))
    assert _checkpoint.relative_path_problem(path) == why
    manifest, digest = manifest_of([entry(path, CONFIG)], check=False)
    store = store_with(manifest, {path.lstrip("/"): Obj(data=CONFIG)})
    try:
        rc, out, _peak = pull(store, digest, str(cache))
    finally:
        store.stop()
    assert rc == 5, out
    assert ("model-pull: ERROR: the manifest at s3://%s/%s/%s is not a valid checkpoint manifest: files[0].path %r %s; "
            "nothing was written to the node cache" % (BUCKET, PREFIX, _checkpoint.MANIFEST_KEY, path, why)) in out
    assert os.listdir(os.path.join(str(cache), "demo", digest)) == []
    assert snapshot(str(outside)) == before


def test_duplicate_entries_are_refused(world):
    cache, outside = world
    before = snapshot(str(outside))
    files = [entry("config.json", CONFIG), entry("config.json", b"{}")]
    manifest, digest = manifest_of(files, check=False)
    store = store_with(manifest, {"config.json": Obj(data=CONFIG)})
    try:
        rc, out, _peak = pull(store, digest, str(cache))
    finally:
        store.stop()
    assert rc == 5, out
    assert "files[1].path 'config.json' appears twice; nothing was written to the node cache" in out
    assert snapshot(str(outside)) == before


def good_store():
    weights = os.urandom(3000)
    files = {"config.json": CONFIG, "sub/model.safetensors": weights}
    manifest, digest = manifest_of([entry(p, d) for p, d in files.items()])
    return store_with(manifest, dict((p, Obj(data=d)) for p, d in files.items())), digest, files


def test_links_seeded_in_the_cache_are_replaced_not_followed(world):
    """config.json, sub/ and a .part planted as links to the rest of the node: the pull removes them and writes real
    files; the files they pointed at are untouched."""
    cache, outside = world
    store, digest, files = good_store()
    dest = os.path.join(str(cache), "demo", digest)
    os.makedirs(dest)
    os.symlink(str(outside / "shadow"), os.path.join(dest, "config.json"))
    os.symlink(str(outside / "etc"), os.path.join(dest, "sub"))
    os.symlink(str(outside / "shadow"), os.path.join(dest, "config.json.part"))
    os.symlink(str(outside / "shadow"), os.path.join(dest, ".llmops-verified.json.tmp"))
    before = snapshot(str(outside))
    try:
        rc, out, _peak = pull(store, digest, str(cache))
    finally:
        store.stop()
    assert rc == 0, out
    for path, data in files.items():
        full = os.path.join(dest, path)
        assert not os.path.islink(full) and not os.path.islink(os.path.dirname(full))
        with open(full, "rb") as fh:
            assert fh.read() == data
    assert "removing the symbolic link %s from the cache (fetching the file instead)" % os.path.join(dest, "config.json") in out
    assert snapshot(str(outside)) == before
    assert (outside / "shadow").read_bytes() == b"root:secret\n"


@pytest.mark.parametrize("where", ["model", "version"])
def test_a_link_in_place_of_the_model_or_version_directory_is_refused(world, where):
    cache, outside = world
    store, digest, _files = good_store()
    os.makedirs(str(cache))
    if where == "model":
        link, what = os.path.join(str(cache), "demo"), "model's directory"
    else:
        os.makedirs(os.path.join(str(cache), "demo"))
        link, what = os.path.join(str(cache), "demo", digest), "checkpoint version's directory"
    os.symlink(str(outside / "etc"), link)
    before = snapshot(str(outside))
    try:
        rc, out, _peak = pull(store, digest, str(cache))
    finally:
        store.stop()
    assert rc == 5, out
    assert ("model-pull: ERROR: the node cache holds a symbolic link at %s (to %s) where the %s should be: refused "
            "(model-pull never creates links; remove it from the node)" % (link, outside / "etc", what)) in out
    assert snapshot(str(outside)) == before
    assert store.requests == []
