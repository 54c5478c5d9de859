"""playbooks/verify.yml on a lab without a cluster: a real `rclone serve s3` holding a checkpoint synced by
checkpoint_sync, a site CA and a service certificate made with the cryptography library, a destination on its own
small tmpfs, and the site's state file as the stages write it. No network beyond loopback.

- green: every non-cluster line ok, the cluster lines skipped with the reason, report.json and report.html written
  (0600 in 0700), exit 0, changed=0;
- then one fault at a time, each giving its red line with its fix, a non-zero exit after the report is written, and
  nothing changed (the inventory, the store's objects, the destination): an object of the checkpoint changed in the
  store behind the collection's back (same size, same sha256 metadata: only its bytes differ); the service
  certificate 3 days from expiry; the destination's filesystem full;
- the red report's page opened in headless Chromium: the screenshot is under 1 MiB and shows the red and the green
  status cells; the page names no public host (the egress audit's public-url rule).
"""
import datetime
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib

import pytest
from ckpt_helpers import BUCKET, RO, RW, make_checkpoint, run_module_process, sync_args
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ansible_collections.llmops.onprem.plugins.module_utils import _checkpoint, _egress

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
RED, GREEN = (0xCF, 0x22, 0x2E), (0x1A, 0x7F, 0x37)


def sh(argv, check=True, timeout=120):
    r = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError("%s failed (%d): %s%s" % (" ".join(argv), r.returncode, r.stdout, r.stderr))
    return r


def make_cert(path, cn, days, ca=None):
    """A certificate valid for `days` from now (signed by ca=(cert, key), else self-signed), as the pki stage keeps them."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    issuer_cert, issuer_key = ca if ca else (None, key)
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_cert.subject if issuer_cert else name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=days)))
    if not ca:
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    cert = b.sign(issuer_key, hashes.SHA256())
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with open(path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


@pytest.fixture(scope="module")
def lab(s3, tmp_path_factory):
    base = tmp_path_factory.mktemp("verify")
    dest = base / "dest"
    dest.mkdir()
    sh(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0755", "tmpfs", str(dest)])
    try:
        # The checkpoint, synced into the store by the real module, as the checkpoints stage does.
        ckpt = make_checkpoint(str(base / "bundle" / "models" / "demo"))
        manifest = _checkpoint.manifest_from_dir(ckpt, "demo")
        manifest_file = base / "bundle" / "demo.manifest.json"
        manifest_file.write_bytes(_checkpoint.canonical_bytes(manifest))
        digest = _checkpoint.manifest_digest(manifest)
        prefix = "demo/" + digest
        synced = run_module_process(sync_args(s3, ckpt, prefix, manifest=str(manifest_file)))
        assert synced.get("files") == 5, synced

        inv = base / "site"
        private = inv / ".private"
        for cred, (ak, sk) in (("readonly", RO), ("readwrite", RW)):
            (private / "minio" / cred).mkdir(parents=True)
            (private / "minio" / cred / "access-key").write_text(ak)
            (private / "minio" / cred / "secret-key").write_text(sk)
        ca = make_cert(str(private / "pki" / "ca.crt"), "llmops.onprem site CA", 3650)
        make_cert(str(private / "pki" / "hosts" / "lab-a" / "registry.crt"), "registry.lab-a", 365, ca)
        os.chmod(str(private), 0o700)
        state = {
            "pki": {"ca_file": str(private / "pki" / "ca.crt"), "hosts_ca_file": "/etc/llmops/pki/llmops-onprem-ca.crt"},
            "minio": {"backend": "external", "s3_endpoint_url": s3.url, "region": "us-east-1", "ca_file": "", "inventory_host": "lab-a",
                      "buckets": {"checkpoints": BUCKET, "model_engine": "model-engine"},
                      "credentials": dict((c, {"access_key_file": str(private / "minio" / c / "access-key"),
                                               "secret_key_file": str(private / "minio" / c / "secret-key")})
                                          for c in ("readonly", "readwrite"))},
            "bundle_import": {"dir": str(base / "bundle"), "src": "/media/usb", "manifest_sha256": "0" * 64, "files_total": 5,
                              "bytes_total": synced["bytes_total"], "checkpoints": {"demo": {"manifest": str(manifest_file), "digest": digest}}},
            "checkpoints": {"synced": [{"name": "demo", "bucket": BUCKET, "prefix": prefix, "digest": digest, "files": 5,
                                        "bytes": synced["bytes_total"], "bytes_uploaded": synced["bytes_uploaded"]}]},
        }
        (private / "site-state.json").write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        os.chmod(str(private / "site-state.json"), 0o600)
        hosts = {"all": {
            "hosts": {"lab-a": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                                "registry_storage_path": str(dest / "registry"), "packages_repo_dir": str(base / "apt")}},
            "vars": {"verify_space_min_free": 1048576, "verify_space_warn_percent": 10},
            "children": {"registry": {"hosts": {"lab-a": None}}}}}
        (inv / "hosts.yml").write_text(json.dumps(hosts))
        yield dict(inv=inv, dest=dest, s3=s3, ca=ca, prefix=prefix, ckpt=ckpt, report=private / "verify")
    finally:
        sh(["umount", str(dest)], check=False)


def verify(lab, *args):
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    exe = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    r = subprocess.run([exe, "-i", str(lab["inv"]), "playbooks/verify.yml"] + list(args), cwd=REPO, env=env, capture_output=True,
                       text=True, check=False, timeout=300)
    print(r.stdout[-6000:], r.stderr[-3000:])
    return r


def report(lab):
    with open(str(lab["report"] / "report.json"), encoding="utf-8") as f:
        doc = json.load(f)
    return doc, dict(((x["stage"], x["check"]), x) for s in doc["stages"] for x in s["lines"])


def state_of(lab):
    """Everything verify must leave as it was: the inventory (but its report), the store's objects, the destination."""
    out = {}
    for root in (str(lab["inv"]), str(lab["dest"])):
        for d, dirs, files in os.walk(root):
            dirs[:] = [x for x in dirs if os.path.join(d, x) != str(lab["report"])]
            for name in files:
                p = os.path.join(d, name)
                st = os.lstat(p)
                with open(p, "rb") as f:
                    out[p] = (st.st_mode, hashlib.sha256(f.read()).hexdigest())
    client = lab["s3"].client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for o in page.get("Contents", []):
            head = client.head_object(Bucket=BUCKET, Key=o["Key"])
            out["s3://" + o["Key"]] = (o["Size"], head["Metadata"], hashlib.sha256(
                client.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()).hexdigest())
    return out


def no_change(r):
    for h in ("lab-a", "localhost"):
        assert re.search(r"%s\s+: ok=\d+\s+changed=0\s+unreachable=0" % h, r.stdout), r.stdout


def red(r, lab, key, detail, fix):
    assert r.returncode == 2, r.stdout + r.stderr
    doc, lines = report(lab)
    assert doc["ok"] is False and doc["counts"]["fail"] == 1, json.dumps(doc, indent=1)
    line = lines[key]
    assert line["status"] == "fail" and re.search(detail, line["detail"]), line
    assert re.search(fix, line["fix"]), line
    out = re.sub(r"\s+", " ", r.stdout)
    assert "verify: 1 of %d check(s) failed (the report: %s/report.html): (1) %s / %s: " % (
        sum(doc["counts"].values()), lab["report"], key[0], key[1]) in out, out
    no_change(r)
    return doc


def png_pixels(path):
    """(width, height, set of RGB colours) of an 8-bit RGB or RGBA, non-interlaced PNG (what Chromium writes)."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    w, h, depth, ctype, _c, _f, interlace = ihdr
    assert depth == 8 and ctype in (2, 6) and interlace == 0, ihdr
    bpp = 3 if ctype == 2 else 4
    raw, stride, prev, colours, i = zlib.decompress(idat), w * bpp, bytearray(w * bpp), set(), 0
    for _y in range(h):
        ftype, line = raw[i], bytearray(raw[i + 1:i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b, c = prev[x], prev[x - bpp] if x >= bpp else 0
            if ftype == 1:
                line[x] = (line[x] + a) & 0xFF
            elif ftype == 2:
                line[x] = (line[x] + b) & 0xFF
            elif ftype == 3:
                line[x] = (line[x] + (a + b) // 2) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        colours.update(bytes(line[x:x + 3]) for x in range(0, stride, bpp))
        prev = line
    return w, h, set(tuple(c) for c in colours)


def screenshot(html_path, png):
    r = sh(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir=%s" % (png + ".profile"),
            "--screenshot=%s" % png, "--window-size=1280,900", "file://%s" % html_path], check=False, timeout=90)
    assert r.returncode == 0 and os.path.exists(png), r.stdout + r.stderr


def test_green_then_one_fault_at_a_time_each_red_with_its_fix_and_nothing_changed(lab, tmp_path):
    before = state_of(lab)
    r = verify(lab)
    assert r.returncode == 0, r.stdout + r.stderr
    no_change(r)
    assert state_of(lab) == before
    doc, lines = report(lab)
    assert doc["ok"] is True and doc["counts"]["fail"] == 0 and doc["counts"]["ok"] >= 5, json.dumps(doc, indent=1)
    assert doc["schema"] == "llmops.onprem/verify-report/v1" and doc["site"] == "site"
    assert oct(os.stat(str(lab["report"])).st_mode & 0o777) == "0o700"
    for name in ("report.json", "report.html"):
        assert oct(os.stat(str(lab["report"] / name)).st_mode & 0o777) == "0o600"
    assert [k for k, x in lines.items() if x["status"] == "ok"] == [
        ("bundle_import", "free space: imported bundle on controller"),
        ("packages_repo", "free space: package repository on lab-a"),
        ("pki", "certificate site CA"), ("pki", "certificate lab-a/registry"),
        ("registry", "free space: registry storage on lab-a"),
        ("checkpoints", "demo object checksums")]
    assert re.match(r"s3://model-checkpoints/demo/[0-9a-f]{64}: 5 of 5 object\(s\), .* read back and matching the manifest",
                    lines[("checkpoints", "demo object checksums")]["detail"])
    assert lines[("vllm_serving", "a completion from each served model")] == {
        "stage": "vllm_serving", "check": "a completion from each served model", "status": "skipped",
        "detail": "no kubeconfig (llmops_kubeconfig is not set)", "fix": ""}
    assert lines[("image_mirror", "image pull through the mirror")]["status"] == "skipped"
    assert lines[("model_engine", "health and endpoint list")]["status"] == "skipped"
    assert lines[("nvidia_driver", "GPUs per node")]["status"] == "skipped"
    assert [r["stage"] for r in doc["site_stages"]][:3] == ["preflight", "bundle_import", "packages_repo"]
    assert {"stage": "checkpoints", "state": "recorded", "where": "s3://%s/%s" % (BUCKET, lab["prefix"])} in doc["site_stages"]
    assert {"stage": "prune", "state": "clean", "where": "nothing left from earlier bundles"} in doc["site_stages"]

    # Check mode: the same lines, nothing written.
    os.rename(str(lab["report"]), str(tmp_path / "green-report"))
    c = verify(lab, "--check")
    assert c.returncode == 0 and not lab["report"].exists(), c.stdout + c.stderr
    assert "Report: not written (check mode)" in c.stdout

    # Fault 1: an object of the checkpoint replaced in the store behind the collection's back (same size, same metadata).
    client = lab["s3"].client(RW)
    key = lab["prefix"] + "/config.json"
    original = client.get_object(Bucket=BUCKET, Key=key)
    body, meta = original["Body"].read(), original["Metadata"]
    changed = body.replace(b'"seed": 1', b'"seed": 7')
    assert len(changed) == len(body) and changed != body
    client.put_object(Bucket=BUCKET, Key=key, Body=changed, Metadata=meta)
    before = state_of(lab)
    r = verify(lab)
    red(r, lab, ("checkpoints", "demo object checksums"),
        r"^1 of 5 object\(s\) in s3://model-checkpoints/demo/[0-9a-f]{64} hold other bytes than the manifest says "
        r"\(sha256 of the bytes read back\): config\.json$",
        r"playbooks/site\.yml --tags checkpoints -e checkpoints_read_back=true")
    assert state_of(lab) == before
    red_page = tmp_path / "red.html"
    red_page.write_bytes((lab["report"] / "report.html").read_bytes())
    client.put_object(Bucket=BUCKET, Key=key, Body=body, Metadata=meta)

    # Fault 2: the registry's certificate expires in 3 days.
    cert = lab["inv"] / ".private" / "pki" / "hosts" / "lab-a" / "registry.crt"
    good_cert = cert.read_bytes()
    make_cert(str(cert), "registry.lab-a", 3, lab["ca"])
    before = state_of(lab)
    r = verify(lab)
    red(r, lab, ("pki", "certificate lab-a/registry"),
        r"^registry\.lab-a expires \d{14}Z \(in [23]\.\d days; fails under 7, warns under 30\): .*/hosts/lab-a/registry\.crt$",
        r"^re-issue it: ansible-playbook -i .*/site playbooks/site\.yml --tags registry \(the pki stage re-issues")
    assert state_of(lab) == before
    cert.write_bytes(good_cert)

    # Fault 3: the registry storage's filesystem is full.
    sh(["dd", "if=/dev/zero", "of=%s" % (lab["dest"] / "filler"), "bs=64k"], check=False)
    try:
        before = state_of(lab)
        r = verify(lab)
        doc = red(r, lab, ("registry", "free space: registry storage on lab-a"),
                  r"^lab-a: .*/dest/registry is on .*/dest, 0\.00 Bytes free of 8\.00 MB \(0\.0 %\)$",
                  r"^free space on .*/dest on lab-a \(a destination needs at least 1\.00 MB and 10 % free\), or move it to a "
                  r"larger filesystem \(registry_storage_path\), then run verify\.yml again$")
        assert state_of(lab) == before
    finally:
        os.remove(str(lab["dest"] / "filler"))

    # The red page of fault 1 in a real browser: small, and it shows red and green status cells.
    png = str(tmp_path / "red.png")
    screenshot(str(red_page), png)
    assert os.path.getsize(png) < 1024 * 1024
    w, h, colours = png_pixels(png)
    assert (w, h) == (1280, 900)
    assert RED in colours and GREEN in colours and len(colours) > 10, sorted(colours)[:20]
    shutil.copyfile(png, os.path.join(REPO, ".cache", "verify-report-red.png"))  # for the closing note
    # The page names no public host (the egress audit's public-url rule): it opens on a controller without a network.
    page = red_page.read_text(encoding="utf-8")
    assert "<script" not in page and [u for _f, u in _egress.urls_in({"page": page}) if _egress.public_host(_egress.host_of(u))] == []
