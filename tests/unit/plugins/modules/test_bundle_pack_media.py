"""bundle_pack on a real medium's terms: the free space it needs is computed exactly and checked before a
byte is written, and the read-back drops each segment from the page cache before hashing it, so that a
segment the medium lost is caught. (The real small file systems - tmpfs, exFAT - are in
tests/integration/bundle/test_media.py.)"""
import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ansible_collections.llmops.onprem.plugins.module_utils import _bundle as B
from ansible_collections.llmops.onprem.plugins.module_utils import _files
from ansible_collections.llmops.onprem.plugins.modules import bundle_pack, bundle_seal

SEG = "256KiB"


@pytest.fixture
def sealed(tmp_path):
    k = ed25519.Ed25519PrivateKey.generate()
    priv = tmp_path / "k.pem"
    priv.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    root = tmp_path / "bundle"
    files = {
        "images/blobs/sha256/big": os.urandom(700 * 1024),  # split into parts
        "images/blobs/sha256/small": os.urandom(100 * 1024 + 3),
        "models/m/config.json": b'{"a": 1}',
        "charts/c/Chart.yaml": b"name: c\n",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    bundle_seal.run(dict(path=str(root), private_key=str(priv), spec={}, versions={}, images=[]), False)
    return dict(root=root, priv=str(priv), tmp=tmp_path)


def pack(sealed, dest, check=False, read_back=True):
    return bundle_pack.run(dict(src=str(sealed["root"]), dest=str(dest), private_key=sealed["priv"], segment_size=SEG,
                                read_back=read_back, progress_file=None), check)


def units(n, block):
    return (n + block - 1) // block * block


def free_space(monkeypatch, free, calls=None):
    real = B.fs_space

    def fake(path):
        if calls is not None:
            calls.append(path)
        return free, real(path)[1]
    monkeypatch.setattr(bundle_pack, "fs_space", fake)


def test_planned_segment_sizes_are_the_written_sizes(sealed, tmp_path):
    res = pack(sealed, tmp_path / "media")
    assert len(res["segments"]) >= 4 and res["split_files"] == ["images/blobs/sha256/big"]
    data, manifest = B.read_json(str(sealed["root"] / "manifest.json"), "manifest")
    assert B.segment_sizes(B.plan_segments(manifest, B.parse_size(SEG))) == [s["size"] for s in res["segments"]]


def test_space_needed_is_what_the_pack_takes(sealed, tmp_path, monkeypatch):
    """The need computed for an empty medium is exactly the allocation units of the files the pack leaves
    there, plus the new folder: one byte less free space and the pack is refused, that much and it passes."""
    dest = tmp_path / "media"
    block = B.fs_space(str(tmp_path))[1]
    seen = []
    free_space(monkeypatch, 10 ** 12, seen)
    pack(sealed, tmp_path / "probe")
    written = sum(units(os.path.getsize(str(p)), block) for p in (tmp_path / "probe").iterdir())
    need = written + block
    free_space(monkeypatch, need - 1)
    with pytest.raises(B.BundleError) as e:
        pack(sealed, dest)
    assert str(e.value) == ("not enough space in %s: the pack needs %s (%d bytes) more, the file system has %s (%d bytes) free. "
                            "Use a larger medium or free space on it; nothing was written"
                            % (dest, B.human(need), need, B.human(need - 1), need - 1))
    assert not dest.exists()
    with pytest.raises(B.BundleError, match="not enough space"):
        pack(sealed, dest, check=True)  # check mode predicts the refusal
    free_space(monkeypatch, need)
    assert pack(sealed, dest)["changed"] is True
    assert sorted(os.listdir(str(dest))) == sorted(os.listdir(str(tmp_path / "probe")))


def test_a_complete_pack_needs_no_space(sealed, tmp_path, monkeypatch):
    dest = tmp_path / "media"
    pack(sealed, dest)
    free_space(monkeypatch, 0)
    res = pack(sealed, dest)
    assert res["changed"] is False


def test_segments_already_there_give_their_room_back(sealed, tmp_path, monkeypatch):
    """An interrupted pack (segments there, no segments.json): each segment is written beside the old one
    and renamed over it, so the need is the largest segment plus the tables, not the whole pack again."""
    dest = tmp_path / "media"
    pack(sealed, dest)
    block = B.fs_space(str(dest))[1]
    sizes = {n: os.path.getsize(str(dest / n)) for n in os.listdir(str(dest))}
    tables = [n for n in sizes if not n.startswith("bundle-")]
    for n in tables:
        os.unlink(str(dest / n))
    # each segment replaces its old copy (peak: the largest one written beside its old copy); then the tables
    need = max(max(units(z, block) for n, z in sizes.items() if n.startswith("bundle-")), sum(units(sizes[n], block) for n in tables))
    free_space(monkeypatch, need - 1)
    with pytest.raises(B.BundleError, match=r"the pack needs .* \(%d bytes\) more, the file system has" % need):
        pack(sealed, dest)
    assert sorted(os.listdir(str(dest))) == sorted(n for n in sizes if n.startswith("bundle-"))
    free_space(monkeypatch, need)
    assert pack(sealed, dest)["changed"] is True


def test_read_back_drops_each_segment_from_the_page_cache(sealed, tmp_path, monkeypatch):
    calls = []
    real = os.posix_fadvise

    def record(fd, offset, length, advice):
        calls.append((os.path.basename(os.readlink("/proc/self/fd/%d" % fd)), offset, length, advice))
        return real(fd, offset, length, advice)
    monkeypatch.setattr(os, "posix_fadvise", record)
    res = pack(sealed, tmp_path / "media")
    names = [s["name"] for s in res["segments"]]
    assert calls == [(n, 0, 0, os.POSIX_FADV_DONTNEED) for n in names]
    del calls[:]
    assert pack(sealed, tmp_path / "media")["changed"] is False  # a re-run reads back from the medium too
    assert calls == [(n, 0, 0, os.POSIX_FADV_DONTNEED) for n in names]
    del calls[:]
    pack(sealed, tmp_path / "other", read_back=False)
    assert calls == []


def test_a_segment_the_medium_lost_fails_the_read_back(sealed, tmp_path, monkeypatch):
    """The medium changes a byte of bundle-0002.tar after it was written (the test does it behind the
    module's back): the read-back reads the medium, sees it, and no segments.json is written."""
    real = bundle_pack.write_segment

    def write_then_lose(path, src_root, members, progress=None):
        out = real(path, src_root, members, progress)
        if path.endswith("bundle-0002.tar"):
            with open(path, "r+b") as f:
                f.seek(3000)
                b = f.read(1)
                f.seek(3000)
                f.write(bytes([b[0] ^ 0xFF]))
        return out
    monkeypatch.setattr(bundle_pack, "write_segment", write_then_lose)
    dest = tmp_path / "media"
    with pytest.raises(B.BundleError, match=r"^read-back of bundle-0002.tar gives sha256 [0-9a-f]{64}, but [0-9a-f]{64} was "
                                            r"written: the medium is failing; use another one$"):
        pack(sealed, dest)
    assert not (dest / "segments.json").exists() and not (dest / "manifest.json").exists()


def test_sha256_stored_flushes_and_advises(tmp_path, monkeypatch):
    p = tmp_path / "f"
    p.write_bytes(b"abc")
    seen = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (seen.append("fsync"), real_fsync(fd)))
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, o, n, a: seen.append(("fadvise", o, n, a)))
    assert _files.sha256_stored(str(p)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert seen == ["fsync", ("fadvise", 0, 0, os.POSIX_FADV_DONTNEED)]
