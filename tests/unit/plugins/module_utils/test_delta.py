"""Day two: the receipt's checks, the delta plan (pure), and the import of a delta - content taken
from the last import by digest (also from another path, also two paths swapping contents), and
every refusal with its text and nothing written."""
import hashlib
import json
import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ansible_collections.llmops.onprem.plugins.module_utils import _bundle as B
from ansible_collections.llmops.onprem.plugins.module_utils import _delta as D
from ansible_collections.llmops.onprem.plugins.modules import bundle_pack, bundle_seal

SHA_A, SHA_B, SHA_C = "a" * 64, "b" * 64, "c" * 64


def manifest(entries):
    files = {}
    for path, sha, size in entries:
        files.setdefault(B.kind_of(path), []).append({"path": path, "sha256": sha, "size": size})
    return {"schema": B.MANIFEST_SCHEMA, "files": files}


def receipt(content, bundles=None):
    return {"schema": D.RECEIPT_SCHEMA, "content": content,
            "bundles": bundles if bundles is not None else [{"id": "1" * 64, "name": "one", "created": "2026-12-01T00:00:00Z"}]}


# ---- the plan --------------------------------------------------------------------------------

def test_a_file_is_carried_when_the_receipt_lacks_its_content():
    m = manifest([("models/m/a.safetensors", SHA_A, 10), ("models/m/b.safetensors", SHA_B, 20), ("images/index.json", SHA_C, 5)])
    plan = D.plan_delta(m, receipt({SHA_A: 10, SHA_C: 5}))
    assert plan["carried"] == ["models/m/b.safetensors"]
    assert plan["held"] == ["images/index.json", "models/m/a.safetensors"]
    assert (plan["carried_bytes"], plan["held_bytes"], plan["full_bytes"]) == (20, 15, 35)
    assert plan["base"] == {"bundles": [{"id": "1" * 64, "name": "one", "created": "2026-12-01T00:00:00Z"}], "files": 2, "bytes": 15}


def test_content_is_matched_by_digest_and_size_not_by_path():
    m = manifest([("models/renamed/a.safetensors", SHA_A, 10), ("models/m/b.safetensors", SHA_B, 21)])
    plan = D.plan_delta(m, receipt({SHA_A: 10, SHA_B: 20}))
    assert plan["held"] == ["models/renamed/a.safetensors"]  # same bytes under a new name: not carried
    assert plan["carried"] == ["models/m/b.safetensors"]  # a size that differs is other content


def test_the_controller_bootstrap_is_always_carried():
    m = manifest([("bootstrap.sh", SHA_A, 1), ("llmops-verify.sh", SHA_B, 2), ("python/x.whl", SHA_C, 3),
                  ("collections/c.tar.gz", "d" * 64, 4)])
    plan = D.plan_delta(m, receipt({SHA_A: 1, SHA_B: 2, SHA_C: 3, "d" * 64: 4}))
    assert plan["held"] == [] and len(plan["carried"]) == 4


def test_an_empty_receipt_carries_everything():
    m = manifest([("models/m/a", SHA_A, 10)])
    assert D.plan_delta(m, receipt({}, bundles=[]))["carried"] == ["models/m/a"]


def test_the_delta_document_names_manifest_base_and_carried():
    plan = D.plan_delta(manifest([("models/m/a", SHA_A, 10)]), receipt({}))
    doc = D.delta_document("f" * 64, plan, "e" * 64)
    assert doc == {"schema": B.DELTA_SCHEMA, "manifest_sha256": "f" * 64, "carried": ["models/m/a"],
                   "base": dict(plan["base"], receipt_sha256="e" * 64), "totals": {"files": 1, "bytes": 10}}


# ---- the receipt's checks --------------------------------------------------------------------

@pytest.mark.parametrize("bad, text", [
    ({"schema": "other"}, "has schema 'other', this collection reads 'llmops.onprem.receipt/v1'"),
    (dict(receipt({}), content=[]), "its 'content' is not a table of sha256 -> size"),
    (dict(receipt({}), content={"../../etc/passwd": 10}), "content entry '../../etc/passwd': 10 is not a sha256"),
    (dict(receipt({}), content={SHA_A.upper(): 10}), "is not a sha256 (64 lowercase hex digits)"),
    (dict(receipt({}), content={SHA_A: -1}), "content entry '%s': -1 is not a sha256" % SHA_A),
    (dict(receipt({}), content={SHA_A: True}), "is not a sha256"),
    (dict(receipt({}), content={SHA_A: "10"}), "is not a sha256"),
    (dict(receipt({}), bundles=[{"name": "no id"}]), "its 'bundles' must list the imported bundles, each with its id"),
    (dict(receipt({}), bundles="x"), "its 'bundles' must list"),
])
def test_an_unusable_receipt_is_refused(bad, text):
    with pytest.raises(B.BundleError) as e:
        D.check_receipt(bad, "r.json")
    assert text in str(e.value), str(e.value)


def test_a_receipt_is_read_bounded_and_never_through_a_link(tmp_path):
    good = tmp_path / "r.json"
    good.write_text(json.dumps(receipt({SHA_A: 1})))
    r, digest = D.load_receipt(str(good))
    assert r["content"] == {SHA_A: 1} and digest == hashlib.sha256(good.read_bytes()).hexdigest()
    link = tmp_path / "link.json"
    link.symlink_to(good)
    with pytest.raises(B.BundleError) as e:
        D.load_receipt(str(link))
    assert "is a symbolic link: it is never followed" in str(e.value)
    huge = tmp_path / "huge.json"
    with open(str(huge), "wb") as f:
        f.truncate(D.RECEIPT_LIMIT + 1)
    with pytest.raises(B.BundleError) as e:
        D.load_receipt(str(huge))
    assert "is larger than 64.0 MiB, the most that is read" in str(e.value)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(B.BundleError) as e:
        D.load_receipt(str(bad))
    assert "is not valid JSON" in str(e.value)


# ---- the delta, built and imported -----------------------------------------------------------

def keypair(d, name="site"):
    d.mkdir(parents=True, exist_ok=True)
    k = ed25519.Ed25519PrivateKey.generate()
    priv, pub = d / (name + ".pem"), d / (name + ".pub.pem")
    priv.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    pub.write_bytes(k.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return str(priv), str(pub)


class World(object):
    def __init__(self, tmp):
        self.tmp = tmp
        self.priv, self.pub = keypair(tmp / "keys")

    def bundle(self, name, files, pack=True):
        root = self.tmp / name
        for rel, data in files.items():
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        bundle_seal.run(dict(path=str(root), private_key=self.priv, spec={"name": name}, versions={}, images=[]), False)
        if not pack:
            return root
        media = self.tmp / (name + "-media")
        bundle_pack.run(dict(src=str(root), dest=str(media), private_key=self.priv, segment_size="64KiB", read_back=False,
                             progress_file=None), False)
        return root, media

    def receipt(self, dest):
        out = self.tmp / ("%s.receipt.json" % dest.name)
        D.write_receipt(str(dest), str(out))
        return out

    def delta(self, root, receipt_path, name, pack=True):
        out = self.tmp / name
        res = D.build_delta(str(root), str(out), self.priv, str(receipt_path))
        if not pack:
            return out, res
        media = self.tmp / (name + "-media")
        bundle_pack.run(dict(src=str(out), dest=str(media), private_key=self.priv, segment_size="64KiB", read_back=False,
                             progress_file=None), False)
        return media, res


def imp(src, pub, dest, check=False):
    return B.Importer(str(src), pub, str(dest), None, check).run()


def listing(root):
    out = {}
    for d, dirs, files in os.walk(str(root)):
        for n in files:
            rel = os.path.relpath(os.path.join(d, n), str(root))
            if rel != ".llmops-import/state.json":
                out[rel] = hashlib.sha256(open(os.path.join(d, n), "rb").read()).hexdigest()
    return out


def snapshot(root):
    return {os.path.relpath(os.path.join(d, n), str(root)): os.lstat(os.path.join(d, n)).st_mtime_ns
            for d, dirs, files in os.walk(str(root)) for n in dirs + files}


V1 = {"models/m/a.safetensors": b"A" * 3000, "models/m/b.safetensors": b"B" * 3000, "charts/c/Chart.yaml": b"name: c\n",
      "bootstrap.sh": b"#!/bin/sh\n"}


def test_content_moves_and_swaps_inside_the_import(tmp_path):
    w = World(tmp_path)
    r1, m1 = w.bundle("one", V1)
    site = tmp_path / "site"
    imp(m1, w.pub, site)
    # Bundle 2: a and b swap contents, a model is renamed, one new file.
    v2 = {"models/m/a.safetensors": V1["models/m/b.safetensors"], "models/m/b.safetensors": V1["models/m/a.safetensors"],
          "models/n/a.safetensors": V1["models/m/a.safetensors"], "charts/c/Chart.yaml": V1["charts/c/Chart.yaml"],
          "models/n/new.bin": b"N" * 100, "bootstrap.sh": V1["bootstrap.sh"]}
    r2, m2 = w.bundle("two", v2)
    media, res = w.delta(r2, w.receipt(site), "delta")
    assert res["carried"]["files"] == 2  # models/n/new.bin and bootstrap.sh
    plan = imp(media, w.pub, site, check=True)
    assert plan["delta"]["moved"] == ["models/m/a.safetensors", "models/m/b.safetensors", "models/n/a.safetensors"]
    out = imp(media, w.pub, site)
    assert out["delta"]["moved"] == ["models/m/a.safetensors", "models/m/b.safetensors", "models/n/a.safetensors"]
    assert out["delta"]["held_in_place"] == 1
    full = tmp_path / "full"
    imp(m2, w.pub, full)
    assert listing(site) == listing(full)
    assert not [p for p in listing(site) if p.endswith(".partial")]
    assert imp(media, w.pub, site)["changed"] is False


def test_a_delta_whose_signature_or_binding_is_wrong_is_refused(tmp_path):
    w = World(tmp_path)
    r1, m1 = w.bundle("one", V1)
    site = tmp_path / "site"
    imp(m1, w.pub, site)
    r2 = w.bundle("two", dict(V1, **{"models/m/a.safetensors": b"Z" * 3000}), pack=False)
    ddir, res = w.delta(r2, w.receipt(site), "delta", pack=False)
    before = snapshot(site)
    # delta.json edited after signing.
    d = json.loads((ddir / "delta.json").read_text())
    orig = (ddir / "delta.json").read_bytes()
    (ddir / "delta.json").write_bytes(B.canonical(dict(d, carried=d["carried"][:-1])))
    with pytest.raises(B.BundleError) as e:
        imp(ddir, w.pub, site)
    assert str(e.value).startswith("the signature of delta.json does not verify with the public key")
    # delta.json for another manifest, signed with the site key (a mix of two bundles).
    (ddir / "delta.json").write_bytes(B.canonical(dict(d, manifest_sha256="0" * 64)))
    (ddir / "delta.json.sig").write_bytes(B.sign((ddir / "delta.json").read_bytes(), w.priv))
    with pytest.raises(B.BundleError) as e:
        imp(ddir, w.pub, site)
    assert "delta.json belongs to another manifest (manifest sha256 %s, delta.json names %s)" % (res["manifest_sha256"], "0" * 64) \
        in str(e.value)
    # A carried path the manifest does not list.
    (ddir / "delta.json").write_bytes(B.canonical(dict(d, carried=d["carried"] + ["../outside"])))
    (ddir / "delta.json.sig").write_bytes(B.sign((ddir / "delta.json").read_bytes(), w.priv))
    with pytest.raises(B.BundleError) as e:
        imp(ddir, w.pub, site)
    assert "the signed delta.json is unusable: its 'carried' must list files of the signed manifest" in str(e.value)
    # A carried entry that is not a path at all.
    (ddir / "delta.json").write_bytes(B.canonical(dict(d, carried=d["carried"] + [["x"]])))
    (ddir / "delta.json.sig").write_bytes(B.sign((ddir / "delta.json").read_bytes(), w.priv))
    with pytest.raises(B.BundleError) as e:
        imp(ddir, w.pub, site)
    assert "the signed delta.json is unusable" in str(e.value)
    # Put back: a file the delta does not carry, added to the directory, is unlisted.
    (ddir / "delta.json").write_bytes(orig)
    (ddir / "delta.json.sig").write_bytes(B.sign(orig, w.priv))
    (ddir / "models" / "m" / "b.safetensors").parent.mkdir(parents=True, exist_ok=True)
    (ddir / "models" / "m" / "b.safetensors").write_bytes(V1["models/m/b.safetensors"])
    with pytest.raises(B.BundleError) as e:
        imp(ddir, w.pub, site)
    assert "unlisted file models/m/b.safetensors: it is not in the signed delta.json's carried files" in str(e.value)
    os.unlink(str(ddir / "models" / "m" / "b.safetensors"))
    assert snapshot(site) == before
    assert imp(ddir, w.pub, site)["imported"] is True


def test_full_and_delta_segments_are_never_mixed(tmp_path):
    w = World(tmp_path)
    r1, m1 = w.bundle("one", V1)
    site = tmp_path / "site"
    imp(m1, w.pub, site)
    r2, m2 = w.bundle("two", dict(V1, **{"models/m/a.safetensors": b"Z" * 3000}))
    media, res = w.delta(r2, w.receipt(site), "delta")
    # The delta's delta.json copied onto the full bundle's media: segments.json was packed for the full bundle.
    for n in ("delta.json", "delta.json.sig"):
        (m2 / n).write_bytes((media / n).read_bytes())
    with pytest.raises(B.BundleError) as e:
        imp(m2, w.pub, site)
    assert str(e.value).startswith("segments.json was packed for the full bundle, but the media holds a delta (delta.json)")
    # Without delta.json, the delta's media is a full bundle with files missing.
    for n in ("delta.json", "delta.json.sig"):
        os.unlink(str(media / n))
    with pytest.raises(B.BundleError) as e:
        imp(media, w.pub, site)
    assert "segments.json was packed for a delta, but the media holds no delta.json" in str(e.value)
    # Packing the full bundle again over the media removes bundle_pack's stale delta.json.
    res = bundle_pack.run(dict(src=str(r2), dest=str(m2), private_key=w.priv, segment_size="64KiB", read_back=False,
                               progress_file=None), False)
    assert res["changed"] is True and not (m2 / "delta.json").exists()
    assert imp(m2, w.pub, site)["imported"] is True


def test_build_delta_refuses_a_foreign_directory_and_another_key(tmp_path):
    w = World(tmp_path)
    r1, m1 = w.bundle("one", V1)
    site = tmp_path / "site"
    imp(m1, w.pub, site)
    rec = w.receipt(site)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(B.BundleError) as e:
        D.build_delta(str(r1), str(foreign), w.priv, str(rec))
    assert "already holds notes.txt and is not a delta directory (no delta.json)" in str(e.value)
    assert (foreign / "notes.txt").read_text() == "mine"
    other_priv, dummy = keypair(tmp_path / "other", "other")
    with pytest.raises(B.BundleError) as e:
        D.build_delta(str(r1), str(tmp_path / "d"), other_priv, str(rec))
    assert "manifest.json does not verify with the signing key %s" % other_priv in str(e.value)
    assert not (tmp_path / "d").exists()
    # Against its own receipt, a delta carries only the bootstrap; in check mode nothing is written.
    res = D.build_delta(str(r1), str(tmp_path / "d"), w.priv, str(rec), check_mode=True)
    assert res["changed"] is True and res["carried"]["files"] == 1 and not (tmp_path / "d").exists()


def test_the_receipt_lists_what_is_missing_or_changed(tmp_path):
    w = World(tmp_path)
    r1, m1 = w.bundle("one", V1)
    site = tmp_path / "site"
    imp(m1, w.pub, site)
    os.unlink(str(site / "models" / "m" / "a.safetensors"))
    (site / "models" / "m" / "b.safetensors").write_bytes(b"X" * 3000)
    out = tmp_path / "r.json"
    res = D.write_receipt(str(site), str(out))
    r = json.loads(out.read_text())
    assert r["totals"] == {"files": 4, "held": 2, "held_bytes": len(b"name: c\n") + len(b"#!/bin/sh\n"), "missing": 2}
    assert [(m["path"], m["why"].split(",")[0]) for m in r["missing"]] == [
        ("models/m/a.safetensors", "absent"), ("models/m/b.safetensors", "sha256 %s" % hashlib.sha256(b"X" * 3000).hexdigest())]
    assert hashlib.sha256(V1["models/m/a.safetensors"]).hexdigest() not in r["content"]
    assert res["bytes_hashed"] == 3000  # only the file whose record no longer matches
    with pytest.raises(B.BundleError) as e:
        D.write_receipt(str(site), str(site / "r.json"))
    assert "lies inside the import directory" in str(e.value)
    with pytest.raises(B.BundleError) as e:
        D.write_receipt(str(tmp_path / "nothing"), str(out))
    assert "does not exist: no bundle was imported there" in str(e.value)


def test_inspect_says_a_delta_cannot_be_listed_alone(tmp_path):
    from ansible_collections.llmops.onprem.plugins.module_utils import _bundle_inspect
    w = World(tmp_path)
    r1, m1 = w.bundle("one", V1)
    site = tmp_path / "site"
    imp(m1, w.pub, site)
    r2 = w.bundle("two", dict(V1, **{"models/m/a.safetensors": b"Z" * 3000}), pack=False)
    media, res = w.delta(r2, w.receipt(site), "delta")
    with pytest.raises(B.BundleError) as e:
        _bundle_inspect.inspect(str(media), w.pub)
    assert "is a delta bundle: it carries 2 of the bundle's 4 files and takes the rest from the site's last import" in str(e.value)
