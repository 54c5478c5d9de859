"""Day two's hostile inputs (issue 18, docs/security.md "The delta bundle"): a receipt is data from
the site and the site's held content may have been changed by anyone who can write the import
directory. Each case runs the real code (_delta.build_delta, _delta.write_receipt, the Importer)
and asserts the refusal text and that nothing outside changed."""
import hashlib
import json
import os

from conftest import PEAK_MEMORY_LIMIT, run_measured, snapshot
from importcase import Case, import_
from ansible_collections.llmops.onprem.plugins.module_utils import _bundle as B
from ansible_collections.llmops.onprem.plugins.module_utils import _delta as D
from ansible_collections.llmops.onprem.plugins.modules import bundle_pack, bundle_seal

V2 = {
    "charts/serving/Chart.yaml": b"name: serving\nversion: 2\n",
    "models/tiny/config.json": b'{"architectures": ["LlamaForCausalLM"]}',
    "models/tiny/model.safetensors": b"0123456789",
    "bootstrap.sh": b"#!/bin/sh\necho hi\n",
}


def site_with_delta(tmp_path):
    """Bundle 1 imported at the site, its receipt, and the delta of bundle 2 (one chart changed) packed."""
    c = Case(tmp_path)
    c.seal()
    c.pack()
    site = tmp_path / "site"
    res, err = import_(c.media, c.pub, site)
    assert err is None, err
    receipt = tmp_path / "receipt.json"
    D.write_receipt(str(site), str(receipt))
    root2 = tmp_path / "bundle2"
    for rel, data in V2.items():
        p = root2 / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    bundle_seal.run(dict(path=str(root2), private_key=c.priv, spec={"name": "two"}, versions={}, images=[]), False)
    delta = tmp_path / "delta"
    D.build_delta(str(root2), str(delta), c.priv, str(receipt))
    media = tmp_path / "delta-media"
    bundle_pack.run(dict(src=str(delta), dest=str(media), private_key=c.priv, segment_size="64KiB", read_back=False,
                         progress_file=None), False)
    return c, site, receipt, root2, delta, media


def test_paths_in_a_receipt_are_never_used(tmp_path):
    c, site, receipt, root2, delta, media = site_with_delta(tmp_path)
    r = json.loads(receipt.read_text())
    # A receipt whose people-facing sections name paths outside (and absolute ones): the build only
    # reads digests and sizes, so the delta is the same and nothing outside is read or written.
    victim = str(c.outside / "victim")
    r["missing"] = [{"path": "../outside/victim", "sha256": "0" * 64, "size": 1, "why": "x"}]
    r["charts"] = [{"name": "../../x", "path": victim, "version": "1"}]
    r["checkpoints"] = {"../../outside": {"digest": "0" * 64, "files": 1, "bytes": 1, "held": True}}
    r["blobs"] = ["sha256:../../outside/victim"]
    hostile = tmp_path / "hostile.json"
    hostile.write_text(json.dumps(r))
    before = snapshot(str(c.outside))
    out = tmp_path / "delta-hostile"
    res = D.build_delta(str(root2), str(out), c.priv, str(hostile))
    assert sorted(B.walk_files(str(out))) == sorted(B.walk_files(str(delta)))
    assert json.loads((out / "delta.json").read_text())["carried"] == json.loads((delta / "delta.json").read_text())["carried"]
    assert res["carried"]["files"] == 2  # the changed chart and bootstrap.sh
    assert snapshot(str(c.outside)) == before
    # A content key that is a path is refused, naming it.
    r["content"]["../outside/victim"] = 20
    hostile.write_text(json.dumps(r))
    try:
        D.build_delta(str(root2), str(tmp_path / "never"), c.priv, str(hostile))
        raise AssertionError("accepted")
    except B.BundleError as e:
        assert "content entry '../outside/victim': 20 is not a sha256" in str(e)
    assert not (tmp_path / "never").exists()


def test_a_link_in_held_content_is_refused_not_followed(tmp_path):
    c, site, receipt, root2, delta, media = site_with_delta(tmp_path)
    # The site's held model file replaced by a link to a file outside holding the very bytes the
    # manifest signs: following it would "verify". The import refuses the link, before any write.
    (c.outside / "copy").write_bytes(V2["models/tiny/model.safetensors"])
    held = site / "models" / "tiny" / "model.safetensors"
    os.unlink(str(held))
    held.symlink_to(c.outside / "copy")
    before_site, before_out = snapshot(str(site)), snapshot(str(c.outside))
    res, err = import_(media, c.pub, site)
    assert res is None
    assert "%s in the destination is a symbolic link or another special file" % held in err, err
    assert snapshot(str(site)) == before_site and snapshot(str(c.outside)) == before_out
    # The receipt refuses it too (it never reads through it).
    try:
        D.write_receipt(str(site), str(tmp_path / "r2.json"))
        raise AssertionError("accepted")
    except B.BundleError as e:
        assert "is a symbolic link or another special file" in str(e)
    assert not (tmp_path / "r2.json").exists()


def test_a_forged_done_marker_cannot_point_the_import_outside(tmp_path):
    c, site, receipt, root2, delta, media = site_with_delta(tmp_path)
    # The content the delta needs is removed from the site and placed outside; the site's done marker
    # (and resume state) are forged to say a path outside the import holds it. Those hints are refused
    # by the one path rule, so the import names the missing file and reads nothing outside.
    data = V2["models/tiny/model.safetensors"]
    os.unlink(str(site / "models" / "tiny" / "model.safetensors"))
    (c.outside / "victim").write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    forged = {"schema": B.MANIFEST_SCHEMA, "files": {"models": [{"path": "../outside/victim", "size": len(data), "sha256": sha},
                                                                {"path": "/%s" % (c.outside / "victim"), "size": len(data), "sha256": sha}]}}
    (site / ".llmops-import" / "manifest.json").write_bytes(B.canonical(forged))
    (site / ".llmops-import" / "state.json").write_text(json.dumps({"files": {"../outside/victim": {"sha256": sha, "stat": [0, 0, 0]}}}))
    before_site, before_out = snapshot(str(site)), snapshot(str(c.outside))
    res, err = import_(media, c.pub, site)
    assert res is None
    assert "lacks 1 of them: models/tiny/model.safetensors (sha256 %s, 10 B)" % sha in err, err
    assert snapshot(str(site)) == before_site and snapshot(str(c.outside)) == before_out


def test_an_oversized_receipt_is_refused_with_bounded_memory(tmp_path):
    c = Case(tmp_path)
    c.seal()
    huge = tmp_path / "receipt.json"
    with open(str(huge), "wb") as f:
        f.truncate(1024 * 1024 * 1024)  # 1 GiB, sparse
    code = ("from ansible_collections.llmops.onprem.plugins.module_utils import _delta as D, _bundle as B\n"
            "try:\n    D.build_delta(%r, %r, %r, %r)\n    print('ACCEPTED')\n"
            "except B.BundleError as e:\n    print('REFUSED: ' + str(e))\n") % (str(c.root), str(tmp_path / "d"), c.priv, str(huge))
    proc, peak = run_measured(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "REFUSED: the receipt (%s) is larger than 64.0 MiB, the most that is read" % huge
    assert peak < PEAK_MEMORY_LIMIT, peak
    assert not (tmp_path / "d").exists()
