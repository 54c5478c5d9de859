"""bundle_inspect on the lab bundle (lab_bundle.py: real OCI layout, real .deb packages and apt index,
wheels, charts, a model), as a directory and as segments: every file of the signed manifest is
accounted for in exactly one category, the SBOM validates against the CycloneDX schema with the
library's own validator and holds the expected purls and hashes, and a tampered, linked or oversized
bundle is refused with its reason and nothing written. The playbook runs for real, check mode first."""
import json
import os
import re
import shutil
import subprocess

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

import lab_bundle
from ansible_collections.llmops.onprem.plugins.module_utils import _bundle as B
from ansible_collections.llmops.onprem.plugins.module_utils import _bundle_inspect as I
from ansible_collections.llmops.onprem.plugins.modules import bundle_inspect, bundle_seal

REPO = lab_bundle.REPO


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return lab_bundle.build(tmp_path_factory.mktemp("lab"))


def inspect(src, pub, out, check=False):
    return bundle_inspect.run(dict(src=str(src), public_key=pub, dest=str(out), package_licenses=True), check)


def signed_files(src):
    return B.manifest_files(json.loads((src / B.MANIFEST).read_text()))


def copy_bundle(lab, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(str(lab["root"]), str(dst))
    return dst


def refused(src, pub, out, text):
    with pytest.raises(B.BundleError) as e:
        inspect(src, pub, out)
    assert text in str(e.value), str(e.value)
    assert not out.exists(), "a refused bundle left %s" % sorted(os.listdir(str(out)))
    return str(e.value)


@pytest.mark.parametrize("form", ["root", "media"])
def test_listing_accounts_for_every_manifest_file(lab, tmp_path, form):
    res = inspect(lab[form], lab["pub"], tmp_path / "out")
    files = signed_files(lab["root"])
    seen = [p for c in res["categories"].values() for p in c["paths"]]
    assert sorted(seen) == sorted(files) and len(seen) == len(set(seen)), "a file in no category or in two"
    assert all(c["unclaimed"] == [] for c in res["categories"].values()) and res["problems"] == []
    assert res["bundle"]["segmented"] is (form == "media") and res["bundle"]["name"] == "lab"
    assert res["bundle"]["versions"] == {"vllm": "0.34.0"}
    assert res["verified"]["signature"] and not res["verified"]["data_hashed"]
    # index.json, 2 image manifests and configs, Packages, 2 .debs, 2 wheels, a Chart.yaml, a .tgz: nothing else hashed
    assert res["verified"]["hashed"]["files"] == 12

    assert sorted((i["ref"], i["digest"]) for i in res["images"]) == sorted((i["ref"], i["digest"]) for i in lab["images"])
    busybox = [i for i in res["images"] if i["name"] == "docker.io/library/busybox"][0]
    assert busybox["tag"] == "1.36" and busybox["platforms"] == ["linux/amd64"] and busybox["blobs"] == 4
    blobs = [p for p in files if p.startswith("images/blobs/")]
    assert res["destinations"]["registry"]["bytes"] == sum(files[p]["size"] for p in res["categories"]["images"]["paths"])
    assert busybox["size"] < sum(files[p]["size"] for p in blobs)  # the shared layer counts once in the registry
    assert sorted((p["name"], p["version"], p["arch"]) for p in res["packages"]) == [
        ("lab-free", "0.5-2", "amd64"), ("lab-tool", "1:2.0-1", "amd64")]
    assert sorted((w["name"], w["version"]) for w in res["wheels"]) == [("demo-lib", "1.2.0"), ("other-pkg", "0.3")]
    assert sorted((c["name"], c["chart"], c["version"]) for c in res["charts"]) == [
        ("llmops-serving", "llmops-serving", "0.1.0"), ("model-engine", "model-engine", "0.9.1")]
    (model,) = res["models"]
    digest = B.checkpoint_manifests(json.loads((lab["root"] / B.MANIFEST).read_text()))["tiny"][1]
    assert (model["name"], model["files"], model["manifest_digest"]) == ("tiny", 3, digest)
    assert res["destinations"]["object_store"]["bytes"] == model["size"]
    assert res["destinations"]["controller"] == {"files": len(files), "bytes": sum(e["size"] for e in files.values()),
                                                 "human": B.human(sum(e["size"] for e in files.values()))}
    text = "\n".join(res["listing"])
    for line in ("Images (2)", "OS packages (2)", "Python wheels (2)", "Models (1)", "Totals per destination"):
        assert line in text
    assert re.search(r"(?m)^lab-tool +1:2\.0-1 +amd64 +5\.\d KiB +GPL-2\+, BSD-3-clause$", text), text


def test_sbom_validates_and_holds_purls_hashes_and_licences(lab, tmp_path):
    out = tmp_path / "out"
    res = inspect(lab["media"], lab["pub"], out)
    assert sorted(res["written"]) == [str(out / "inventory.json"), str(out / "sbom.cdx.json")]
    raw = (out / "sbom.cdx.json").read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(raw) is None
    doc = json.loads(raw)
    files = signed_files(lab["root"])
    comps = {c["bom-ref"]: c for c in doc["components"]}
    purls = {PackageURL.from_string(c["purl"]).to_dict()["name"]: PackageURL.from_string(c["purl"]) for c in comps.values() if "purl" in c}
    for img in lab["images"]:
        c = comps["image:" + img["ref"]]
        p = PackageURL.from_string(c["purl"])
        assert (p.type, p.version, p.qualifiers["repository_url"]) == ("oci", img["digest"], img["ref"].rsplit(":", 1)[0])
        assert c["hashes"] == [{"alg": "SHA-256", "content": img["digest"].split(":")[1]}] and c["type"] == "container"
    tool = purls["lab-tool"]
    assert (tool.type, tool.namespace, tool.version, tool.qualifiers) == ("deb", "debian", "1:2.0-1",
                                                                          {"arch": "amd64", "distro": "debian-12"})
    deb = comps["deb:debian-12:packages/debian-12/pool/lab-tool_1%3a2.0-1_amd64.deb"]
    assert deb["hashes"][0]["content"] == files["packages/debian-12/pool/lab-tool_1%3a2.0-1_amd64.deb"]["sha256"]
    # the library keeps licences in a sorted set: compare as sets
    want = [{"license": {"name": "GPL-2+"}}, {"license": {"id": "BSD-3-Clause"}}]
    assert sorted(map(json.dumps, deb["licenses"])) == sorted(map(json.dumps, want))
    free = comps["deb:debian-12:packages/debian-12/pool/lab-free_0.5-2_amd64.deb"]
    assert "licenses" not in free and {"name": "llmops:license-source",
                                       "value": "usr/share/doc/lab-free/copyright is not machine-readable (DEP-5)"} in free["properties"]
    assert purls["demo-lib"].to_string() == "pkg:pypi/demo-lib@1.2.0"
    assert comps["pypi:python/demo_lib-1.2.0-py3-none-any.whl"]["licenses"] == [{"expression": "MIT OR Apache-2.0"}]
    assert comps["pypi:python/other_pkg-0.3-py3-none-any.whl"]["licenses"] == [{"license": {"id": "MIT"}}]
    model = comps["model:tiny"]
    assert model["type"] == "machine-learning-model" and model["hashes"][0]["content"] == res["models"][0]["manifest_digest"]
    assert sorted((c["name"], c["type"], c["hashes"][0]["content"]) for c in model["components"]) == sorted(
        (p.split("/", 2)[2], "data", e["sha256"]) for p, e in files.items() if p.startswith("models/tiny/"))
    assert doc["metadata"]["component"]["hashes"][0]["content"] == res["bundle"]["id"]
    # The same bundle gives the same bytes: a second run writes nothing.
    again = inspect(lab["media"], lab["pub"], out)
    assert again["changed"] is False and again["written"] == [] and (out / "sbom.cdx.json").read_text() == raw
    inv = json.loads((out / "inventory.json").read_text())
    assert inv["bundle"]["id"] == res["bundle"]["id"] and "listing" not in inv


def test_edited_manifest_is_refused_and_nothing_written(lab, tmp_path):
    src = copy_bundle(lab, tmp_path)
    m = (src / B.MANIFEST).read_bytes()
    (src / B.MANIFEST).write_bytes(m.replace(b'"vllm": "0.34.0"', b'"vllm": "0.35.0"'))
    refused(src, lab["pub"], tmp_path / "out", "the signature of manifest.json does not verify with the public key %s" % lab["pub"])


def test_signature_by_another_key_is_refused(lab, tmp_path):
    src = copy_bundle(lab, tmp_path)
    other_priv, dummy = lab_bundle.keypair(tmp_path / "other")
    (src / B.SIGNATURE).write_bytes(B.sign((src / B.MANIFEST).read_bytes(), other_priv))
    refused(src, lab["pub"], tmp_path / "out", "the signature of manifest.json does not verify")
    (src / B.SIGNATURE).unlink()
    refused(src, lab["pub"], tmp_path / "out", "manifest.json.sig is missing: the bundle is not signed, refusing it")


def test_edited_segments_table_is_refused(lab, tmp_path):
    media = tmp_path / "media"
    shutil.copytree(str(lab["media"]), str(media))
    table = (media / B.SEGMENTS).read_bytes()
    (media / B.SEGMENTS).write_bytes(table.replace(b'"bundle-0001.tar"', b'"bundle-0009.tar"', 1))
    refused(media, lab["pub"], tmp_path / "out", "the signature of segments.json does not verify")


def test_metadata_changed_after_signing_is_refused(lab, tmp_path):
    """Same size, other bytes: the listing passes, the read of the metadata file catches it."""
    src = copy_bundle(lab, tmp_path)
    p = src / "packages" / "debian-12" / "Packages"
    data = p.read_bytes()
    p.write_bytes(data.replace(b"lab-tool", b"lab-toox", 1))
    msg = refused(src, lab["pub"], tmp_path / "out", "sha256 mismatch for packages/debian-12/Packages: the signed manifest says")
    assert msg.endswith("refusing to list it")


def test_a_symbolic_link_in_the_bundle_is_refused(lab, tmp_path):
    src = copy_bundle(lab, tmp_path)
    outside = tmp_path / "outside.json"
    outside.write_bytes((src / "models" / "tiny" / "config.json").read_bytes())
    (src / "models" / "tiny" / "config.json").unlink()
    os.symlink(str(outside), str(src / "models" / "tiny" / "config.json"))
    refused(src, lab["pub"], tmp_path / "out", "models/tiny/config.json is a symbolic link: a bundle holds regular files only")
    src2 = copy_bundle(lab, tmp_path / "two")
    real = tmp_path / "manifest-elsewhere.json"
    shutil.move(str(src2 / B.MANIFEST), str(real))
    os.symlink(str(real), str(src2 / B.MANIFEST))
    refused(src2, lab["pub"], tmp_path / "out", "manifest.json is a symbolic link or another special file")


def test_an_oversized_metadata_file_is_refused_before_it_is_read(lab, tmp_path):
    """A validly signed bundle whose images/index.json is larger than inspect reads: refused by its signed
    size, before a byte of it is read."""
    src = copy_bundle(lab, tmp_path)
    index = (src / "images" / "index.json").read_bytes()
    (src / "images" / "index.json").write_bytes(index + b" " * (I.METADATA_LIMIT + 1 - len(index)))
    bundle_seal.run(dict(path=str(src), private_key=lab["priv"], spec={"name": "lab"}, versions={}, images=lab["images"]), False)
    refused(src, lab["pub"], tmp_path / "out",
            "images/index.json is %d bytes in the signed manifest; inspect reads an OCI index of at most %d bytes"
            % (I.METADATA_LIMIT + 1, I.METADATA_LIMIT))


def test_playbook_check_mode_writes_nothing_then_writes_then_changes_nothing(lab, tmp_path):
    out = tmp_path / "inspect"
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1")

    def play(*extra):
        p = subprocess.run([os.path.join(REPO, ".venv", "bin", "ansible-playbook"), os.path.join(REPO, "playbooks", "bundle_inspect.yml"),
                            "-e", "llmops_bundle=%s" % lab["media"], "-e", "bundle_import_public_key=%s" % lab["pub"],
                            "-e", "bundle_inspect_out=%s" % out] + list(extra), capture_output=True, text=True, env=env, cwd=REPO, check=False)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
        return p.stdout

    checked = play("--check")
    assert not out.exists() and "(not written: check mode)" in checked and "Totals per destination" in checked
    first = play()
    assert re.search(r"localhost\s+:\s+ok=3\s+changed=1\s", first), first[-1500:]
    assert sorted(os.listdir(str(out))) == ["inventory.json", "sbom.cdx.json"]
    assert "registry.example.org/llmops/serving:1.0" in first and "object store" in first
    second = play()
    assert re.search(r"localhost\s+:\s+ok=3\s+changed=0\s", second), second[-1500:]


def test_metadata_changed_inside_a_segment_is_refused(lab, tmp_path):
    """On media the metadata is read out of the segments: a changed byte there is caught by its sha256."""
    media = tmp_path / "media"
    shutil.copytree(str(lab["media"]), str(media))
    table = json.loads((media / B.SEGMENTS).read_text())
    (seg,) = [s["name"] for s in table["segments"] if any(m["path"] == "packages/debian-12/Packages" for m in s["members"])]
    data = (media / seg).read_bytes()
    at = data.index(b"Package: lab-tool")
    (media / seg).write_bytes(data[:at] + b"Package: lab-toox" + data[at + len(b"Package: lab-tool"):])
    refused(media, lab["pub"], tmp_path / "out", "sha256 mismatch for packages/debian-12/Packages: the signed manifest says")


def test_without_the_sbom_only_the_inventory_is_written_and_the_totals_are_the_same(lab, tmp_path):
    """What the preflight stage asks for: the totals per destination, no SBOM built or written."""
    full = inspect(lab["media"], lab["pub"], tmp_path / "full")
    out = tmp_path / "out"
    res = bundle_inspect.run(dict(src=str(lab["media"]), public_key=lab["pub"], dest=str(out), package_licenses=False, sbom=False),
                             False)
    assert res["sbom"] is None and res["written"] == [str(out / "inventory.json")]
    assert sorted(os.listdir(str(out))) == ["inventory.json"]
    assert res["destinations"] == full["destinations"] and res["models"] == full["models"]
