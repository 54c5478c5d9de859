"""Issue 14 items 5 and 6: whatever the media holds, the import's memory stays bounded and it never
reads past a signed size. A 512 MiB (sparse) file in place of a 10-byte one is refused at the
listing, before a byte of it is read; a segment whose first header is a 256 MiB PAX header is
refused at that header. Peak RSS of the importing process is measured (< 128 MiB)."""
import hashlib
import io
import json
import tarfile

import pytest

from conftest import PEAK_MEMORY_LIMIT, snapshot
from importcase import Case, import_, import_measured
from ansible_collections.llmops.onprem.plugins.module_utils import _bundle as B

MiB = 1024 * 1024


def test_oversized_file_in_a_bundle_directory_is_refused_before_reading(tmp_path):
    case = Case(tmp_path)
    case.seal()
    target = case.root / "models/tiny/model.safetensors"  # 10 bytes in the signed manifest
    with open(str(target), "wb") as f:
        f.truncate(512 * MiB)  # sparse: costs the test nothing
    before = snapshot(str(tmp_path))
    out, peak = import_measured(case.root, case.pub, case.dest)
    assert out == ("REFUSED: models/tiny/model.safetensors is %d bytes on the media, the signed manifest says 10: the file was "
                   "replaced or damaged. Refusing the bundle; nothing was installed" % (512 * MiB))
    assert peak < PEAK_MEMORY_LIMIT, peak
    assert snapshot(str(tmp_path)) == before and not case.dest.exists()


def test_oversized_segment_is_refused_before_reading(tmp_path):
    case = Case(tmp_path)
    case.seal()
    case.pack()
    seg = case.media / B.segment_name(0)
    size = seg.stat().st_size
    with open(str(seg), "r+b") as f:
        f.truncate(size + 512 * MiB)
    before = snapshot(str(tmp_path))
    res, err = import_(case.media, case.pub, case.dest)
    assert err == ("segment %s is %d bytes on the media, segments.json says %d: the file was replaced or damaged. "
                   "Refusing the bundle; nothing was installed" % (seg.name, size + 512 * MiB, size))
    assert snapshot(str(tmp_path)) == before and not case.dest.exists()


def pax_bomb_media(case, segment_size):
    """Signed media declaring one file that fills a `segment_size` segment (what a real bundle with a
    large model holds), whose segment was replaced by one PAX header as large as the segment."""
    member_size = segment_size - 3 * B.TAR_BLOCK - B.TAR_RECORD
    entry = {"path": "models/big/model.safetensors", "size": member_size, "sha256": "0" * 64}
    msha = case.signed_manifest(case.media, [entry])
    seg = case.media / B.segment_name(0)
    ti = tarfile.TarInfo("././@PaxHeader")
    ti.type, ti.size = tarfile.XHDTYPE, segment_size - B.TAR_BLOCK
    with open(str(seg), "wb") as f:
        f.write(ti.tobuf(tarfile.USTAR_FORMAT))
        f.write(b"%d path=" % (segment_size - B.TAR_BLOCK))
        f.truncate(segment_size)  # sparse
    member = dict(entry, name=entry["path"], part=0, parts=0, offset=0)
    case.signed_segments(case.media, msha, [{"name": seg.name, "size": segment_size, "sha256": "0" * 64, "members": [member]}])
    return seg


def test_segment_holding_one_huge_pax_header_is_refused_with_bounded_memory(tmp_path):
    case = Case(tmp_path)
    seg = pax_bomb_media(case, 256 * MiB)
    before = snapshot(str(tmp_path))
    out, peak = import_measured(case.media, case.pub, case.dest)
    assert out == ("REFUSED: segment %s holds a PAX header of %d bytes (the import reads at most 65536) at byte 0: bundle_pack "
                   "never writes that, so the segment was replaced or damaged. Refusing the bundle; nothing was installed"
                   % (seg.name, 256 * MiB - 512))
    assert peak < PEAK_MEMORY_LIMIT, peak
    # nothing outside the destination changed; inside it, nothing but the import's empty state folder
    after = snapshot(str(tmp_path))
    assert {k: v for k, v in after.items() if not k.startswith("dest")} == before
    assert sorted(k for k in after if k.startswith("dest")) == ["dest", "dest/.llmops-import"]


@pytest.mark.parametrize("kind", ["gnu-long-name", "symlink"])
def test_gnu_long_name_and_link_members_are_refused(tmp_path, kind):
    case = Case(tmp_path)
    name = "models/m/" + ("x" * 200 if kind == "gnu-long-name" else "config.json")
    case.media_with_members([(name, b"data")])
    seg = case.media / B.segment_name(0)
    # the same member rewritten: in GNU format its long name travels in a GNU 'L' entry; or as a link
    with tarfile.open(str(seg), "w", format=tarfile.GNU_FORMAT) as tar:
        ti = tarfile.TarInfo(name)
        ti.mtime = 0
        if kind == "symlink":
            ti.type, ti.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(ti)
        else:
            ti.size = 4
            tar.addfile(ti, io.BytesIO(b"data"))
    data = seg.read_bytes()
    table = json.loads((case.media / B.SEGMENTS).read_text())
    table["segments"][0].update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    case.write_signed(case.media, B.SEGMENTS, B.SEGMENTS_SIG, table)
    before = snapshot(str(tmp_path))
    res, err = import_(case.media, case.pub, case.dest)
    assert err == ("segment bundle-0001.tar holds a tar entry of type %r (only regular files and PAX headers are read) at byte 0: "
                   "bundle_pack never writes that, so the segment was replaced or damaged. Refusing the bundle; nothing was installed"
                   % ("L" if kind == "gnu-long-name" else "2"))
    after = snapshot(str(tmp_path))
    assert {k: v for k, v in after.items() if not k.startswith("dest")} == before
    assert sorted(k for k in after if k.startswith("dest")) == ["dest", "dest/.llmops-import"]
