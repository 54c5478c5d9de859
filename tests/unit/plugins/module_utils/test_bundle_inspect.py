"""bundle_inspect's pure parts: licences as packages declare them (DEP-5 copyright files, wheel
METADATA), the apt index and file names, image references, the .deb reader's bounds (a linked doc
folder is not followed, a scan stops at its limit, a compression it cannot read says so), the SBOM
validator's refusal, and the text tables."""
import io
import json
import lzma
import tarfile
import zipfile

import pytest

from ansible_collections.llmops.onprem.plugins.module_utils import _bundle as B
from ansible_collections.llmops.onprem.plugins.module_utils import _bundle_inspect as I

DEP5 = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: x

Files: debian/*
Copyright: 2026 Packager
License: GPL-2+

Files: *
Copyright: 2026 Upstream
License: Expat

Files: vendor/*
License: Expat

License: Expat
 Permission is hereby granted...
"""


def test_dep5_lists_the_files_star_licence_first_each_once():
    assert I.dep5_licenses(DEP5) == ["Expat", "GPL-2+"]


def test_a_copyright_file_that_is_not_dep5_gives_none():
    assert I.dep5_licenses("This package was debianized by someone.\n\nIt is GPL.\n") is None
    assert I.dep5_licenses("") is None


@pytest.mark.parametrize("headers, want", [
    ("License-Expression: Apache-2.0 OR BSD-3-Clause\nClassifier: License :: OSI Approved :: MIT License",
     ("expression", ["Apache-2.0 OR BSD-3-Clause"])),
    ("Classifier: License :: OSI Approved :: MIT License\nClassifier: License :: OSI Approved :: Apache Software License\n"
     "Classifier: Programming Language :: Python", ("licenses", ["MIT", "Apache Software License"])),
    ("License: BSD-3-Clause", ("licenses", ["BSD-3-Clause"])),
    ("License: UNKNOWN", ("none", [])),
    ("License: Copyright (c) 2026\n        Permission is hereby granted, free of charge", ("none", [])),
    ("Classifier: License :: OSI Approved", ("none", [])),
])
def test_wheel_licences_as_metadata_declares_them(headers, want):
    assert I.wheel_licenses("Metadata-Version: 2.4\nName: x\nVersion: 1\n%s\n\nlong description\n" % headers) == want


def test_wheel_and_deb_and_image_names():
    assert I.wheel_name("Jinja2-3.1.6-py3-none-any.whl") == ("jinja2", "3.1.6")
    assert I.wheel_name("ruamel.yaml-0.19.1-1-py3-none-any.whl") == ("ruamel-yaml", "0.19.1")
    assert I.wheel_name("not-a-wheel.zip") == (None, None)
    assert I.deb_name("pool/libc6_2.36-9%3a1_amd64.deb") == ("libc6", "2.36-9:1", "amd64")
    assert I.split_ref("docker.io/library/busybox:1.36") == ("docker.io/library/busybox", "1.36")
    assert I.split_ref("localhost:5000/app@sha256:" + "0" * 64) == ("localhost:5000/app", None)
    assert I.split_ref("localhost:5000/app:2") == ("localhost:5000/app", "2")


def test_packages_index_stanzas():
    text = ("Package: redis-server\nVersion: 5:7.0.15-1\nArchitecture: amd64\nFilename: pool/redis-server_5%3a7.0.15-1_amd64.deb\n"
            "Size: 98000\nSHA256: " + "a" * 64 + "\nDescription: x\n continued\n\nPackage: b\nVersion: 1\nSize: bad\n")
    assert I.parse_packages_index(text) == [
        {"name": "redis-server", "version": "5:7.0.15-1", "arch": "amd64", "filename": "pool/redis-server_5%3a7.0.15-1_amd64.deb",
         "size": 98000, "sha256": "a" * 64},
        {"name": "b", "version": "1", "arch": None, "filename": None, "size": None, "sha256": None}]


def _deb(members, data_name="data.tar.xz"):
    """A .deb (ar) whose data.tar holds `members` [(name, bytes or ('link', target) or ('dir',))]."""
    tbuf = io.BytesIO()
    with tarfile.open(fileobj=tbuf, mode="w") as t:
        for name, what in members:
            ti = tarfile.TarInfo(name)
            if isinstance(what, tuple) and what[0] == "link":
                ti.type, ti.linkname = tarfile.SYMTYPE, what[1]
                t.addfile(ti)
            else:
                ti.size = len(what)
                t.addfile(ti, io.BytesIO(what))
    data = lzma.compress(tbuf.getvalue()) if data_name.endswith(".xz") else tbuf.getvalue()
    out = io.BytesIO()
    out.write(b"!<arch>\n")
    for name, body in (("debian-binary", b"2.0\n"), ("control.tar.xz", lzma.compress(b"\0" * 1024)), (data_name, data)):
        out.write(("%-16s%-12s%-6s%-6s%-8s%-10d`\n" % (name, 0, 0, 0, 100644, len(body))).encode())
        out.write(body + (b"\n" if len(body) % 2 else b""))
    out.seek(0)
    return out


def test_deb_copyright_is_found_in_data_tar():
    f = _deb([("./usr/bin/tool", b"x" * 100), ("./usr/share/doc/tool/copyright", DEP5.encode())])
    text, why = I.deb_copyright(f, "tool")
    assert why is None and I.dep5_licenses(text) == ["Expat", "GPL-2+"]


def test_deb_doc_folder_that_is_a_link_is_not_followed():
    f = _deb([("./usr/share/doc/tool", ("link", "libtool-common")), ("./usr/share/doc/libtool-common/copyright", DEP5.encode())])
    assert I.deb_copyright(f, "tool") == (None, "usr/share/doc/tool is a link to libtool-common (not followed)")


def test_deb_scan_stops_at_its_limit():
    f = _deb([("./usr/lib/big", b"\0" * (3 * 1024 * 1024)), ("./usr/share/doc/tool/copyright", DEP5.encode())])
    text, why = I.deb_copyright(f, "tool", limit=1024 * 1024)
    assert text is None and why == "no usr/share/doc/tool/copyright in the first 1.0 MiB of data.tar"


def test_deb_with_a_compression_the_standard_library_cannot_read():
    f = _deb([("./usr/share/doc/tool/copyright", b"x")], data_name="data.tar.zst")
    assert I.deb_copyright(f, "tool") == (None, "data.tar.zst is not readable with the Python standard library")
    assert I.deb_copyright(io.BytesIO(b"PK\3\4 not a deb"), "tool") == (None, "not a Debian package (no ar header)")


def test_wheel_metadata_larger_than_the_member_limit_is_not_read():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x-1.dist-info/METADATA", "License: MIT\n" + " " * I.MEMBER_LIMIT)
    text, why = I._zip_member(buf.getvalue(), r"^[^/]+\.dist-info/METADATA$", "python/x-1-py3-none-any.whl")
    assert text is None and why == "x-1.dist-info/METADATA in python/x-1-py3-none-any.whl is %d bytes (more than %d)" % (
        I.MEMBER_LIMIT + 13, I.MEMBER_LIMIT)


def _inventory(**over):
    inv = {"bundle": {"id": "ab" * 32, "name": "lab", "created": "2026-12-01T10:00:00Z", "versions": {"vllm": "0.34.0"},
                      "segmented": False, "segments": 0},
           "verified": {"hashed": {"files": 3, "bytes": 2048}},
           "images": [{"ref": "docker.io/library/busybox:1.36", "name": "docker.io/library/busybox", "tag": "1.36",
                       "digest": "sha256:" + "c" * 64, "size": 2 * 1024 * 1024, "platforms": ["linux/amd64"], "blobs": 3}],
           "charts": [], "packages": [], "collections": [], "binaries": [],
           "wheels": [{"name": "jinja2", "version": "3.1.6", "path": "python/jinja2.whl", "size": 1000, "sha256": "d" * 64,
                       "license_kind": "licenses", "licenses": ["BSD-3-Clause"], "license_source": "METADATA"}],
           "models": [{"name": "tiny", "files": 1, "size": 10, "manifest_digest": "e" * 64,
                       "file_list": [{"path": "model.safetensors", "size": 10, "sha256": "f" * 64}]}],
           "destinations": {"controller": {"files": 5, "bytes": 3000000, "human": "2.9 MiB"},
                            "registry": {"files": 3, "bytes": 2097152, "human": "2.0 MiB"}},
           "problems": []}
    inv.update(over)
    return inv


def test_sbom_is_deterministic_and_valid():
    a, b = I.sbom_document(_inventory()), I.sbom_document(_inventory())
    assert a == b and I.validate_sbom(a) is None
    doc = json.loads(a)
    assert doc["metadata"]["timestamp"].startswith("2026-12-01T10:00:00")
    assert doc["serialNumber"].startswith("urn:uuid:")


def test_an_sbom_that_does_not_validate_is_refused():
    bad = json.loads(I.sbom_document(_inventory()))
    bad["components"][0]["hashes"][0]["content"] = "not-a-digest"
    why = I.validate_sbom(json.dumps(bad))
    assert why.startswith("'not-a-digest' does not match") and why.endswith("(at /components/0/hashes/0/content)")


def test_a_licence_that_cannot_be_an_expression_stays_a_name():
    w = dict(_inventory()["wheels"][0], license_kind="expression", licenses=["BSD or whatever, see LICENSE"])
    doc = json.loads(I.sbom_document(_inventory(wheels=[w])))
    (comp,) = [c for c in doc["components"] if c.get("purl", "").startswith("pkg:pypi/")]
    assert comp["licenses"] == [{"license": {"name": "BSD or whatever, see LICENSE"}}]


def test_listing_tables():
    lines = I.listing(_inventory(problems=["images/blobs/sha256/x is in the signed manifest but belongs to nothing"]))
    assert lines[0] == "Bundle lab (directory), created 2026-12-01T10:00:00Z, id " + "ab" * 32
    assert lines[1] == ("Verified: signature, listing and sizes; 3 metadata and package files (2.0 KiB) hashed; image layers "
                        "and checkpoints not hashed (bundle_verify does that)")
    assert "Versions: vllm 0.34.0" in lines
    at = lines.index("Images (1)")
    assert lines[at + 1].split() == ["ref", "digest", "size", "platform"]
    assert lines[at + 2].split() == ["docker.io/library/busybox:1.36", "sha256:" + "c" * 64, "2.0", "MiB", "linux/amd64"]
    assert lines[lines.index("Python wheels (1)") + 2].split() == ["jinja2", "3.1.6", "1000", "B", "BSD-3-Clause"]
    assert "Charts" not in " ".join(lines)  # empty categories print nothing
    assert lines[-2:] == ["Problems (1)", "- images/blobs/sha256/x is in the signed manifest but belongs to nothing"]
    assert I.table([("a", 1), ("long name", None)], ("name", "n")) == ["name       n", "a          1", "long name"]


def test_a_source_that_is_not_a_directory_is_refused(tmp_path):
    with pytest.raises(B.BundleError) as e:
        I.inspect(str(tmp_path / "nowhere"), str(tmp_path / "k.pem"))
    assert str(e.value).startswith("the bundle source %s is not a directory" % (tmp_path / "nowhere"))


def test_every_controller_lock_is_claimed_and_nothing_else_named_like_one():
    """python/requirements.lock and a version's own closure (requirements-3.11.lock, roles/bundle_python) belong to the
    python category; another file named like a lock does not (it stays unclaimed, which the listing reports)."""
    files = {p: {"size": 1, "sha256": "0" * 64} for p in (
        "python/requirements.lock", "python/requirements-3.11.lock", "python/requirements-evil.lock", "python/notes.lock")}
    claimed, problems = set(), []
    assert I._python(None, files, claimed, problems) == ([], [])
    assert sorted(claimed) == ["python/requirements-3.11.lock", "python/requirements.lock"] and problems == []
