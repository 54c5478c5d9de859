"""module_utils/_files.py: the one file hash and the one atomic write, and the guard that keeps them one."""
import errno
import hashlib
import io
import os
import re
import stat

import pytest

from ansible_collections.llmops.onprem.plugins.module_utils import _files as F

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))


def test_sha256_file_reads_in_blocks_and_reports_progress(tmp_path):
    data = os.urandom(10000) + b"x" * 5
    p = tmp_path / "f"
    p.write_bytes(data)
    seen = []
    assert F.sha256_file(str(p), block=4096, progress=seen.append) == hashlib.sha256(data).hexdigest()
    assert seen == [4096, 4096, 1813]
    assert F.sha256_file(str(p)) == hashlib.sha256(data).hexdigest()


def test_sha256_file_of_an_empty_file(tmp_path):
    p = tmp_path / "empty"
    p.write_bytes(b"")
    assert F.sha256_file(str(p), size=0) == hashlib.sha256(b"").hexdigest()


def test_sha256_file_with_an_expected_size_reads_no_more_than_size_plus_one(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"a" * 100)
    assert F.sha256_file(str(p), block=7, size=100) == hashlib.sha256(b"a" * 100).hexdigest()
    seen = []
    with pytest.raises(F.SizeMismatch, match=r"f is more than 10 bytes, expected 10") as e:
        F.sha256_file(str(p), block=4, size=10, progress=seen.append)
    assert e.value.actual == 11 and sum(seen) == 11
    with pytest.raises(F.SizeMismatch, match=r"f is 100 bytes, expected 200"):
        F.sha256_file(str(p), size=200)


def test_sha256_file_of_an_endless_source_is_bounded_by_the_size():
    # /dev/zero never ends: with an expected size, the read stops one byte past it.
    with pytest.raises(F.SizeMismatch) as e:
        F.sha256_file("/dev/zero", block=1 << 16, size=1 << 20)
    assert e.value.actual == (1 << 20) + 1


def test_sha256_file_follow_false_refuses_a_link(tmp_path):
    (tmp_path / "target").write_bytes(b"secret")
    os.symlink(str(tmp_path / "target"), str(tmp_path / "link"))
    assert F.sha256_file(str(tmp_path / "link")) == hashlib.sha256(b"secret").hexdigest()
    with pytest.raises(OSError) as e:
        F.sha256_file(str(tmp_path / "link"), follow=False)
    assert e.value.errno == errno.ELOOP


def test_sha256_fileobj_hashes_from_the_position_on():
    fh = io.BytesIO(b"headerbody")
    fh.seek(6)
    assert F.sha256_fileobj(fh) == hashlib.sha256(b"body").hexdigest()


def test_write_atomic_writes_with_the_mode_and_leaves_no_temporary_file(tmp_path):
    p = tmp_path / "out.json"
    F.write_atomic(str(p), b"one", mode=0o600)
    assert p.read_bytes() == b"one" and stat.S_IMODE(p.stat().st_mode) == 0o600
    F.write_atomic(str(p), b"two")
    assert p.read_bytes() == b"two" and stat.S_IMODE(p.stat().st_mode) == 0o644
    assert sorted(os.listdir(str(tmp_path))) == ["out.json"]


def test_write_atomic_mode_none_follows_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        F.write_atomic(str(tmp_path / "p"), b"x", mode=None, fsync=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "p").stat().st_mode) == 0o600


def test_write_atomic_replaces_links_never_writes_through_them(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    os.symlink(str(victim), str(tmp_path / "out"))
    os.symlink(str(victim), str(tmp_path / "out.tmp"))
    F.write_atomic(str(tmp_path / "out"), b"new")
    assert victim.read_bytes() == b"keep"
    assert not os.path.islink(str(tmp_path / "out")) and (tmp_path / "out").read_bytes() == b"new"
    assert not os.path.lexists(str(tmp_path / "out.tmp"))


def test_write_atomic_copies_a_file_object_with_its_own_suffix(tmp_path):
    (tmp_path / "a.tmp").write_bytes(b"a checkpoint file named like a temporary one")
    F.write_atomic(str(tmp_path / "a"), io.BytesIO(b"z" * 100000), suffix=".llmops-tmp")
    assert (tmp_path / "a").read_bytes() == b"z" * 100000
    assert (tmp_path / "a.tmp").read_bytes() == b"a checkpoint file named like a temporary one"
    assert sorted(os.listdir(str(tmp_path))) == ["a", "a.tmp"]


def test_write_atomic_failure_leaves_the_old_file_and_no_temporary(tmp_path):
    p = tmp_path / "out"
    p.write_bytes(b"old")

    class Broken(object):
        def read(self, n=-1):
            raise IOError("source went away")

    with pytest.raises(IOError, match="source went away"):
        F.write_atomic(str(p), Broken())
    assert p.read_bytes() == b"old"
    assert sorted(os.listdir(str(tmp_path))) == ["out"]


def test_write_atomic_into_a_missing_folder_fails_without_leftovers(tmp_path):
    with pytest.raises(OSError) as e:
        F.write_atomic(str(tmp_path / "nope" / "out"), b"x")
    assert e.value.errno == errno.ENOENT
    assert os.listdir(str(tmp_path)) == []


def _python_sources(*tops):
    for top in tops:
        for d, _dirs, files in os.walk(os.path.join(ROOT, top)):
            for name in files:
                if name.endswith(".py"):
                    yield os.path.join(d, name)


@pytest.mark.parametrize("helper", ["sha256_file", "write_atomic"])
def test_each_file_helper_is_defined_once(helper):
    """issue 13: no helper is written twice. _files.py is the one sha256_file and write_atomic of plugins/ and of
    the model-pull image (which ships _files.py); a second definition anywhere there fails this test. The progress
    writer's write_atomic is a two-line call of _files.write_atomic (its own mode and fsync), kept for its tests."""
    allowed = {"sha256_file": {"plugins/module_utils/_files.py"},
               "write_atomic": {"plugins/module_utils/_files.py", "plugins/module_utils/_progress.py"}}[helper]
    found = set()
    # Any sha256_file, a method too; a module-level write_atomic (DestDir.write_atomic is a method over write_atomic_at).
    pattern = re.compile((r"^\s*def %s\(" if helper == "sha256_file" else r"^def %s\(") % helper, re.M)
    for path in _python_sources("plugins", os.path.join("serving", "model-pull")):
        with open(path, encoding="utf-8") as fh:
            if pattern.search(fh.read()):
                found.add(os.path.relpath(path, ROOT).replace(os.sep, "/"))
    assert found - allowed == set(), "a second %s: use plugins/module_utils/_files.py instead" % helper
    assert "plugins/module_utils/_files.py" in found
