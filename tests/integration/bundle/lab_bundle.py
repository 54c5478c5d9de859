"""A small lab bundle with one of everything a site bundle holds, built with the collection's own
modules and the real formats: an OCI layout (tests/integration/mirror/mirror_layouts.py, two images
sharing a layer), two real .deb packages (dpkg-deb) indexed by the collection's own apt-ftparchive
step (_debrepo.packages_index), two wheels (zip archives with dist-info METADATA), the serving chart
as a folder and a chart packaged as .tgz, a collection artifact, a binary, a model checkpoint, and
the root tooling; sealed and signed by bundle_seal, and packed into segments by bundle_pack."""
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ansible_collections.llmops.onprem.plugins.module_utils import _bundle as B
from ansible_collections.llmops.onprem.plugins.module_utils import _debrepo
from ansible_collections.llmops.onprem.plugins.modules import bundle_pack, bundle_seal

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(REPO, "tests", "integration", "mirror"))
import mirror_layouts  # noqa: E402

DEP5 = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: lab-tool

Files: *
Copyright: 2026 Lab
License: GPL-2+

Files: contrib/*
Copyright: 2026 Someone
License: BSD-3-clause

License: GPL-2+
 This program is free software.
"""
IMAGES = ("registry.example.org/llmops/serving:1.0", "docker.io/library/busybox:1.36")


def ansible_module(name, args, env):
    """Run llmops.onprem.<name> with ``args`` on localhost through the ``ansible`` beside this Python, with the
    environment ``env``; (rc, result dict)."""
    binary = os.path.join(os.path.dirname(sys.executable), "ansible")
    p = subprocess.run([binary, "localhost", "-m", "llmops.onprem." + name, "-a", json.dumps(args), "-o"],
                       check=False, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    lines = [x for x in (p.stdout + p.stderr).splitlines() if "=>" in x]
    assert lines, p.stdout + p.stderr
    return p.returncode, json.loads(lines[-1].split("=>", 1)[1])


def keypair(d):
    d.mkdir(parents=True, exist_ok=True)
    k = ed25519.Ed25519PrivateKey.generate()
    priv, pub = d / "site.pem", d / "site.pub.pem"
    priv.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    pub.write_bytes(k.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return str(priv), str(pub)


def deb(tmp, pool, name, version, copyright_text, payload=4096):
    """A real .deb built by dpkg-deb (xz data.tar), with /usr/share/doc/<name>/copyright."""
    root = tmp / ("deb-" + name)
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text("Package: %s\nVersion: %s\nArchitecture: amd64\nMaintainer: Lab <lab@example.org>\n"
                                             "Description: lab package %s\n" % (name, version, name))
    (root / "usr" / "lib" / name).mkdir(parents=True)
    (root / "usr" / "lib" / name / "data.bin").write_bytes(os.urandom(payload))
    (root / "usr" / "share" / "doc" / name).mkdir(parents=True)
    (root / "usr" / "share" / "doc" / name / "copyright").write_text(copyright_text)
    out = pool / ("%s_%s_amd64.deb" % (name, version.replace(":", "%3a")))
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(root), str(out)], check=True, capture_output=True)
    return out


def wheel(path, name, version, headers):
    meta = "Metadata-Version: 2.4\nName: %s\nVersion: %s\n%s\n" % (name, version, headers)
    with zipfile.ZipFile(str(path), "w") as z:
        z.writestr("%s/__init__.py" % name.replace("-", "_"), "")
        z.writestr("%s-%s.dist-info/METADATA" % (name.replace("-", "_"), version), meta)
        z.writestr("%s-%s.dist-info/WHEEL" % (name.replace("-", "_"), version), "Wheel-Version: 1.0\n")


def packaged_chart(path, name, version):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for rel, text in (("Chart.yaml", "apiVersion: v2\nname: %s\nversion: %s\nappVersion: \"2.1\"\n" % (name, version)),
                          ("values.yaml", "replicas: 1\n")):
            data = text.encode()
            ti = tarfile.TarInfo("%s/%s" % (name, rel))
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    path.write_bytes(buf.getvalue())


def _run(argv, cwd=None, binary=False):
    p = subprocess.run(argv, cwd=cwd, capture_output=True, text=not binary, check=False)
    return p.returncode, p.stdout, p.stderr


def sign_repo(repo, gnupg):
    """Sign the flat repository ``repo`` as the collection's package step does (_debrepo: a Release for its Packages,
    InRelease and Release.gpg, the archive keyring beside them), with the archive key in ``gnupg`` (made on first
    use, kept for the next bundle: a site trusts one key across bundles). Returns the key's fingerprint."""
    fpr = _debrepo.key_fingerprint(_run, str(gnupg)) or _debrepo.generate_key(_run, str(gnupg))
    try:
        index = (repo / _debrepo.PACKAGES).read_bytes()
        (repo / _debrepo.RELEASE).write_text(_debrepo.render_release("debian-12", index, _debrepo.rfc2822(0)))
        (repo / _debrepo.KEYRING).write_bytes(_debrepo.export_key(_run, str(gnupg), fpr))
        _debrepo.sign_release(_run, str(gnupg), fpr, str(repo))
    finally:
        _debrepo.stop_agent(_run, str(gnupg))
    return fpr


def safetensors(size):
    """A valid safetensors file of exactly `size` bytes: one uint8 tensor of random bytes (the checkpoints stage checks
    the layout: an 8-byte header length, a JSON header, the data)."""
    def header(n):
        h = json.dumps({"w": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}}).encode()
        return h + b" " * (-len(h) % 8)

    # The data length depends on the header's length, which names it: a second pass settles it.
    h = header(size - 8 - len(header(size)))
    n = size - 8 - len(h)
    h = header(n)
    assert 8 + len(h) + n == size
    return len(h).to_bytes(8, "little") + h + os.urandom(n)


def restamp_safetensors(path, note):
    """Rewrite a safetensors file with ``note`` in its header's __metadata__ (key llmops-lab), its tensors byte for byte
    the same: another file (another digest) that every loader still reads as the same weights."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    header.setdefault("__metadata__", {})["llmops-lab"] = note
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(len(h).to_bytes(8, "little") + h + data[8 + n:])


def seed_site_state(private, reg, s3, push_user, rw, bucket, **records):
    """What earlier runs of the registry and minio stages would have left in an inventory's private directory: their
    records in site-state.json, the push password and the read-write key pair (files 0600), plus ``records`` (other
    stages' records). site.yml then runs the controller's stages against the registry and the object store a test
    started (``reg``: registry_server, ``s3``: ckpt_helpers.S3Server)."""
    files = {}
    for name, value in (("push", reg.passwords[push_user]), ("rw-access", rw[0]), ("rw-secret", rw[1])):
        files[name] = os.path.join(str(private), name)
        with open(files[name], "w", encoding="utf-8") as f:
            f.write(value)
        os.chmod(files[name], 0o600)
    state = {
        "registry": {"inventory_host": "registry-1", "registry_host": reg.host, "url": "https://" + reg.host,
                     "ca_file": reg.ca, "push_user": push_user, "push_password_file": files["push"]},
        "minio": {"inventory_host": "minio-1", "s3_endpoint_url": s3.url, "region": "us-east-1", "ca_file": "",
                  "buckets": {"checkpoints": bucket},
                  "credentials": {"readwrite": {"access_key_file": files["rw-access"],
                                                "secret_key_file": files["rw-secret"]}}}}
    state.update(records)
    path = os.path.join(str(private), "site-state.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(state, f)
    os.chmod(path, 0o600)
    return state


def build(tmp, segment_size="256KiB", model_dir=None, signed_repo=False):
    """The lab bundle in tmp/bundle and its segments in tmp/media; returns a dict of paths and facts. With model_dir
    (a real model, tests/tools/make_model.py) the checkpoint tiny is a copy of it, else a stand-in no engine loads.
    With signed_repo the package repository is signed (sign_repo), as the packages_repo stage on a host requires."""
    priv, pub = keypair(tmp / "keys")
    root = tmp / "bundle"
    layout = str(root / "images")
    base = mirror_layouts.layer(layout, 300 * 1024, seed=1)
    images = []
    for i, ref in enumerate(IMAGES):
        desc = mirror_layouts.image(layout, ref, [base, mirror_layouts.layer(layout, 20 * 1024 + i, seed=10 + i)])
        images.append({"ref": ref, "digest": desc["digest"]})
    repo = root / "packages" / "debian-12"
    (repo / "pool").mkdir(parents=True)
    deb(tmp, repo / "pool", "lab-tool", "1:2.0-1", DEP5)
    deb(tmp, repo / "pool", "lab-free", "0.5-2", "This is free software, see the GNU GPL.\n")
    (repo / "Packages").write_bytes(_debrepo.packages_index(_run, str(repo)))
    (repo / "packages.lock").write_text("lab-free=0.5-2\nlab-tool=1:2.0-1\n")
    gnupg = tmp / "gnupg" / "home"
    if signed_repo:
        sign_repo(repo, gnupg)
    py = root / "python"
    py.mkdir()
    wheel(py / "demo_lib-1.2.0-py3-none-any.whl", "demo-lib", "1.2.0", "License-Expression: MIT OR Apache-2.0")
    wheel(py / "other_pkg-0.3-py3-none-any.whl", "other-pkg", "0.3", "Classifier: License :: OSI Approved :: MIT License")
    (py / "requirements.lock").write_text("demo-lib==1.2.0\nother-pkg==0.3\n")
    shutil.copytree(os.path.join(REPO, "serving", "chart"), str(root / "charts" / "llmops-serving"))
    packaged_chart(root / "charts" / "model-engine.tgz", "model-engine", "0.9.1")
    (root / "collections").mkdir()
    (root / "collections" / "llmops-onprem-0.1.0.tar.gz").write_bytes(os.urandom(2048))
    (root / "binaries").mkdir()
    (root / "binaries" / "minio").write_bytes(os.urandom(5000))
    model = root / "models" / "tiny"
    if model_dir:
        shutil.copytree(str(model_dir), str(model))
    else:
        model.mkdir(parents=True)
        (model / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
        (model / "tokenizer.json").write_text('{"model": {}}')
        (model / "model.safetensors").write_bytes(safetensors(600 * 1024))  # split across segments
    shutil.copy(os.path.join(REPO, "bundle", "llmops-verify.sh"), str(root / "llmops-verify.sh"))
    shutil.copy(os.path.join(REPO, "bundle", "bootstrap.sh"), str(root / "bootstrap.sh"))
    bundle_seal.run(dict(path=str(root), private_key=priv, spec={"name": "lab"}, versions={"vllm": "0.34.0"}, images=images), False)
    media = tmp / "media"
    bundle_pack.run(dict(src=str(root), dest=str(media), private_key=priv, segment_size=segment_size, read_back=True,
                         progress_file=None), False)
    return dict(root=root, media=media, priv=priv, pub=pub, images=images, tmp=tmp, real_model=bool(model_dir),
                gnupg=gnupg if signed_repo else None)


def build_v2(lab, tmp, segment_size="256KiB"):
    """Bundle 2 from bundle 1's sources: one image changed (its own layer), one checkpoint shard rewritten (a real
    model's shard keeps its tensors and gains a header note, so the engine still loads it), one package at a new
    version (lab-free 0.5-3); sealed with the same key and packed."""
    root = tmp / "bundle2"
    shutil.copytree(str(lab["root"]), str(root), ignore=shutil.ignore_patterns(B.MANIFEST, B.SIGNATURE))
    layout = str(root / "images")
    old = json.loads((root / "images" / "index.json").read_text())
    ref = IMAGES[1]
    old_desc = [m for m in old["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == ref][0]
    old_manifest = json.loads((root / "images" / "blobs" / "sha256" / old_desc["digest"].split(":")[1]).read_text())
    base = old_manifest["layers"][0]
    desc = mirror_layouts.image(layout, ref, [base, mirror_layouts.layer(layout, 20 * 1024 + 7, seed=99)])
    for gone in [old_desc["digest"], old_manifest["config"]["digest"], old_manifest["layers"][1]["digest"]]:
        os.unlink(str(root / "images" / "blobs" / "sha256" / gone.split(":")[1]))
    images = [i if i["ref"] != ref else {"ref": ref, "digest": desc["digest"]} for i in lab["images"]]
    if lab.get("real_model"):
        restamp_safetensors(root / "models" / "tiny" / "model.safetensors", "bundle 2")
    else:
        (root / "models" / "tiny" / "model.safetensors").write_bytes(safetensors(600 * 1024))
    repo = root / "packages" / "debian-12"
    os.unlink(str(repo / "pool" / "lab-free_0.5-2_amd64.deb"))
    (tmp / "v2").mkdir()
    deb(tmp / "v2", repo / "pool", "lab-free", "0.5-3", "This is free software, see the GNU GPL.\n")
    (repo / "Packages").write_bytes(_debrepo.packages_index(_run, str(repo)))
    (repo / "packages.lock").write_text("lab-free=0.5-3\nlab-tool=1:2.0-1\n")
    if lab.get("gnupg"):
        sign_repo(repo, lab["gnupg"])
    # The wheels pinned by sha256, as bundle_python writes them (llmops-verify.sh requires the pins).
    py = root / "python"
    (py / "requirements.lock").write_text("".join(
        "%s==%s --hash=sha256:%s\n" % (n, v, hashlib.sha256((py / w).read_bytes()).hexdigest())
        for n, v, w in (("demo-lib", "1.2.0", "demo_lib-1.2.0-py3-none-any.whl"), ("other-pkg", "0.3", "other_pkg-0.3-py3-none-any.whl"))))
    bundle_seal.run(dict(path=str(root), private_key=lab["priv"], spec={"name": "lab-2"}, versions={"vllm": "0.34.1"},
                         images=images), False)
    media = tmp / "media2"
    bundle_pack.run(dict(src=str(root), dest=str(media), private_key=lab["priv"], segment_size=segment_size, read_back=True,
                         progress_file=None), False)
    return root, media
