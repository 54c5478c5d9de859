"""Builders for the import's hostile-input tests: a site key pair, a small bundle sealed and packed
by the collection's own modules, and hand-made media (a manifest and segments.json signed with the
site key, segments written member by member) for inputs the real build would never produce.

Every case starts from scratch in the test's tmp_path; nothing here is shared between tests.
"""
import hashlib
import json
import os
import tarfile

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from conftest import run_measured
from ansible_collections.llmops.onprem.plugins.module_utils import _bundle as B
from ansible_collections.llmops.onprem.plugins.modules import bundle_pack, bundle_seal

SMALL_FILES = {
    "charts/serving/Chart.yaml": b"name: serving\n",
    "models/tiny/config.json": b'{"architectures": ["LlamaForCausalLM"]}',
    "models/tiny/model.safetensors": b"0123456789",
    "bootstrap.sh": b"#!/bin/sh\necho hi\n",
}


def keypair(d, name="site"):
    d.mkdir(parents=True, exist_ok=True)
    k = ed25519.Ed25519PrivateKey.generate()
    priv, pub = d / (name + ".pem"), d / (name + ".pub.pem")
    priv.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    pub.write_bytes(k.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return str(priv), str(pub)


class Case(object):
    """One test's world: tmp/keys (the site's key pair, out of band), tmp/bundle (a sealed bundle
    directory), tmp/media (its segments), tmp/dest (the import destination) and tmp/outside (files
    the import must never touch)."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.priv, self.pub = keypair(tmp / "keys")
        self.root, self.media, self.dest = tmp / "bundle", tmp / "media", tmp / "dest"
        self.outside = tmp / "outside"
        self.outside.mkdir()
        (self.outside / "victim").write_bytes(b"the site's own file\n")
        os.chmod(str(self.outside / "victim"), 0o600)

    # -- the real build path
    def seal(self, files=None, created=None):
        files = SMALL_FILES if files is None else files
        for rel, data in files.items():
            p = self.root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        bundle_seal.run(dict(path=str(self.root), private_key=self.priv, spec={"name": "case"}, versions={}, images=[]), False)
        if created:
            self.resign(self.root, created=created)
        return self.root

    def pack(self, segment_size="64KiB"):
        bundle_pack.run(dict(src=str(self.root), dest=str(self.media), private_key=self.priv, segment_size=segment_size,
                             read_back=False, progress_file=None), False)
        return self.media

    def manifest(self, where):
        return json.loads((where / B.MANIFEST).read_text())

    def resign(self, where, **changes):
        """Change top-level keys of the manifest in `where` and sign it again with the site key (what
        the legitimate build would do, e.g. an older `created`)."""
        m = self.manifest(where)
        m.update(changes)
        self.write_signed(where, B.MANIFEST, B.SIGNATURE, m)

    def write_signed(self, where, name, sig_name, obj):
        data = B.canonical(obj)
        (where / name).write_bytes(data)
        (where / sig_name).write_bytes(B.sign(data, self.priv))
        return hashlib.sha256(data).hexdigest()

    # -- hand-made media
    def signed_manifest(self, where, entries, created="2026-12-01T00:00:00Z"):
        """A manifest listing `entries` ({path, size, sha256}, as given: paths are not checked here), signed."""
        where.mkdir(parents=True, exist_ok=True)
        files = {}
        for e in entries:
            files.setdefault(B.kind_of(e["path"]), []).append(dict(e))
        m = {"schema": B.MANIFEST_SCHEMA, "spec": {}, "versions": {}, "images": [], "files": files, "created": created,
             "totals": {"files": len(entries), "bytes": sum(e["size"] for e in entries)}}
        return self.write_signed(where, B.MANIFEST, B.SIGNATURE, m)

    def signed_segments(self, where, manifest_sha256, segments):
        table = {"schema": B.SEGMENTS_SCHEMA, "manifest_sha256": manifest_sha256, "segment_size": 0, "segments": segments}
        self.write_signed(where, B.SEGMENTS, B.SEGMENTS_SIG, table)

    def media_with_members(self, members):
        """Media of one segment whose tar members are [(member name, bytes)], written as bundle_pack would
        (PAX format), whatever the names; manifest and segments.json list exactly those members, signed."""
        self.media.mkdir(parents=True, exist_ok=True)
        seg = self.media / B.segment_name(0)
        listed = []
        with tarfile.open(str(seg), "w", format=tarfile.PAX_FORMAT) as tar:
            for name, data in members:
                ti = tarfile.TarInfo(name)
                ti.size, ti.mode, ti.mtime = len(data), 0o644, 0
                tar.addfile(ti, _Bytes(data))
                digest = hashlib.sha256(data).hexdigest()
                listed.append({"name": name, "path": name, "part": 0, "parts": 0, "offset": 0, "size": len(data), "sha256": digest})
        msha = self.signed_manifest(self.media, [{"path": m["path"], "size": m["size"], "sha256": m["sha256"]} for m in listed])
        seg_bytes = seg.read_bytes()
        self.signed_segments(self.media, msha, [{"name": seg.name, "size": len(seg_bytes),
                                                 "sha256": hashlib.sha256(seg_bytes).hexdigest(), "members": listed}])
        return self.media


class _Bytes(object):
    def __init__(self, data):
        self.data, self.pos = data, 0

    def read(self, n=-1):
        n = len(self.data) - self.pos if n is None or n < 0 else n
        b = self.data[self.pos:self.pos + n]
        self.pos += len(b)
        return b


def import_(src, pub, dest=None, **kw):
    """Run the real Importer; (result, None) on success, (None, message) on a refusal."""
    try:
        return B.Importer(str(src), str(pub), str(dest) if dest else None, kw.pop("progress_file", None), **kw).run(), None
    except B.BundleError as e:
        return None, str(e)


MEASURED_IMPORT = """
from ansible_collections.llmops.onprem.plugins.module_utils import _bundle as B
try:
    B.Importer(%r, %r, %r).run()
    print("ACCEPTED")
except B.BundleError as e:
    print("REFUSED: " + str(e))
"""


def import_measured(src, pub, dest):
    """The real Importer in a child Python: (stdout line, peak RSS in bytes)."""
    proc, peak = run_measured(MEASURED_IMPORT % (str(src), str(pub), str(dest)))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip(), peak
