"""roles/bundle_python/files/pack_collection.py: an installed collection becomes an installable,
reproducible Galaxy artifact; missing listed files are dropped, modified ones refused."""
import hashlib
import importlib.util
import io
import json
import os
import tarfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
_spec = importlib.util.spec_from_file_location("pack_collection", os.path.join(ROOT, "roles", "bundle_python", "files", "pack_collection.py"))
pack_collection = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pack_collection)


def installed_collection(tmp_path):
    src = tmp_path / "ns" / "coll"
    (src / "plugins" / "modules").mkdir(parents=True)
    files = {"plugins/modules/a.py": b"print('a')\n", "README.md": b"readme\n", ".ci/run.sh": b"#!/bin/sh\n"}
    entries = [dict(name=".", ftype="dir", chksum_type=None, chksum_sha256=None, format=1)]
    for name in ["plugins", "plugins/modules"]:
        entries.append(dict(name=name, ftype="dir", chksum_type=None, chksum_sha256=None, format=1))
    for name, data in sorted(files.items()):
        entries.append(dict(name=name, ftype="file", chksum_type="sha256", chksum_sha256=hashlib.sha256(data).hexdigest(), format=1))
        if not name.startswith(".ci"):  # the installer left this one out
            (src / name).write_bytes(data)
    (src / "FILES.json").write_text(json.dumps(dict(files=entries, format=1)))
    manifest = dict(collection_info=dict(namespace="ns", name="coll", version="1.2.3"),
                    file_manifest_file=dict(name="FILES.json", ftype="file", chksum_type="sha256", chksum_sha256="stale", format=1),
                    format=1)
    (src / "MANIFEST.json").write_text(json.dumps(manifest))
    (src / "plugins" / "modules" / "__pycache__").mkdir()
    (src / "plugins" / "modules" / "__pycache__" / "a.cpython-312.pyc").write_bytes(b"junk")
    return src


def members(data):
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name: (tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()}


def test_pack_drops_missing_files_and_updates_the_manifest_checksum(tmp_path):
    src = installed_collection(tmp_path)
    data = pack_collection.pack(str(src))
    got = members(data)
    assert sorted(got) == ["FILES.json", "MANIFEST.json", "README.md", "plugins", "plugins/modules", "plugins/modules/a.py"]
    files = json.loads(got["FILES.json"])
    assert [e["name"] for e in files["files"]] == [".", "plugins", "plugins/modules", "README.md", "plugins/modules/a.py"]
    manifest = json.loads(got["MANIFEST.json"])
    assert manifest["file_manifest_file"]["chksum_sha256"] == hashlib.sha256(got["FILES.json"]).hexdigest()
    assert manifest["collection_info"]["version"] == "1.2.3"


def test_pack_is_reproducible_and_main_rewrites_only_on_change(tmp_path, capsys):
    src = installed_collection(tmp_path)
    out = str(tmp_path / "ns-coll-1.2.3.tar.gz")
    assert pack_collection.main(["x", str(src), out]) == 0
    first = open(out, "rb").read()
    os.utime(str(src / "README.md"), (1, 1))
    assert pack_collection.main(["x", str(src), out]) == 0
    assert open(out, "rb").read() == first
    assert capsys.readouterr().out.split() == ["changed", "unchanged"]


def test_a_modified_installed_file_is_refused(tmp_path, capsys):
    src = installed_collection(tmp_path)
    (src / "README.md").write_bytes(b"edited\n")
    out = str(tmp_path / "out.tar.gz")
    assert pack_collection.main(["x", str(src), out]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cannot pack %s: %s: sha256 " % (src, src / "README.md"))
    assert "differs from FILES.json" in err and "the installed collection was modified" in err
    assert not os.path.exists(out)
    with pytest.raises(ValueError):
        pack_collection.pack(str(src))
