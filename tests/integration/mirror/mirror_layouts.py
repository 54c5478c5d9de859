"""Build OCI image layouts for the mirror tests and bench: one layout, many images named by their
full upstream reference, layers shared between images. Standard library only.

Layers are real (uncompressed) tar streams holding one file of pseudo-random bytes, so a registry,
skopeo or containerd can treat them like any image layer; sizes can be many GiB without holding them
in memory."""
import hashlib
import io
import json
import os
import random
import tarfile

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


def _blob_path(layout, digest):
    return os.path.join(layout, "blobs", "sha256", digest.split(":", 1)[1])


def init(layout):
    os.makedirs(os.path.join(layout, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    if not os.path.exists(os.path.join(layout, "index.json")):
        with open(os.path.join(layout, "index.json"), "w") as f:
            json.dump({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}, f)
    return layout


def put_bytes(layout, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with open(_blob_path(layout, digest), "wb") as f:
        f.write(data)
    return {"digest": digest, "size": len(data)}


def layer(layout, size, seed, name="data.bin"):
    """A tar layer with one file of `size` pseudo-random bytes (deterministic per seed)."""
    init(layout)
    rnd = random.Random(seed)
    h = hashlib.sha256()
    tmp = os.path.join(layout, "blobs", "sha256", ".tmp-%s-%d" % (seed, os.getpid()))
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    total = 0
    with open(tmp, "wb") as f:
        def out(b):
            nonlocal total
            f.write(b)
            h.update(b)
            total += len(b)
        out(info.tobuf(format=tarfile.PAX_FORMAT))
        left = size
        while left:
            n = min(left, 4 << 20)
            out(rnd.randbytes(n))
            left -= n
        if size % 512:
            out(b"\0" * (512 - size % 512))
        out(b"\0" * 1024)
    digest = "sha256:" + h.hexdigest()
    os.replace(tmp, _blob_path(layout, digest))
    return {"mediaType": OCI_LAYER, "digest": digest, "size": total}


def busybox_layer(layout, busybox="/bin/busybox"):
    """A small runnable layer: a static busybox with its applets (for pods)."""
    import subprocess
    buf = io.BytesIO()
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for d in ("bin", "tmp", "etc"):
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 0
            t.addfile(ti)
        with open(busybox, "rb") as f:
            data = f.read()
        ti = tarfile.TarInfo("bin/busybox")
        ti.size, ti.mode, ti.mtime = len(data), 0o755, 0
        t.addfile(ti, io.BytesIO(data))
        for a in sorted(set(applets) - {"busybox"}):
            ti = tarfile.TarInfo("bin/" + a)
            ti.type, ti.linkname, ti.mode, ti.mtime = tarfile.SYMTYPE, "busybox", 0o777, 0
            t.addfile(ti)
    init(layout)
    return dict(put_bytes(layout, buf.getvalue()), mediaType=OCI_LAYER)


def image(layout, ref, layers, cmd=None):
    """Add an image named `ref` (its full upstream reference) made of `layers`; returns its manifest descriptor."""
    init(layout)
    cfg = {"architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
           "config": {"Env": ["PATH=/bin"], "Cmd": cmd or ["sh"]},
           "rootfs": {"type": "layers", "diff_ids": [lyr["digest"] for lyr in layers]}}
    config = dict(put_bytes(layout, json.dumps(cfg, sort_keys=True).encode()), mediaType=OCI_CONFIG)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers}
    desc = dict(put_bytes(layout, json.dumps(manifest, sort_keys=True).encode()), mediaType=OCI_MANIFEST)
    ipath = os.path.join(layout, "index.json")
    with open(ipath) as f:
        index = json.load(f)
    index["manifests"] = [m for m in index["manifests"]
                          if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != ref]
    index["manifests"].append(dict(desc, annotations={"org.opencontainers.image.ref.name": ref}))
    with open(ipath, "w") as f:
        json.dump(index, f, indent=1)
    return desc


def blob_path(layout, digest):
    return _blob_path(layout, digest)
