"""Day two (issue 18, item 3): the site's receipt and the delta bundle, on the lab bundle (real OCI
layout, real .deb packages and apt index, a model, wheels, charts; lab_bundle.py).

Bundle 1 is imported; the site writes its receipt (playbooks/receipt.yml); bundle 2 changes one
image, one checkpoint shard and one package; the delta is built from the receipt by the real
modules (bundle_delta, bundle_pack) and its size printed against the full bundle 2; imported on
top of bundle 1's import by the real module (bundle_verify), it leaves exactly the tree a full
import of bundle 2 leaves. A delta against the wrong base and a held file changed at the site are
refused, naming the files, with nothing written."""
import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest

from ansible_collections.llmops.onprem.plugins.module_utils import _bundle as B

import lab_bundle

REPO = lab_bundle.REPO
ANSIBLE = os.path.join(REPO, ".venv", "bin", "ansible")
PLAYBOOK = os.path.join(REPO, ".venv", "bin", "ansible-playbook")
SEG = "256KiB"


def env():
    return dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), NO_COLOR="1", ANSIBLE_NOCOLOR="1")


def module(name, args, check=False):
    """Run a module of the collection through ansible; (rc, result dict or None, output)."""
    argv = [ANSIBLE, "localhost", "-m", "llmops.onprem." + name, "-a", json.dumps(args), "-o"] + (["--check"] if check else [])
    p = subprocess.run(argv, capture_output=True, text=True, env=env(), cwd=REPO, check=False)
    out = p.stdout + p.stderr
    lines = [x for x in out.splitlines() if "=>" in x]
    res = json.loads(lines[-1].split("=>", 1)[1]) if lines else None
    return p.returncode, res, out


def tree(root):
    """{relative path: sha256} of every file under root; the resume state (whose records hold inode and
    mtime, which differ between any two imports) is compared by its {path: sha256} records instead."""
    out = {}
    for d, dirs, files in os.walk(str(root)):
        for name in files:
            full = os.path.join(d, name)
            rel = os.path.relpath(full, str(root))
            assert not os.path.islink(full), rel
            if rel == ".llmops-import/state.json":
                recs = json.loads(open(full).read())["files"]
                out[rel] = {p: r["sha256"] for p, r in recs.items()}
                continue
            with open(full, "rb") as f:
                out[rel] = hashlib.sha256(f.read()).hexdigest()
    return out


def snapshot(root):
    out = {}
    for d, dirs, files in os.walk(str(root)):
        for name in dirs + files:
            p = os.path.join(d, name)
            st = os.lstat(p)
            out[os.path.relpath(p, str(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino)
    return out


def unwritten(receipt):
    return {k: v for k, v in json.loads(receipt.read_text()).items() if k != "written"}


def media_bytes(media):
    return sum(os.path.getsize(os.path.join(str(media), n)) for n in os.listdir(str(media)))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("delta")
    lab = lab_bundle.build(tmp, segment_size=SEG)
    root2, media2 = lab_bundle.build_v2(lab, tmp)
    return dict(lab, root2=root2, media2=media2, tmp=tmp)


def import_bundle(src, pub, dest):
    return B.Importer(str(src), str(pub), str(dest)).run()


def write_receipt(dest, out):
    """The site's receipt by the real playbook (playbooks/receipt.yml)."""
    p = subprocess.run([PLAYBOOK, os.path.join(REPO, "playbooks", "receipt.yml"), "-e", "bundle_import_dest=%s" % dest,
                        "-e", "bundle_import_receipt=%s" % out], capture_output=True, text=True, env=env(), cwd=REPO, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def make_delta(world, receipt, name):
    out = world["tmp"] / name
    rc, res, text = module("bundle_delta", {"src": str(world["root2"]), "dest": str(out), "receipt": str(receipt),
                                            "private_key": world["priv"]})
    assert rc == 0, text
    media = world["tmp"] / (name + "-media")
    rc, pres, text = module("bundle_pack", {"src": str(out), "dest": str(media), "private_key": world["priv"], "segment_size": SEG})
    assert rc == 0, text
    return out, media, res


def test_delta_from_the_sites_receipt_gives_the_full_import(world, tmp_path):
    site = tmp_path / "site" / ".bundle"
    import_bundle(world["media"], world["pub"], site)
    receipt = tmp_path / "site.receipt.json"
    write_receipt(site, receipt)
    r = json.loads(receipt.read_text())
    assert r["schema"] == "llmops.onprem.receipt/v1"
    assert r["bundles"][0]["id"] == hashlib.sha256((world["root"] / "manifest.json").read_bytes()).hexdigest()
    assert r["totals"]["missing"] == 0 and r["totals"]["held"] == r["totals"]["files"]
    assert {p["name"]: p["version"] for p in r["packages"]["debian-12"]} == {"lab-free": "0.5-2", "lab-tool": "1:2.0-1"}
    assert {c["name"]: c["version"] for c in r["charts"]}["model-engine"] == "0.9.1"
    assert {i["ref"] for i in r["images"]} == set(lab_bundle.IMAGES)
    assert r["checkpoints"]["tiny"]["held"] is True
    # A second receipt run over the same import changes nothing (written time kept).
    before = receipt.read_bytes()
    write_receipt(site, receipt)
    assert receipt.read_bytes() == before

    delta_dir, delta_media, res = make_delta(world, receipt, "delta")
    m2 = json.loads((world["root2"] / "manifest.json").read_text())
    files2 = B.manifest_files(m2)
    d = json.loads((delta_dir / "delta.json").read_text())
    assert d["base"]["bundles"][0]["id"] == r["bundles"][0]["id"]
    carried = set(d["carried"])
    # Only what changed, plus the controller bootstrap (root files, python/, collections/).
    files1 = B.manifest_files(json.loads((world["root"] / "manifest.json").read_text()))
    changed = {p for p, e in files2.items() if files1.get(p, {}).get("sha256") != e["sha256"]}
    assert "models/tiny/model.safetensors" in carried and "packages/debian-12/pool/lab-free_0.5-3_amd64.deb" in carried
    assert "images/index.json" in carried
    assert {p for p in carried if B.kind_of(p) not in ("root", "python", "collections")} == \
        {p for p in changed if B.kind_of(p) not in ("root", "python", "collections")}
    full_bytes, delta_bytes = media_bytes(world["media2"]), media_bytes(delta_media)
    print("\ndelta bundle: %d bytes on the media, full bundle 2: %d bytes (%.1f%%); carried %d of %d files"
          % (delta_bytes, full_bytes, 100.0 * delta_bytes / full_bytes, len(carried), len(files2)))
    assert delta_bytes < full_bytes
    assert res["carried"]["files"] == len(carried) and res["full"]["files"] == len(files2)

    # The site's verify-first step (docs/airgap.md, step 2) works on the delta as on the full bundle: the
    # controller bootstrap is always carried, checked against the same signed manifest.
    extracted = {}
    for name, m in (("full", world["media2"]), ("delta", delta_media)):
        out = tmp_path / ("verified-" + name)
        p = subprocess.run(["sh", os.path.join(REPO, "bundle", "llmops-verify.sh"), "--key", world["pub"], "--bundle", str(m),
                            "--extract", str(out)], capture_output=True, text=True, check=False)
        assert p.returncode == 0, p.stdout + p.stderr
        extracted[name] = (out / "SHA256SUMS").read_text()
    assert extracted["full"] == extracted["delta"] and "python/requirements.lock" in extracted["delta"]

    # The delta's directory is the same bundle (the same signed manifest): check mode plans it.
    rc, plan, text = module("bundle_verify", {"src": str(delta_media), "public_key": world["pub"], "dest": str(site)}, check=True)
    assert rc == 0 and plan["imported"] is False and plan["delta"]["held"] == len(files2) - len(carried), text
    rc, res, text = module("bundle_verify", {"src": str(delta_media), "public_key": world["pub"], "dest": str(site)})
    assert rc == 0, text
    assert res["changed"] is True and res["delta"]["carried"] == len(carried)
    assert res["manifest_sha256"] == hashlib.sha256((world["root2"] / "manifest.json").read_bytes()).hexdigest()

    full = tmp_path / "full" / ".bundle"
    import_bundle(world["media2"], world["pub"], full)
    assert tree(site) == tree(full)
    # The lab's own bytes, too: every file of bundle 2 as sealed.
    for p, e in files2.items():
        assert hashlib.sha256((site / p).read_bytes()).hexdigest() == e["sha256"]

    # Imported again: nothing to do.
    rc, res, text = module("bundle_verify", {"src": str(delta_media), "public_key": world["pub"], "dest": str(site)})
    assert rc == 0 and res["changed"] is False, text
    # The receipt after the delta equals the receipt after the full import.
    r_site, r_full = tmp_path / "a.json", tmp_path / "b.json"
    write_receipt(site, r_site)
    write_receipt(full, r_full)
    assert unwritten(r_site) == unwritten(r_full)
    # A second delta build with the same receipt changes nothing.
    rc, again, text = module("bundle_delta", {"src": str(world["root2"]), "dest": str(delta_dir), "receipt": str(receipt),
                                              "private_key": world["priv"]})
    assert rc == 0 and again["changed"] is False, text


def test_a_delta_against_another_base_is_refused_naming_what_is_missing(world, tmp_path):
    site = tmp_path / "site" / ".bundle"
    import_bundle(world["media"], world["pub"], site)
    receipt = tmp_path / "site.receipt.json"
    write_receipt(site, receipt)
    dummy, delta_media, res = make_delta(world, receipt, "delta-wrong-base")
    # Another site: it holds bundle 1 with one held file gone missing (and nothing at all, below).
    other = tmp_path / "other" / ".bundle"
    import_bundle(world["media"], world["pub"], other)
    base_layer = [p for p in B.manifest_files(json.loads((world["root2"] / "manifest.json").read_text()))
                  if p.startswith("images/blobs/") and os.path.getsize(str(world["root2"] / p)) > 200 * 1024][0]
    os.unlink(str(other / base_layer))
    before = snapshot(other)
    rc, out, text = module("bundle_verify", {"src": str(delta_media), "public_key": world["pub"], "dest": str(other)})
    assert rc != 0
    msg = out["msg"]
    assert msg.startswith("delta refused: this delta carries %d of the bundle's" % res["carried"]["files"]), msg
    assert "lacks 1 of them: %s (sha256 %s" % (base_layer, base_layer.rsplit("/", 1)[1]) in msg, msg
    assert "its base is bundle %s (lab" % res["base"]["bundles"][0]["id"][:16] in msg, msg
    assert msg.endswith("Nothing was written"), msg
    assert snapshot(other) == before
    # A site with no import at all: everything the delta does not carry is named (the first 20, then a count).
    empty = tmp_path / "empty" / ".bundle"
    rc, out, text = module("bundle_verify", {"src": str(delta_media), "public_key": world["pub"], "dest": str(empty)})
    assert rc != 0 and "(last import: none finished) lacks %d of them" % res["held"]["files"] in out["msg"], text
    assert not empty.exists()


def test_a_held_file_changed_at_the_site_is_refused(world, tmp_path):
    site = tmp_path / "site" / ".bundle"
    import_bundle(world["media"], world["pub"], site)
    receipt = tmp_path / "site.receipt.json"
    write_receipt(site, receipt)
    dummy, delta_media, res = make_delta(world, receipt, "delta-tamper")
    # The site's copy of a file the delta does not carry is changed after the receipt (same size, mtime restored).
    victim = site / "charts" / "llmops-serving" / "Chart.yaml"
    st = os.stat(str(victim))
    data = bytearray(victim.read_bytes())
    data[0] ^= 0x20
    victim.write_bytes(bytes(data))
    os.utime(str(victim), ns=(st.st_atime_ns, st.st_mtime_ns))
    before = snapshot(site)
    rc, out, text = module("bundle_verify", {"src": str(delta_media), "public_key": world["pub"], "dest": str(site)})
    assert rc != 0
    msg = out["msg"]
    assert msg.startswith("delta refused: 1 file(s) the delta does not carry differ in %s from the signed manifest: "
                          "charts/llmops-serving/Chart.yaml (the manifest says sha256 " % site), msg
    assert "the site holds %s)" % hashlib.sha256(bytes(data)).hexdigest() in msg, msg
    assert snapshot(site) == before


def playbook(inventory, *extra, check=False):
    argv = [PLAYBOOK, "-i", str(inventory), os.path.join(REPO, "playbooks", "bundle.yml")] + list(extra) + (["--check"] if check else [])
    p = subprocess.run(argv, capture_output=True, text=True, env=dict(env(), ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default"),
                       cwd=REPO, check=False)
    return p.returncode, p.stdout + p.stderr


def recap_changed(out):
    line = [x for x in out.splitlines() if x.startswith("localhost") and "changed=" in x][-1]
    return int(line.split("changed=")[1].split()[0])


def test_bundle_playbook_with_a_receipt_packs_the_delta(tmp_path):
    """The wiring: playbooks/bundle.yml -e bundle_receipt=... seals the full bundle, writes the delta
    beside it and packs the delta into bundle_segments_dir; a re-run changes nothing; the site imports
    the delta on top of bundle 1 (site.yml's first stage, the bundle_import role) and writes its receipt."""
    inv = tmp_path / "inv"
    inv.mkdir()
    (inv / "hosts.yml").write_text("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
                                   "      ansible_python_interpreter: %s\n" % sys.executable)
    chart = tmp_path / "chart"
    shutil.copytree(os.path.join(REPO, "serving", "chart"), str(chart))
    binary = tmp_path / "tool"
    binary.write_bytes(os.urandom(200 * 1024))

    def spec(name):
        return json.dumps({"bundle_spec": {"name": name, "charts": [{"name": "serving", "path": str(chart)}],
                                           "binaries": [{"name": "tool", "path": str(binary),
                                                         "sha256": hashlib.sha256(binary.read_bytes()).hexdigest()}]}})
    rc, out = playbook(inv, "-e", spec("one"), "-e", "bundle_dir=%s" % (tmp_path / "b1"), "-e", "bundle_segments_dir=%s" % (tmp_path / "m1"))
    assert rc == 0, out
    pub = inv / ".private" / "bundle" / "signing-key.pub.pem"
    site = tmp_path / "site" / ".bundle"
    imp = [PLAYBOOK, "-i", str(inv), os.path.join(REPO, "playbooks", "site.yml"), "--tags", "bundle_import", "-e",
           "llmops_bundle=%s" % (tmp_path / "m1"), "-e", "bundle_import_public_key=%s" % pub, "-e", "bundle_import_dest=%s" % site]
    p = subprocess.run(imp, capture_output=True, text=True, env=env(), cwd=REPO, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    receipt = tmp_path / "site" / ".bundle.receipt.json"
    assert json.loads(receipt.read_text())["totals"]["missing"] == 0, p.stdout
    # Bundle 2: the binary changes; the delta carries it (and the bootstrap script), not the chart.
    binary.write_bytes(os.urandom(200 * 1024))
    args = ["-e", spec("two"), "-e", "bundle_dir=%s" % (tmp_path / "b2"), "-e", "bundle_segments_dir=%s" % (tmp_path / "m2"),
            "-e", "bundle_receipt=%s" % receipt]
    rc, out = playbook(inv, *args)
    assert rc == 0, out
    assert "delta carries 2 of 16 files" in out, out
    d = json.loads((tmp_path / "m2" / "delta.json").read_text())
    assert sorted(d["carried"]) == ["binaries/tool", "llmops-verify.sh"]
    assert json.loads((tmp_path / "m2" / "segments.json").read_text())["delta_sha256"] == \
        hashlib.sha256((tmp_path / "m2" / "delta.json").read_bytes()).hexdigest()
    rc, out = playbook(inv, *args)
    assert rc == 0 and recap_changed(out) == 0, out
    imp[imp.index("llmops_bundle=%s" % (tmp_path / "m1"))] = "llmops_bundle=%s" % (tmp_path / "m2")
    p = subprocess.run(imp, capture_output=True, text=True, env=env(), cwd=REPO, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "A delta: it carried 2 files" in p.stdout, p.stdout
    assert (site / "binaries" / "tool").read_bytes() == binary.read_bytes()
    r = json.loads(receipt.read_text())
    assert r["bundles"][0]["name"] == "two" and r["totals"]["missing"] == 0
