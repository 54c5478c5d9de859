"""One bundle spread over several media (issue 19 item 10): bundle_pack cuts the planned segments into media on
segment boundaries, every medium carries the signed tables, and the import takes one medium at a time - a file
whose parts go on on the next medium is kept as a partial file, hashed again before it is continued - and
says which medium to insert next, never reporting the bundle imported before every medium is in.
(Through ansible, on three directories as three media: tests/integration/bundle/test_multi_media.py.)"""
import json
import os
import shutil

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ansible_collections.llmops.onprem.plugins.module_utils import _bundle as B
from ansible_collections.llmops.onprem.plugins.modules import bundle_pack, bundle_seal

SEG = "256KiB"
MEDIUM = "300KiB"  # one 256 KiB segment per medium, with the tables


def test_media_are_cut_on_segment_boundaries():
    assert B.plan_media([300, 300, 300, 300, 100], 1000, 100) == [1, 1, 1, 2, 2]
    assert B.plan_media([900], 1000, 100) == [1]
    assert B.plan_media([500, 500, 500], 1000, 0) == [1, 1, 2]


def test_a_segment_that_cannot_fit_a_medium_with_the_tables_is_refused():
    with pytest.raises(B.BundleError) as e:
        B.plan_media([300, 901], 1000, 100)
    assert str(e.value) == ("medium_size 1000 B (1000 bytes) is too small: segment bundle-0002.tar is 901 B and every medium also "
                            "carries the signed tables (100 B). Use a larger medium_size, or a smaller segment_size"), str(e.value)


def keys(d):
    k = ed25519.Ed25519PrivateKey.generate()
    priv, pub = d / "k.pem", d / "k.pub.pem"
    priv.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    pub.write_bytes(k.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return str(priv), str(pub)


def seal(tmp, files, name="b"):
    root = tmp / name
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    bundle_seal.run(dict(path=str(root), private_key=tmp.joinpath("k.pem").as_posix(), spec={"name": name}, versions={},
                         images=[]), False)
    return root


@pytest.fixture
def bundle(tmp_path):
    priv, pub = keys(tmp_path)
    files = {
        "images/blobs/sha256/big": os.urandom(700 * 1024),  # split: a part on each of the four media
        "images/blobs/sha256/aaaa": os.urandom(100 * 1024),
        "models/m/config.json": b"{}",
        "python/requirements.lock": b"x --hash=sha256:00\n",
        "bootstrap.sh": b"#!/bin/sh\n",
    }
    return dict(root=seal(tmp_path, files), priv=priv, pub=pub, tmp=tmp_path, files=files)


def pack(b, medium, dest=None, check=False, medium_size=MEDIUM, root=None):
    dest = dest or b["tmp"] / ("medium-%d" % medium)
    return bundle_pack.run(dict(src=str(root or b["root"]), dest=str(dest), private_key=b["priv"], segment_size=SEG, read_back=True,
                                progress_file=None, medium_size=medium_size, medium=medium), check)


def imp(src, pub, dest=None, check=False):
    return B.Importer(str(src), pub, str(dest) if dest else None, None, check).run()


def tree(d):
    out = {}
    for base, dummy, files in os.walk(str(d)):
        for f in files:
            p = os.path.join(base, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, str(d))] = fh.read()
    return out


def pack_all(b):
    res = [pack(b, 1)]
    for n in range(2, res[0]["media"] + 1):
        res.append(pack(b, n))
    return res


def test_every_medium_holds_whole_segments_and_the_same_signed_tables(bundle):
    res = pack_all(bundle)
    assert res[0]["media"] == 4 and [r["medium_segments"] for r in res] == [["bundle-0001.tar"], ["bundle-0002.tar"],
                                                                            ["bundle-0003.tar"], ["bundle-0004.tar"]]
    assert res[0]["media_spanning"] == ["images/blobs/sha256/big"]
    tables = None
    for n in range(1, 5):
        d = bundle["tmp"] / ("medium-%d" % n)
        assert sorted(os.listdir(str(d))) == ["bundle-%04d.tar" % n, "manifest.json", "manifest.json.sig", "segments.json",
                                              "segments.json.sig"]
        t = {f: (d / f).read_bytes() for f in ("manifest.json", "manifest.json.sig", "segments.json", "segments.json.sig")}
        assert tables in (None, t)  # byte for byte the same signed tables on every medium
        tables = t
    table = json.loads(tables["segments.json"])
    assert table["media"] == 4 and table["medium_size"] == 300 * 1024
    assert [s["medium"] for s in table["segments"]] == [1, 2, 3, 4]
    # The controller's bootstrap comes first, on medium 1 (llmops-verify.sh extracts it from there).
    assert [m["path"] for m in table["segments"][0]["members"]][:2] == ["bootstrap.sh", "python/requirements.lock"]
    # A re-run writes nothing; check mode predicts the plan.
    assert pack(bundle, 2)["changed"] is False
    plan = pack(bundle, 3, dest=bundle["tmp"] / "elsewhere", check=True)
    assert plan["changed"] is True and plan["medium_segments"] == ["bundle-0003.tar"] and not (bundle["tmp"] / "elsewhere").exists()


def test_without_medium_size_the_table_names_no_media(bundle, tmp_path):
    res = bundle_pack.run(dict(src=str(bundle["root"]), dest=str(tmp_path / "one"), private_key=bundle["priv"], segment_size=SEG,
                               read_back=True, progress_file=None), False)
    table = json.loads((tmp_path / "one" / "segments.json").read_text())
    assert "media" not in table and all("medium" not in s for s in table["segments"]) and res["media"] == 1
    r = imp(tmp_path / "one", bundle["pub"], tmp_path / "dest")
    assert r["imported"] is True and r["media"] == 1 and r["media_missing"] == [] and r["media_message"] is None


@pytest.mark.parametrize("args,text", [
    (dict(medium=5), "medium 5 does not exist: this pack takes 4 media of 300.0 KiB (medium_size), numbered 1 to 4"),
    (dict(medium=2, medium_size=None), "medium 2 without medium_size: set medium_size"),
    (dict(medium=1, medium_size="200KiB"), "medium_size 200.0 KiB (204800 bytes) is too small: segment bundle-0001.tar is "),
])
def test_bad_medium_options_are_refused_before_writing(bundle, args, text):
    dest = bundle["tmp"] / "m"
    with pytest.raises(B.BundleError) as e:
        pack(bundle, dest=dest, **args)
    assert text in str(e.value), str(e.value)
    assert not dest.exists()


def test_a_medium_holding_another_mediums_segments_is_refused(bundle):
    pack_all(bundle)
    with pytest.raises(B.BundleError) as e:
        pack(bundle, 2, dest=bundle["tmp"] / "medium-1")
    assert "medium-1 already holds bundle-0001.tar, which is not part of this pack (medium 2 of 4)" in str(e.value)


def test_import_one_medium_at_a_time_asks_for_the_next(bundle, tmp_path):
    pack_all(bundle)
    dest = tmp_path / "dest"
    seen = []
    for n in range(1, 5):
        r = imp(bundle["tmp"] / ("medium-%d" % n), bundle["pub"], dest)
        seen.append((r["imported"], r["media_here"], r["media_missing"]))
        if n < 4:
            assert r["media_message"] == ("medium %d of 4 imported into %s; insert medium %d of 4 at %s and run the import again "
                                          "(still needed: %s)" % (n, dest, n + 1, bundle["tmp"] / ("medium-%d" % n),
                                                                  ("media " if n < 3 else "medium ") + ", ".join(str(x) for x in range(n + 1, 5))))
            assert not (dest / ".llmops-import" / "manifest.json").exists() and not (dest / "manifest.json").exists()
            assert (dest / "images/blobs/sha256/big.partial").exists() and not (dest / "images/blobs/sha256/big").exists()
    assert seen == [(False, [1], [2, 3, 4]), (False, [2], [3, 4]), (False, [3], [4]), (True, [4], [])]
    assert r["media_message"] == "all 4 media imported"
    assert not (dest / ".llmops-import" / "media.json").exists()
    # The same tree as one medium holding everything gives.
    bundle_pack.run(dict(src=str(bundle["root"]), dest=str(tmp_path / "one"), private_key=bundle["priv"], segment_size=SEG,
                         read_back=True, progress_file=None), False)
    imp(tmp_path / "one", bundle["pub"], tmp_path / "dest-one")
    a, c = tree(dest), tree(tmp_path / "dest-one")
    for k in (".llmops-import/state.json",):  # records of inodes and times
        a.pop(k), c.pop(k)
    assert a == c
    # Any medium again: nothing to do, imported.
    r = imp(bundle["tmp"] / "medium-2", bundle["pub"], dest)
    assert r["imported"] is True and r["changed"] is False and r["media_missing"] == []


def test_media_out_of_order_and_all_in_one_folder(bundle, tmp_path):
    pack_all(bundle)
    dest = tmp_path / "dest"
    r = imp(bundle["tmp"] / "medium-3", bundle["pub"], dest)  # the middle of big, nothing before it: only verified
    assert r["media_missing"] == [1, 2, 3, 4] and r["imported"] is False
    r = imp(bundle["tmp"] / "medium-1", bundle["pub"], dest)
    assert r["media_missing"] == [2, 3, 4]
    # Every medium copied into one folder imports in one run.
    both = tmp_path / "both"
    both.mkdir()
    for n in (2, 3, 4):
        for f in os.listdir(str(bundle["tmp"] / ("medium-%d" % n))):
            shutil.copyfile(str(bundle["tmp"] / ("medium-%d" % n) / f), str(both / f))
    r = imp(both, bundle["pub"], dest)
    assert r["imported"] is True and r["media_here"] == [2, 3, 4] and r["media_missing"] == []
    assert (dest / "images/blobs/sha256/big").read_bytes() == bundle["files"]["images/blobs/sha256/big"]


def test_verify_only_checks_the_medium_by_itself(bundle):
    pack_all(bundle)
    r = imp(bundle["tmp"] / "medium-2", bundle["pub"])
    assert r["imported"] is False and r["media_missing"] == [1, 3, 4] and r["media_here"] == [2]
    assert r["media_message"] == ("medium 2 of 4 verified (every segment there, every part against the signed sha256); media 1, 3, "
                                  "4 hold the rest of the bundle: verify them too")
    d = bundle["tmp"] / "medium-2" / "bundle-0002.tar"
    data = bytearray(d.read_bytes())
    data[4096] ^= 1
    d.write_bytes(bytes(data))
    with pytest.raises(B.BundleError) as e:
        imp(bundle["tmp"] / "medium-2", bundle["pub"])
    assert "sha256 mismatch for images/blobs/sha256/big.part-0002-of-0004 in segment bundle-0002.tar" in str(e.value)


def test_a_partial_file_changed_between_media_is_not_continued(bundle, tmp_path):
    pack_all(bundle)
    dest = tmp_path / "dest"
    imp(bundle["tmp"] / "medium-1", bundle["pub"], dest)
    part = dest / "images/blobs/sha256/big.partial"
    data = bytearray(part.read_bytes())
    data[10] ^= 1
    part.write_bytes(bytes(data))
    r = imp(bundle["tmp"] / "medium-2", bundle["pub"], dest)
    # The changed partial is removed, its parts on medium 2 only verified: medium 1 is needed again.
    assert r["media_missing"] == [1, 2, 3, 4] and not part.exists() and r["imported"] is False
    for n in (1, 2, 3, 4):
        r = imp(bundle["tmp"] / ("medium-%d" % n), bundle["pub"], dest)
    assert r["imported"] is True
    assert (dest / "images/blobs/sha256/big").read_bytes() == bundle["files"]["images/blobs/sha256/big"]


def test_a_medium_of_another_bundle_is_refused_while_one_is_under_way(bundle, tmp_path):
    pack_all(bundle)
    dest = tmp_path / "dest"
    imp(bundle["tmp"] / "medium-1", bundle["pub"], dest)
    other = seal(bundle["tmp"], {"images/blobs/sha256/big": os.urandom(700 * 1024)}, name="other")
    pack(bundle, 2, dest=tmp_path / "other-2", root=other)
    before = tree(dest)
    with pytest.raises(B.BundleError) as e:
        imp(tmp_path / "other-2", bundle["pub"], dest)
    msg = str(e.value)
    assert msg.startswith("%s is in the middle of importing bundle " % dest), msg
    assert "still needing medium 2, 3, 4); %s holds medium 2 of another bundle" % (tmp_path / "other-2") in msg, msg
    assert msg.endswith("remove %s and run again. Nothing was written" % (dest / ".llmops-import" / "media.json")), msg
    assert tree(dest) == before


def test_check_mode_writes_nothing_and_names_the_other_media(bundle, tmp_path):
    pack_all(bundle)
    dest = tmp_path / "dest"
    dest.mkdir()
    r = imp(bundle["tmp"] / "medium-1", bundle["pub"], dest, check=True)
    assert r["imported"] is False and r["media_missing"] == [2, 3, 4] and os.listdir(str(dest)) == []


def test_small_files_come_after_the_bootstrap_and_before_large_ones():
    entries = [dict(path=p, size=z) for p, z in (("images/blobs/sha256/layer", 20 * 2 ** 20), ("charts/big.tgz", 20 * 2 ** 20),
                                                 ("images/index.json", 300), ("bootstrap.sh", 10), ("models/m/shard", 5 * 2 ** 30),
                                                 ("models/m/config.json", 100), ("python/x.whl", 30 * 2 ** 20))]
    plan = B.plan_segments({"files": {"all": entries}}, 4095 * 2 ** 20, bootstrap_first=True)
    assert [m["path"] for s in plan for m in s if m["part"] <= 1] == [
        "bootstrap.sh", "python/x.whl", "charts/big.tgz", "images/index.json", "models/m/config.json", "images/blobs/sha256/layer",
        "models/m/shard"]


def test_inspect_reads_a_medium_and_names_the_one_it_lacks(bundle, tmp_path):
    from ansible_collections.llmops.onprem.plugins.module_utils import _bundle_inspect
    root = seal(tmp_path, {"python/x.whl": os.urandom(500 * 1024), "bootstrap.sh": b"#!/bin/sh\n",
                           "charts/c/Chart.yaml": b"apiVersion: v2\nname: c\nversion: 1.0.0\n"}, name="charted")
    assert pack(bundle, 1, dest=tmp_path / "c-1", root=root)["media"] == 2  # the wheel fills medium 1
    pack(bundle, 2, dest=tmp_path / "c-2", root=root)
    with pytest.raises(B.BundleError) as e:
        _bundle_inspect.inspect(str(tmp_path / "c-1"), bundle["pub"], package_licenses=False)
    assert str(e.value).startswith("charts/c/Chart.yaml lies (in bundle-0003.tar) on medium 2 of the 2 this bundle is spread over, "
                                   "and %s holds medium 1: inspect reads it. Mount medium 2 there" % (tmp_path / "c-1")), str(e.value)
    # Every medium in one folder: inspected as one medium is.
    both = tmp_path / "both"
    both.mkdir()
    for n in (1, 2):
        for f in os.listdir(str(tmp_path / ("c-%d" % n))):
            shutil.copyfile(str(tmp_path / ("c-%d" % n) / f), str(both / f))
    out = _bundle_inspect.inspect(str(both), bundle["pub"], package_licenses=False)
    assert [c["name"] for c in out["charts"]] == ["c"], out["charts"]
    # The unit bundle's medium 1 holds everything inspect reads there (no index, no chart): it inspects by itself.
    pack_all(bundle)
    out = _bundle_inspect.inspect(str(bundle["tmp"] / "medium-1"), bundle["pub"], package_licenses=False)
    assert out["totals"]["files"] == 5
