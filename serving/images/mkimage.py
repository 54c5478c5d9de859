"""Build a container image from local files, with no engine and no registry.

The image has one layer made from --busybox/--add/--symlink (plus /etc/passwd and the usual
top-level directories), on top of any number of --layer DIR layers (bottom first). A --layer
is the tree of a host directory at / as its own layer: built from the same directory it has
the same bytes and digest in every image, so images built on one shared base (a Python
runtime unpacked from .deb packages, say) share that layer in a registry, a layout and on nodes.

Outputs (at least one):
  --output ARCHIVE.tar   an image archive that `ctr -n k8s.io images import` (containerd),
                         `podman load` and skopeo (oci-archive:/docker-archive:) accept:
                         an OCI image layout (oci-layout, index.json, blobs/) plus a
                         docker-style manifest.json (what `docker load` reads)
  --oci-layout DIR       a plain OCI image layout directory (e.g. for
                         `skopeo copy oci:DIR:localhost/busybox:1 docker://registry/...`);
                         several images may share one DIR: each is named by its full
                         reference in index.json (org.opencontainers.image.ref.name)

Examples:
  python3 mkimage.py --tag localhost/busybox:1 --busybox /bin/busybox --output busybox.tar
  python3 mkimage.py --tag localhost/pause:3.4 --add ./pause:/pause:0755 --entrypoint '["/pause"]' \\
                     --output pause.tar --oci-layout ./layout
  python3 mkimage.py --tag localhost/web:1 --busybox /bin/busybox --add site/:/www \\
                     --cmd 'httpd -f -p 8080 -h /www' --env GREETING=hi --output web.tar
  python3 mkimage.py --tag localhost/app:1 --layer ./python-rootfs --add app.py:/app/app.py \\
                     --entrypoint '["/usr/bin/python3", "/app/app.py"]' --output app.tar

Standard library only; the output is reproducible (fixed mtimes, sorted entries). Files are
read while the layer is written and layers are spooled to disk beside the output, so memory
stays small for an image of gigabytes.
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile

EPOCH = "1970-01-01T00:00:00Z"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Layer:
    """Collects files, dirs and symlinks; writes a deterministic tar."""

    def __init__(self):
        self.entries = {}  # path (no leading /) -> TarInfo, bytes|None

    def _dirs(self, path):
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self.entries:
                self.dir(d)

    def dir(self, path, mode=0o755):
        path = path.strip("/")
        self._dirs(path)
        ti = tarfile.TarInfo(path)
        ti.type, ti.mode = tarfile.DIRTYPE, mode
        self.entries[path] = (ti, None)

    def file(self, path, data, mode=0o644):
        path = path.strip("/")
        self._dirs(path)
        ti = tarfile.TarInfo(path)
        ti.size, ti.mode = len(data), mode
        self.entries[path] = (ti, data)

    def host_file(self, path, src, mode):
        """A host file, read only when the tar is written (a layer of gigabytes never sits in memory)."""
        path = path.strip("/")
        self._dirs(path)
        ti = tarfile.TarInfo(path)
        ti.size, ti.mode = os.stat(src).st_size, mode
        self.entries[path] = (ti, HostFile(src))

    def symlink(self, path, target):
        path = path.strip("/")
        self._dirs(path)
        ti = tarfile.TarInfo(path)
        ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, target, 0o777
        self.entries[path] = (ti, None)

    def add_host_path(self, src, dest, mode=None):
        """A host file, or a directory tree, at dest (dest "/" = the tree's contents at the root)."""
        if os.path.isdir(src):
            if dest.strip("/"):
                self.dir(dest, mode or 0o755)
            for root, dirs, files in os.walk(src):
                dirs.sort()
                rel = os.path.relpath(root, src)
                base = dest.rstrip("/") if rel == "." else dest.rstrip("/") + "/" + rel
                base = base.strip("/")
                for d in dirs:
                    full = os.path.join(root, d)
                    if os.path.islink(full):
                        self.symlink(_join(base, d), os.readlink(full))
                    else:
                        self.dir(_join(base, d), os.stat(full).st_mode & 0o7777)
                for f in sorted(files):
                    full = os.path.join(root, f)
                    if os.path.islink(full):
                        self.symlink(_join(base, f), os.readlink(full))
                    else:
                        self.host_file(_join(base, f), full, os.stat(full).st_mode & 0o7777)
        else:
            self.host_file(dest, src, mode if mode is not None else os.stat(src).st_mode & 0o7777)

    def write_tar(self, out):
        """Write the layer as a tar stream to out (anything with write())."""
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as t:
            for path in sorted(self.entries):
                ti, data = self.entries[path]
                ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = 0, 0, 0, "root", "root"
                if isinstance(data, HostFile):
                    with open(data.path, "rb") as fh:
                        if os.fstat(fh.fileno()).st_size != ti.size:
                            raise SystemExit("%s changed size while the image was built" % data.path)
                        t.addfile(ti, fh)
                else:
                    t.addfile(ti, io.BytesIO(data) if data is not None else None)


class HostFile(object):
    def __init__(self, path):
        self.path = path


class HashingWriter(object):
    """Writes to a file and keeps the sha256 and the size of what went through."""

    def __init__(self, fh):
        self.fh, self.sha, self.size = fh, hashlib.sha256(), 0

    def write(self, data):
        self.sha.update(data)
        self.size += len(data)
        return self.fh.write(data)

    def digest(self):
        return "sha256:" + self.sha.hexdigest()


class Blob(object):
    """Bytes in memory (configs, manifests) or a spooled file (layers)."""

    def __init__(self, data=None, path=None, size=None):
        self.data, self.path = data, path
        self.size = len(data) if data is not None else size

    def open(self):
        return io.BytesIO(self.data) if self.data is not None else open(self.path, "rb")


def _join(base, name):
    return base + "/" + name if base else name


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def argv_list(value):
    """A JSON list ('["a","b"]'), an empty string (= none), or a shell-like string."""
    if value is None:
        return None
    value = value.strip()
    if value.startswith("["):
        v = json.loads(value)
        if not all(isinstance(x, str) for x in v):
            raise SystemExit("entrypoint/cmd JSON must be a list of strings: %s" % value)
        return v
    return shlex.split(value) if value else []


def split_spec(spec, what):
    """SRC:DEST[:MODE] (octal mode)."""
    parts = spec.split(":")
    if len(parts) == 2:
        return parts[0], parts[1], None
    if len(parts) == 3 and parts[2]:
        return parts[0], parts[1], int(parts[2], 8)
    raise SystemExit("%s wants SRC:DEST[:MODE], got %r" % (what, spec))


def parse_tag(tag):
    """Reference -> (full name as given, tag part)."""
    last = tag.rsplit("/", 1)[-1]
    if "@" in last:
        raise SystemExit("--tag must be NAME:TAG, not a digest: %s" % tag)
    if ":" not in last:
        tag += ":latest"
    return tag, tag.rsplit(":", 1)[1]


def busybox_applets(path):
    out = subprocess.run([path, "--list"], check=True, capture_output=True, text=True).stdout
    return sorted(a for a in out.split() if a and a != "busybox")


def build(a, tmpdir):
    layer = Layer()
    for d, mode in (("bin", 0o755), ("dev", 0o755), ("etc", 0o755), ("proc", 0o755), ("root", 0o700),
                    ("sys", 0o755), ("tmp", 0o1777), ("var", 0o755), ("var/tmp", 0o1777)):
        layer.dir(d, mode)
    # Names for root and nobody, so `id`, httpd and runAsUser behave; --add can replace them.
    layer.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    layer.file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    if a.busybox:
        layer.add_host_path(a.busybox, "/bin/busybox", 0o755)
        for applet in busybox_applets(a.busybox):
            layer.symlink("bin/" + applet, "busybox")
    for spec in a.add:
        src, dest, mode = split_spec(spec, "--add")
        if not os.path.exists(src):
            raise SystemExit("--add %s: no such file or directory: %s" % (spec, src))
        layer.add_host_path(src, dest, mode)
    for spec in a.symlink:
        target, link = spec.partition(":")[::2]
        if not link:
            raise SystemExit("--symlink wants TARGET:LINK, got %r" % spec)
        layer.symlink(link, target)

    layers = []  # (diff_id, blob, media type, created_by), bottom first
    for d in a.layer:
        if not os.path.isdir(d):
            raise SystemExit("--layer %s: not a directory" % d)
        base = Layer()
        base.add_host_path(d, "/")
        layers.append(_layer_blob(base, a.no_compress, "mkimage.py --layer %s" % os.path.basename(d.rstrip("/")), tmpdir))
    layers.append(_layer_blob(layer, a.no_compress, "mkimage.py (llmops.onprem tests/cluster)", tmpdir))

    env = [DEFAULT_PATH] if not any(e.startswith("PATH=") for e in a.env) else []
    env += a.env
    config = {
        "Env": env,
        "Entrypoint": argv_list(a.entrypoint),
        "Cmd": argv_list(a.cmd),
        "WorkingDir": a.workdir,
        "Labels": dict(kv.split("=", 1) for kv in a.label) or None,
    }
    if a.user:
        config["User"] = a.user
    config = {k: v for k, v in config.items() if v is not None}
    cfg = {
        "architecture": a.arch,
        "os": "linux",
        "created": EPOCH,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [lay[0] for lay in layers]},
        "history": [{"created": EPOCH, "created_by": lay[3]} for lay in layers],
    }
    cfg_b = json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest(cfg_b), "size": len(cfg_b)},
        "layers": [{"mediaType": lay[2], "digest": lay[4], "size": lay[1].size} for lay in layers],
    }
    man_b = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    blobs = {digest(cfg_b): Blob(cfg_b), digest(man_b): Blob(man_b)}
    for lay in layers:
        blobs[lay[4]] = lay[1]
    return blobs, digest(man_b), len(man_b), digest(cfg_b), [lay[4] for lay in layers]


def _layer_blob(layer, no_compress, created_by, tmpdir):
    """(diff_id, Blob, media type, created_by, blob digest) of one layer, streamed to a file in tmpdir:
    the tar's sha256 is the diff_id, the (gzip) file's sha256 the blob digest."""
    fd, path = tempfile.mkstemp(dir=tmpdir, suffix=".layer")
    with os.fdopen(fd, "wb") as fh:
        blob = HashingWriter(fh)
        if no_compress:
            layer.write_tar(blob)
            return blob.digest(), Blob(path=path, size=blob.size), "application/vnd.oci.image.layer.v1.tar", \
                created_by, blob.digest()
        with gzip.GzipFile(filename="", mode="wb", compresslevel=6, fileobj=blob, mtime=0) as gz:
            raw = HashingWriter(gz)
            layer.write_tar(raw)
    return raw.digest(), Blob(path=path, size=blob.size), "application/vnd.oci.image.layer.v1.tar+gzip", \
        created_by, blob.digest()


def index_entry(man_digest, man_size, ref, tag, arch):
    return {
        "mediaType": OCI_MANIFEST,
        "digest": man_digest,
        "size": man_size,
        "platform": {"architecture": arch, "os": "linux"},
        "annotations": {"io.containerd.image.name": ref, "org.opencontainers.image.ref.name": tag},
    }


def write_archive(path, blobs, entries, docker_manifest):
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    files = {
        "oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
        "index.json": json.dumps(index, indent=1).encode(),
        "manifest.json": json.dumps(docker_manifest, indent=1).encode(),
    }
    files = dict((k, Blob(v)) for k, v in files.items())
    for d, b in blobs.items():
        files["blobs/sha256/" + d.split(":", 1)[1]] = b
    tmp = path + ".tmp"
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as t:
        for d in ("blobs", "blobs/sha256"):
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 0
            t.addfile(ti)
        for name in sorted(files):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = files[name].size, 0o644, 0
            with files[name].open() as fh:
                t.addfile(ti, fh)
    os.replace(tmp, path)


def write_layout(d, blobs, entries):
    os.makedirs(os.path.join(d, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(d, "oci-layout"), "w") as fh:
        fh.write('{"imageLayoutVersion":"1.0.0"}')
    for dg, b in blobs.items():
        p = os.path.join(d, "blobs", "sha256", dg.split(":", 1)[1])
        if not os.path.exists(p):
            with open(p + ".tmp", "wb") as fh, b.open() as src:
                shutil.copyfileobj(src, fh, 1 << 20)
            os.replace(p + ".tmp", p)
    ipath = os.path.join(d, "index.json")
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    if os.path.exists(ipath):
        with open(ipath) as fh:
            index = json.load(fh)
    # In a shared layout the full reference names each image (skopeo: oci:DIR:REF);
    # a tag written again replaces what it pointed at, other images stay.
    entries = [dict(e, annotations=dict(e["annotations"], **{
        "org.opencontainers.image.ref.name": e["annotations"]["io.containerd.image.name"]}))
        for e in entries]
    names = {e["annotations"]["io.containerd.image.name"] for e in entries}
    keep = [m for m in index.get("manifests", [])
            if not names & {m.get("annotations", {}).get("io.containerd.image.name"),
                            m.get("annotations", {}).get("org.opencontainers.image.ref.name")}]
    index["manifests"] = keep + entries
    with open(ipath + ".tmp", "w") as fh:
        json.dump(index, fh, indent=1)
    os.replace(ipath + ".tmp", ipath)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tag", action="append", required=True,
                    help="image reference, e.g. localhost/busybox:1 (repeatable)")
    ap.add_argument("--output", "-o", help="write an image archive (tar) here")
    ap.add_argument("--oci-layout", help="write/extend an OCI image layout directory here")
    ap.add_argument("--layer", action="append", default=[], metavar="DIR",
                    help="a host directory tree at / as its own layer, below the main one (repeatable, bottom first)")
    ap.add_argument("--busybox", metavar="PATH",
                    help="a static busybox: installed as /bin/busybox with a /bin symlink per applet")
    ap.add_argument("--add", action="append", default=[], metavar="SRC:DEST[:MODE]",
                    help="a host file or directory at DEST in the image (repeatable)")
    ap.add_argument("--symlink", action="append", default=[], metavar="TARGET:LINK",
                    help="a symlink LINK -> TARGET in the image (repeatable)")
    ap.add_argument("--entrypoint", help="JSON list or shell-like string ('' = none)")
    ap.add_argument("--cmd", help="JSON list or shell-like string")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="environment (repeatable); PATH defaults to the usual dirs")
    ap.add_argument("--workdir", default="/")
    ap.add_argument("--user", help="user[:group] the image runs as")
    ap.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--arch", default="amd64", help="config architecture (default amd64)")
    ap.add_argument("--no-compress", action="store_true", help="store the layer as a plain tar")
    a = ap.parse_args(argv)
    if not a.output and not a.oci_layout:
        ap.error("give --output ARCHIVE.tar and/or --oci-layout DIR")
    for kv in a.env + a.label:
        if "=" not in kv:
            ap.error("--env/--label want KEY=VALUE, got %r" % kv)

    # Layers are spooled next to the output (same file system), never held in memory.
    spool = os.path.dirname(os.path.abspath(a.output or os.path.join(a.oci_layout, "x")))
    os.makedirs(spool, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".mkimage-", dir=spool) as tmpdir:
        blobs, man_digest, man_size, cfg_digest, layer_digests = build(a, tmpdir)
        refs = [parse_tag(t) for t in a.tag]
        entries = [index_entry(man_digest, man_size, ref, tag, a.arch) for ref, tag in refs]
        if a.output:
            docker_manifest = [{"Config": "blobs/sha256/" + cfg_digest.split(":", 1)[1],
                                "RepoTags": [r[0] for r in refs],
                                "Layers": ["blobs/sha256/" + d.split(":", 1)[1] for d in layer_digests]}]
            write_archive(a.output, blobs, entries, docker_manifest)
        if a.oci_layout:
            write_layout(a.oci_layout, blobs, entries)
    for r in refs:
        print(r[0], man_digest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
