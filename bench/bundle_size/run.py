"""Bundle size with shared base layers: our bundle's single OCI layout vs one
`skopeo copy ... docker-archive:` tarball per image (what `docker save`-style bundles such as
kubespray-offline carry), on the same generated images in the same run. Prints a ratio.

    .venv/bin/python bench/bundle_size/run.py [--images 6] [--base-mib 96] [--app-mib 8]

Images: N images sharing one base layer (random bytes, so compression cannot hide the
duplication) plus a small layer of their own, written as OCI archives. Ours: the bundle role's
module (llmops.onprem.bundle_images) puts all of them into one layout. Needs skopeo and the
project's venv (make setup).
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def blob(d, data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(d, "blobs", "sha256", digest), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + digest, "size": len(data)}


def layer(name, size):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
        ti = tarfile.TarInfo(name)
        ti.size, ti.mtime = size, 0
        t.addfile(ti, io.BytesIO(os.urandom(size)))
    tar = raw.getvalue()
    gz = gzip.compress(tar, compresslevel=1, mtime=0)
    return tar, gz


def write_archive(path, ref, layers):
    d = tempfile.mkdtemp()
    os.makedirs(os.path.join(d, "blobs", "sha256"))
    descs, diff_ids = [], []
    for tar, gz in layers:
        b = blob(d, gz)
        b["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip"
        descs.append(b)
        diff_ids.append("sha256:" + hashlib.sha256(tar).hexdigest())
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    c = blob(d, config)
    c["mediaType"] = "application/vnd.oci.image.config.v1+json"
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": c, "layers": descs}).encode()
    m = blob(d, manifest)
    m["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
    m["annotations"] = {"org.opencontainers.image.ref.name": ref}
    with open(os.path.join(d, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [m]}, f)
    with open(os.path.join(d, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with tarfile.open(path, "w") as t:
        for name in sorted(os.listdir(d)):
            t.add(os.path.join(d, name), name)
    shutil.rmtree(d)


def du(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(a, f)) for a, dummy, fs in os.walk(path) for f in fs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--base-mib", type=int, default=96)
    ap.add_argument("--app-mib", type=int, default=8)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench-bundle-size-")
    try:
        base = layer("base/blob", a.base_mib << 20)
        refs = []
        for i in range(a.images):
            ref = "registry.example.org/llm/app-%d:1.0" % i
            write_archive(os.path.join(work, "img-%d.tar" % i), ref, [base, layer("app/blob", a.app_mib << 20)])
            refs.append(ref)
        images = [{"ref": r, "source": "oci-archive:%s" % os.path.join(work, "img-%d.tar" % i)} for i, r in enumerate(refs)]
        layout = os.path.join(work, "bundle", "images")
        env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"))
        args = json.dumps({"layout": layout, "images": images})
        subprocess.run([os.path.join(REPO, ".venv", "bin", "ansible"), "localhost", "-m", "llmops.onprem.bundle_images",
                        "-a", args], check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
        ours = du(layout)
        peers = 0
        for i, r in enumerate(refs):
            out = os.path.join(work, "peer-%d.tar" % i)
            subprocess.run(["skopeo", "copy", "--quiet", "oci-archive:%s" % os.path.join(work, "img-%d.tar" % i),
                            "docker-archive:%s:%s" % (out, r)], check=True)
            peers += du(out)
        print("bundle_size: %d images, %d MiB shared base layer, %d MiB own layer each" % (a.images, a.base_mib, a.app_mib))
        print("  %-44s %10.1f MiB" % ("ours: one OCI layout (images/)", ours / 2 ** 20))
        print("  %-44s %10.1f MiB" % ("skopeo copy docker-archive: per image (sum)", peers / 2 ** 20))
        print("  ratio ours / per-image archives: %.3f (%.1fx smaller)" % (ours / peers, peers / ours))
    finally:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
