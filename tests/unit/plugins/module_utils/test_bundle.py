"""The bundle's chain of trust: seal, sign, pack into segments, verify, import, and every way
a bundle must be refused (tamper cases), each with its exact message and nothing installed."""
import json
import os
import tarfile

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ansible_collections.llmops.onprem.plugins.module_utils import _bundle as B
from ansible_collections.llmops.onprem.plugins.modules import bundle_pack, bundle_seal

SEG = 256 * 1024


def keypair(d, name):
    k = ed25519.Ed25519PrivateKey.generate()
    priv, pub = d / (name + ".pem"), d / (name + ".pub.pem")
    priv.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    pub.write_bytes(k.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return str(priv), str(pub)


@pytest.fixture
def bundle(tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    priv, pub = keypair(keys, "site")
    root = tmp_path / "bundle"
    files = {
        "images/oci-layout": b'{"imageLayoutVersion": "1.0.0"}',
        "images/blobs/sha256/aaaa": os.urandom(100 * 1024),
        "images/blobs/sha256/big": os.urandom(700 * 1024),  # larger than a segment: split in parts
        "charts/serving/Chart.yaml": b"name: serving\n",
        "models/tiny/config.json": b'{"architectures": ["LlamaForCausalLM"]}',
        "models/tiny/model.safetensors": os.urandom(50 * 1024),
        "bootstrap.sh": b"#!/bin/sh\necho hi\n",
    }
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    res = bundle_seal.run(dict(path=str(root), private_key=priv, spec={"name": "t"}, versions={"vllm": "0.6.3"},
                               images=[{"ref": "docker.io/library/busybox:1.36", "digest": "sha256:" + "0" * 64}]), False)
    assert res["changed"] and res["files"] == len(files)
    media = tmp_path / "media"
    pres = bundle_pack.run(dict(src=str(root), dest=str(media), private_key=priv, segment_size=str(SEG),
                                read_back=True, progress_file=None), False)
    return dict(root=root, media=media, priv=priv, pub=pub, keys=keys, files=files, pack=pres, tmp=tmp_path)


def imp(src, pub, dest=None, check=False):
    return B.Importer(str(src), pub, str(dest) if dest else None, None, check).run()


def refused(src, pub, dest, text):
    with pytest.raises(B.BundleError) as e:
        imp(src, pub, dest)
    assert text in str(e.value), str(e.value)
    # nothing installed: no completion marker, and no file outside the import's own state dir
    assert not os.path.exists(os.path.join(str(dest), B.IMPORT_DIR, "manifest.json"))
    return str(e.value)


def test_seal_is_idempotent_and_lists_kinds(bundle):
    m = json.loads((bundle["root"] / "manifest.json").read_text())
    assert set(m["files"]) == {"images", "charts", "models", "root"}
    assert m["versions"] == {"vllm": "0.6.3"}
    before = (bundle["root"] / "manifest.json").read_bytes()
    res = bundle_seal.run(dict(path=str(bundle["root"]), private_key=bundle["priv"], spec={"name": "t"},
                               versions={"vllm": "0.6.3"}, images=m["images"]), False)
    assert res["changed"] is False
    assert (bundle["root"] / "manifest.json").read_bytes() == before


def test_segments_are_standalone_tars_no_larger_than_the_size(bundle):
    segs = sorted(p for p in bundle["media"].iterdir() if p.name.startswith("bundle-"))
    assert len(segs) >= 4 and "images/blobs/sha256/big" in bundle["pack"]["split_files"]
    for s in segs:
        assert s.stat().st_size <= SEG
        with tarfile.open(str(s)) as t:  # each one opens and lists by itself
            assert t.getnames()
    again = bundle_pack.run(dict(src=str(bundle["root"]), dest=str(bundle["media"]), private_key=bundle["priv"],
                                 segment_size=str(SEG), read_back=True, progress_file=None), False)
    assert again["changed"] is False


@pytest.mark.parametrize("source", ["root", "media"])
def test_import_verifies_copies_and_resumes(bundle, source, tmp_path):
    dest = tmp_path / "dest"
    plan = imp(bundle[source], bundle["pub"], dest, check=True)
    assert plan["files_copied"] == len(bundle["files"]) and not dest.exists()
    res = imp(bundle[source], bundle["pub"], dest)
    assert res["changed"] and res["files_copied"] == len(bundle["files"])
    for rel, data in bundle["files"].items():
        assert (dest / rel).read_bytes() == data
    assert res["checkpoints"]["tiny"]["digest"]
    ck = json.loads((dest / ".llmops-import" / "checkpoints" / "tiny.json").read_text())
    assert [f["path"] for f in ck["files"]] == ["config.json", "model.safetensors"]
    again = imp(bundle[source], bundle["pub"], dest)
    assert again["changed"] is False and again["files_copied"] == 0 and again["bytes_copied"] == 0
    # the imported directory is itself a valid bundle
    assert imp(dest, bundle["pub"])["files_total"] == len(bundle["files"])


def test_damaged_file_in_place_is_copied_again(bundle, tmp_path):
    dest = tmp_path / "dest"
    imp(bundle["media"], bundle["pub"], dest)
    (dest / "charts/serving/Chart.yaml").write_bytes(b"name: evil\n")
    res = imp(bundle["media"], bundle["pub"], dest)
    assert res["changed"] and res["files_copied"] == 1
    assert (dest / "charts/serving/Chart.yaml").read_bytes() == b"name: serving\n"


def flip(path, offset):
    with open(str(path), "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def test_flipped_byte_in_a_blob_dir(bundle, tmp_path):
    flip(bundle["root"] / "images/blobs/sha256/aaaa", 4242)
    msg = refused(bundle["root"], bundle["pub"], tmp_path / "d", "sha256 mismatch for images/blobs/sha256/aaaa: the signed manifest says")
    assert msg.endswith("refusing the bundle, nothing was installed")
    assert not (tmp_path / "d" / "images/blobs/sha256/aaaa").exists()


def test_flipped_byte_in_a_segment(bundle, tmp_path):
    seg = sorted(p for p in bundle["media"].iterdir() if p.name.startswith("bundle-"))[1]
    flip(seg, 2048)
    refused(bundle["media"], bundle["pub"], tmp_path / "d", "sha256 mismatch for ")


def test_extra_file(bundle, tmp_path):
    (bundle["root"] / "charts" / "extra.tgz").write_bytes(b"x")
    refused(bundle["root"], bundle["pub"], tmp_path / "d",
            "unlisted file charts/extra.tgz: it is not in the signed manifest. Refusing the bundle; nothing was installed")
    assert not (tmp_path / "d").exists()


def test_extra_file_on_media(bundle, tmp_path):
    (bundle["media"] / "notes.txt").write_bytes(b"x")
    refused(bundle["media"], bundle["pub"], tmp_path / "d", "unlisted file notes.txt on the media: it is not in the signed segments.json")


def test_missing_file(bundle, tmp_path):
    os.unlink(str(bundle["root"] / "models/tiny/config.json"))
    refused(bundle["root"], bundle["pub"], tmp_path / "d",
            "missing file models/tiny/config.json (listed in the signed manifest, 39 B). Refusing the bundle; nothing was installed")
    assert not (tmp_path / "d").exists()


def test_missing_segment(bundle, tmp_path):
    os.unlink(str(bundle["media"] / "bundle-0002.tar"))
    n = len([p for p in bundle["media"].iterdir() if p.name.startswith("bundle-")]) + 1
    refused(bundle["media"], bundle["pub"], tmp_path / "d",
            "missing segment bundle-0002.tar (2 of %d, " % n)
    assert not (tmp_path / "d").exists()


def test_truncated_segment(bundle, tmp_path):
    seg = bundle["media"] / "bundle-0003.tar"
    size = seg.stat().st_size
    with open(str(seg), "r+b") as f:
        f.truncate(size - 1000)
    refused(bundle["media"], bundle["pub"], tmp_path / "d",
            "segment bundle-0003.tar is truncated: %d bytes on the media, segments.json says %d" % (size - 1000, size))
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("source", ["root", "media"])
def test_manifest_edited_after_signing(bundle, source, tmp_path):
    p = bundle[source] / "manifest.json"
    p.write_bytes(p.read_bytes().replace(b'"vllm": "0.6.3"', b'"vllm": "0.6.4"'))
    refused(bundle[source], bundle["pub"], tmp_path / "d",
            "the signature of manifest.json does not verify with the public key %s: the file was changed after signing" % bundle["pub"])
    assert not (tmp_path / "d").exists()


def test_segments_table_edited_after_signing(bundle, tmp_path):
    p = bundle["media"] / "segments.json"
    t = json.loads(p.read_text())
    t["segments"][0]["size"] += 1
    p.write_bytes(B.canonical(t))
    refused(bundle["media"], bundle["pub"], tmp_path / "d", "the signature of segments.json does not verify")


def test_wrong_public_key(bundle, tmp_path):
    dummy, other = keypair(bundle["keys"], "other")
    refused(bundle["media"], other, tmp_path / "d",
            "the signature of manifest.json does not verify with the public key %s" % other)


def test_unsigned_bundle(bundle, tmp_path):
    os.unlink(str(bundle["root"] / "manifest.json.sig"))
    refused(bundle["root"], bundle["pub"], tmp_path / "d", "manifest.json.sig is missing: the bundle is not signed, refusing it")


def test_not_enough_space(bundle, tmp_path, monkeypatch):
    monkeypatch.setattr(B, "free_bytes", lambda path: 1000)
    need = sum(len(v) for v in bundle["files"].values())
    refused(bundle["media"], bundle["pub"], tmp_path / "d",
            "not enough space in %s: the import needs %s (%d bytes), the file system has 1000 B free" % (tmp_path / "d", B.human(need), need))
    assert not (tmp_path / "d" / "bootstrap.sh").exists()


def test_symlink_refused_at_seal(bundle):
    os.symlink("/etc/passwd", str(bundle["root"] / "charts" / "link"))
    with pytest.raises(B.BundleError, match="charts/link is a symbolic link"):
        bundle_seal.run(dict(path=str(bundle["root"]), private_key=bundle["priv"], spec={}, versions={}, images=[]), False)


def test_pack_refuses_foreign_files_on_media(bundle):
    (bundle["media"] / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(B.BundleError, match="already holds holiday.jpg, which is not part of this pack"):
        bundle_pack.run(dict(src=str(bundle["root"]), dest=str(bundle["media"]), private_key=bundle["priv"],
                             segment_size=str(SEG), read_back=True, progress_file=None), False)
    assert (bundle["media"] / "holiday.jpg").exists()


@pytest.mark.parametrize("value,expected", [("4095MiB", 4095 * 2 ** 20), ("8M", 8 * 2 ** 20), ("1GB", 10 ** 9), ("65536", 65536)])
def test_parse_size(value, expected):
    assert B.parse_size(value) == expected


def test_parse_size_refuses_nonsense():
    with pytest.raises(B.BundleError, match="cannot read size 'lots'"):
        B.parse_size("lots")


def test_upgrade_copies_only_changed_files_and_drops_stale_ones(bundle, tmp_path):
    dest = tmp_path / "dest"
    imp(bundle["media"], bundle["pub"], dest)
    (bundle["root"] / "charts/serving/Chart.yaml").write_bytes(b"name: serving\nversion: 2\n")
    os.unlink(str(bundle["root"] / "bootstrap.sh"))
    bundle_seal.run(dict(path=str(bundle["root"]), private_key=bundle["priv"], spec={"name": "t2"}, versions={}, images=[]), False)
    res = imp(bundle["root"], bundle["pub"], dest)
    assert res["changed"] and res["files_copied"] == 1 and res["files_skipped"] == len(bundle["files"]) - 2
    assert res["files_removed"] == ["bootstrap.sh"] and not (dest / "bootstrap.sh").exists()
    assert (dest / "charts/serving/Chart.yaml").read_bytes() == b"name: serving\nversion: 2\n"
    assert imp(dest, bundle["pub"])["files_total"] == len(bundle["files"]) - 1  # dest is exactly the new bundle


def test_interrupted_import_resumes_from_its_journal_and_ignores_a_torn_line(bundle, tmp_path):
    """An interrupted import leaves state.journal (one line per verified file) and no snapshot; a torn
    last line (the kill came mid-write) costs that one file a second copy, nothing else."""
    dest = tmp_path / "dest"
    imp(bundle["media"], bundle["pub"], dest)
    ctl = dest / B.IMPORT_DIR
    files = json.loads((ctl / "state.json").read_text())["files"]
    assert not (ctl / "state.journal").exists()
    kept = sorted(files)[:2]
    lines = [json.dumps(dict(files[p], path=p)) for p in kept]
    torn = json.dumps(dict(files[sorted(files)[2]], path=sorted(files)[2]))[:25]
    (ctl / "state.journal").write_text("\n".join(lines + [torn]))
    (ctl / "state.json").unlink()
    (ctl / "manifest.json").unlink()
    res = imp(bundle["media"], bundle["pub"], dest)
    assert res["changed"] is True
    assert (res["files_skipped"], res["files_copied"]) == (2, len(bundle["files"]) - 2)
    assert not (ctl / "state.journal").exists()
    assert sorted(json.loads((ctl / "state.json").read_text())["files"]) == sorted(files)
