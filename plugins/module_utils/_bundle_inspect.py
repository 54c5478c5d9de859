# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Inspect an air-gap bundle without installing it: what it holds, per category and per destination,
and a CycloneDX software bill of materials with the licences the packages declare.

The signature comes first (``_bundle.Importer.load``: manifest and segments.json signatures, every
path, the listing and every size against the signed manifest). Then only the small metadata files
the signed manifest lists are read - the OCI ``index.json`` and image manifests, the apt
``Packages`` index, ``Chart.yaml``, wheel ``METADATA`` and, when asked, each ``.deb``'s copyright
file - each bounded by its signed size and by a limit here, never through a link, and used only
once its bytes matched the signed sha256. The data of images and checkpoints is not hashed: that is
``bundle_verify``'s job (and the import's).

Private to this collection: the API may change without notice.
"""

from __future__ import annotations

import datetime
import email.parser
import hashlib
import io
import json
import lzma
import os
import re
import stat
import tarfile
import uuid
import zipfile
import zlib

from ansible_collections.llmops.onprem.plugins.module_utils._bundle import (
    CHUNK, MANIFEST, BundleError, Importer, _SegmentReader, _padded, checkpoint_manifests, human, kind_of)

INVENTORY_SCHEMA = "llmops.onprem/bundle-inventory/v1"
# The largest manifest.json inspect reads (a bundle of a million files stays under it).
MANIFEST_LIMIT = 256 * 1024 * 1024
# index.json, image manifests and configs, Packages, Chart.yaml in a chart folder.
METADATA_LIMIT = 16 * 1024 * 1024
# A packaged chart or a wheel is read whole into memory (hashed, then opened): at most this.
ARCHIVE_LIMIT = 64 * 1024 * 1024
# One member read out of an archive (Chart.yaml, METADATA, a copyright file).
MEMBER_LIMIT = 1024 * 1024
# Decompressed bytes of a .deb's data.tar scanned for its copyright file before giving up.
DEB_SCAN_LIMIT = 64 * 1024 * 1024
CATEGORIES = ("images", "charts", "packages", "python", "collections", "binaries", "models", "tooling")
# Where each category's bytes go at the site (besides the controller's import directory, which holds all).
DESTINATIONS = (("package_repo", ("packages",)), ("registry", ("images",)), ("object_store", ("models",)))
OCI_REF = "org.opencontainers.image.ref.name"
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
REPO_METADATA = ("Packages", "Release", "InRelease", "Release.gpg", "llmops-archive-keyring.gpg", "packages.lock")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
DEP5_FORMAT = re.compile(r"^Format:\s*\S*copyright-format/1\.0", re.I)
WHEEL_NAME = re.compile(r"^(?P<name>[A-Za-z0-9_.]+)-(?P<version>[A-Za-z0-9_.!+]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")
COLLECTION_NAME = re.compile(r"^(?P<ns>[a-z0-9_]+)-(?P<name>[a-z0-9_]+)-(?P<version>[0-9][^/]*)\.tar\.gz$")
# Trove classifiers with one SPDX meaning (others are kept as named licences, word for word).
CLASSIFIER_SPDX = {
    "MIT License": "MIT", "MIT No Attribution License (MIT-0)": "MIT-0", "Apache Software License": None,
    "BSD License": None, "ISC License (ISCL)": "ISC", "Mozilla Public License 2.0 (MPL 2.0)": "MPL-2.0",
    "Python Software Foundation License": "PSF-2.0", "The Unlicense (Unlicense)": "Unlicense",
    "GNU General Public License v2 (GPLv2)": "GPL-2.0-only", "GNU General Public License v3 (GPLv3)": "GPL-3.0-only",
    "GNU General Public License v2 or later (GPLv2+)": "GPL-2.0-or-later",
    "GNU General Public License v3 or later (GPLv3+)": "GPL-3.0-or-later",
    "GNU Lesser General Public License v2 or later (LGPLv2+)": "LGPL-2.0-or-later",
    "GNU Lesser General Public License v3 (LGPLv3)": "LGPL-3.0-only",
    "GNU Lesser General Public License v3 or later (LGPLv3+)": "LGPL-3.0-or-later",
    "Zope Public License": None, "Apache Software License 2.0": "Apache-2.0",
}
FAST_NOTE = ("signature, listing and sizes checked against the signed manifest; only the metadata files listed in "
             "'verified.hashed' were read and hashed. Image layers and checkpoints were not hashed: bundle_verify (or the "
             "import) checks every byte")


# ---- reading verified files ----------------------------------------------------------------

class _Verified(object):
    """Exactly the signed size of one bundle file, hashed on the way; finish() compares the sha256."""

    def __init__(self, parts, path, entry, counter):
        self.parts, self.path, self.entry, self.counter = iter(parts), path, entry, counter
        self.h, self.left, self.cur, self.cur_left = hashlib.sha256(), entry["size"], None, 0

    def read(self, n=-1):
        if n is None or n < 0:
            n = self.left
        out = []
        while n > 0 and self.left > 0:
            if self.cur_left == 0:
                self._next_part()
            b = self.cur.read(min(n, self.cur_left, CHUNK))
            if not b:
                raise BundleError("%s ended before its signed %d bytes while it was read: the media changed. Refusing the bundle"
                                  % (self.path, self.entry["size"]))
            self.h.update(b)
            self.cur_left -= len(b)
            self.left -= len(b)
            n -= len(b)
            out.append(b)
        return b"".join(out)

    def _next_part(self):
        if self.cur is not None:
            self.cur.close()
            self.cur = None
        try:
            self.cur, self.cur_left = next(self.parts)
        except StopIteration:
            raise BundleError("%s: the media holds fewer bytes of it than the signed %d. Refusing the bundle"
                              % (self.path, self.entry["size"]))

    def finish(self):
        """Read what is left (hashing it) and compare with the signed sha256."""
        while self.left:
            self.read(CHUNK)
        if self.cur is not None:
            self.cur.close()
            self.cur = None
        self.counter["files"] += 1
        self.counter["bytes"] += self.entry["size"]
        self.counter["paths"].append(self.path)
        got = self.h.hexdigest()
        if got != self.entry["sha256"]:
            raise BundleError("sha256 mismatch for %s: the signed manifest says %s, the media holds %s. The media is damaged or "
                              "was tampered with; refusing to list it" % (self.path, self.entry["sha256"], got))

    def close(self):
        if self.cur is not None:
            self.cur.close()
            self.cur = None


class BundleReader(object):
    """Files of a loaded (signature-checked) bundle, from a directory or from segments, read only
    through no-follow opens and only as many bytes as the manifest signs."""

    def __init__(self, imp):
        self.imp, self.src, self.files = imp, imp.src, imp.files
        self.hashed = {"files": 0, "bytes": 0, "paths": []}
        self._offsets = {}
        self._parts = {}
        if imp.segmented:
            for s in imp.table["segments"]:
                for m in s["members"]:
                    self._parts.setdefault(m["path"], []).append((m.get("part", 0), s["name"], m["name"], m["size"]))

    def _open(self, name):
        try:
            fd = os.open(os.path.join(self.src, name), os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
        except OSError as e:
            raise BundleError("cannot read %s from the media (%s): was it replaced by a link or removed? Refusing the bundle"
                              % (name, e))
        f = os.fdopen(fd, "rb")
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            f.close()
            raise BundleError("%s on the media is not a regular file. Refusing the bundle" % name)
        return f

    def _segment_offsets(self, seg):
        """member name -> offset of its data in segment seg (headers parsed with bounded reads)."""
        if seg not in self._offsets:
            out = {}
            with self._open(seg) as f:
                tar = _SegmentReader(f, seg)
                while True:
                    nxt = tar.next()
                    if nxt is None:
                        break
                    out[nxt[0]] = (tar.pos, nxt[1])
                    tar.skip(_padded(nxt[1]))
            self._offsets[seg] = out
        return self._offsets[seg]

    def _pieces(self, path, size):
        if not self.imp.segmented:
            f = self._open(path)
            if os.fstat(f.fileno()).st_size != size:
                f.close()
                raise BundleError("%s changed size on the media since the listing was checked. Refusing the bundle" % path)
            yield f, size
            return
        for dummy, seg, member, msize in sorted(self._parts.get(path, [])):
            medium = self.imp.seg_medium.get(seg, 1)
            if medium not in self.imp.media_here:
                raise BundleError("%s lies (in %s) on medium %d of the %d this bundle is spread over, and %s holds medium %s: inspect "
                                  "reads it. Mount medium %d there, or copy every medium's segments into one folder (the signed tables "
                                  "are the same on each) and inspect that"
                                  % (path, seg, medium, self.imp.media, self.src, ", ".join(str(x) for x in self.imp.media_here), medium))
            at = self._segment_offsets(seg).get(member)
            if at is None or at[1] != msize:
                raise BundleError("segment %s does not hold %s as segments.json says. Refusing the bundle" % (seg, member))
            f = self._open(seg)
            f.seek(at[0])
            yield f, msize

    def stream(self, path):
        e = self.files[path]
        return _Verified(self._pieces(path, e["size"]), path, e, self.hashed)

    def read_all(self, path, limit, what):
        """The whole file, once its bytes matched the signed sha256; refused above `limit` bytes."""
        size = self.files[path]["size"]
        if size > limit:
            raise BundleError("%s is %d bytes in the signed manifest; inspect reads %s of at most %d bytes (%s): a metadata "
                              "file that large is not what playbooks/bundle.yml writes. Refusing to list the bundle"
                              % (path, size, what, limit, human(limit)))
        v = self.stream(path)
        try:
            data = v.read(size)
            v.finish()
        finally:
            v.close()
        return data


def check_manifest_file(src):
    """Refuse a manifest.json that is a link, not a regular file, or larger than inspect reads."""
    p = os.path.join(src, MANIFEST)
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return  # the Importer says what is missing
    if not stat.S_ISREG(st.st_mode):
        raise BundleError("%s is a symbolic link or another special file: a bundle holds regular files only. Refusing the bundle"
                          % MANIFEST)
    if st.st_size > MANIFEST_LIMIT:
        raise BundleError("%s is %d bytes; inspect reads a manifest of at most %d bytes. Refusing the bundle"
                          % (MANIFEST, st.st_size, MANIFEST_LIMIT))


def _json(data, path):
    try:
        obj = json.loads(data.decode("utf-8"))
    except ValueError as e:
        raise BundleError("%s is not valid JSON (%s), though its sha256 matches the signed manifest: the bundle was built "
                          "wrong. Refusing to list it" % (path, e))
    if not isinstance(obj, dict):
        raise BundleError("%s is not a JSON object. Refusing to list it" % path)
    return obj


# ---- parsing (pure) -------------------------------------------------------------------------

def split_ref(ref):
    """'docker.io/library/busybox:1.36' -> ('docker.io/library/busybox', '1.36'); a digest reference has no tag."""
    name = ref.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        return name.rsplit(":", 1)[0], name.rsplit(":", 1)[1]
    return name, None


def parse_packages_index(text):
    """Stanzas of an apt Packages index: [{name, version, arch, filename, size, sha256}]."""
    out = []
    for stanza in re.split(r"\n\s*\n", text):
        fields = dict(re.findall(r"^([A-Za-z0-9-]+):[ \t]*(.*)$", stanza, re.M))
        if not fields.get("Package"):
            continue
        try:
            size = int(fields.get("Size", "0"))
        except ValueError:
            size = None
        out.append({"name": fields["Package"], "version": fields.get("Version"), "arch": fields.get("Architecture"),
                    "filename": fields.get("Filename"), "size": size, "sha256": fields.get("SHA256")})
    return out


def deb_name(filename):
    """pool/<name>_<version>_<arch>.deb -> (name, version, arch), versions with '%3a' as ':'."""
    base = filename.rsplit("/", 1)[-1]
    m = re.match(r"^([^_]+)_([^_]+)_([^_]+)\.deb$", base)
    if not m:
        return base, None, None
    return m.group(1), m.group(2).replace("%3a", ":"), m.group(3)


def dep5_licenses(text):
    """The licences a machine-readable Debian copyright file declares (License: short names of its
    Files paragraphs, the 'Files: *' one first), or None when the file is not DEP-5."""
    paras = [p for p in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n")) if p.strip()]
    if not paras or not DEP5_FORMAT.search(paras[0].lstrip()):
        return None
    first, rest = [], []
    for p in paras[1:]:
        files = re.search(r"^Files:[ \t]*(.*)$", p, re.M)
        lic = re.search(r"^License:[ \t]*(.*)$", p, re.M)
        if not files or not lic or not lic.group(1).strip():
            continue
        (first if files.group(1).strip() == "*" else rest).append(lic.group(1).strip())
    out = []
    for name in first + rest:
        if name not in out:
            out.append(name)
    return out


def wheel_name(filename):
    """(name, version) from a wheel's file name (PEP 427), the name normalised as PyPI does."""
    m = WHEEL_NAME.match(filename)
    if not m:
        return None, None
    return re.sub(r"[-_.]+", "-", m.group("name")).lower(), m.group("version")


def wheel_licenses(metadata_text):
    """(kind, values) the METADATA declares: ('expression', [expr]) for License-Expression (PEP 639),
    else ('licenses', [...]) from the License classifiers (SPDX ids where one is meant, else the
    classifier's words), else from a one-line License field; ('none', []) when it declares none."""
    msg = email.parser.HeaderParser().parsestr(metadata_text)
    expr = (msg.get("License-Expression") or "").strip()
    if expr:
        return "expression", [expr]
    out = []
    for c in msg.get_all("Classifier") or []:
        parts = [x.strip() for x in c.split("::")]
        if parts[0] != "License" or len(parts) < 2 or parts[-1] in ("OSI Approved", "Other/Proprietary License"):
            continue
        value = CLASSIFIER_SPDX.get(parts[-1]) or parts[-1]
        if value not in out:
            out.append(value)
    if out:
        return "licenses", out
    lic = (msg.get("License") or "").strip()
    if lic and "\n" not in lic and len(lic) <= 100 and lic.upper() not in ("UNKNOWN", "NONE"):
        return "licenses", [lic]
    return "none", []


def chart_fields(text, path):
    import yaml  # ansible-core's own dependency
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise BundleError("%s is not valid YAML (%s). Refusing to list the bundle" % (path, str(e).splitlines()[0]))
    if not isinstance(doc, dict):
        raise BundleError("%s is not a chart description (a YAML mapping). Refusing to list the bundle" % path)
    return {k: (str(doc[k]) if doc.get(k) is not None else None) for k in ("name", "version", "appVersion")}


# ---- archives (bounded) ---------------------------------------------------------------------

class _Capped(object):
    """A decompressing reader that refuses to produce more than `limit` bytes. It asks the
    decompressor for no more than each read wants, so memory stays at one read's worth."""

    def __init__(self, raw, left, decompressor, limit):
        self.raw, self.left, self.d, self.limit, self.out = raw, left, decompressor, limit, 0

    def _input(self):
        if isinstance(self.d, lzma.LZMADecompressor):
            if not self.d.needs_input:
                return b""
        elif self.d.unconsumed_tail:
            return self.d.unconsumed_tail
        if self.left <= 0:
            return None
        chunk = self.raw.read(min(CHUNK // 8, self.left))
        self.left -= len(chunk)
        return chunk or None

    def read(self, n=-1):
        if n is None or n < 0:
            n = self.limit + 1
        out = bytearray()
        while len(out) < n and not self.d.eof:
            data = self._input()
            if data is None:
                break
            more = self.d.decompress(data, n - len(out))
            out += more
            self.out += len(more)
            if self.out > self.limit:
                raise _ScanLimit()
        return bytes(out)


class _ScanLimit(Exception):
    pass


class _Plain(object):
    def __init__(self, raw, left):
        self.raw, self.left = raw, left

    def read(self, n=-1):
        n = self.left if n is None or n < 0 else min(n, self.left)
        b = self.raw.read(n)
        self.left -= len(b)
        return b


def deb_copyright(f, package, limit=DEB_SCAN_LIMIT):
    """(text, reason): the copyright file of `package` from a .deb read sequentially from f (an ar
    archive: debian-binary, control.tar.*, data.tar.*), or (None, why not). At most `limit`
    decompressed bytes of data.tar are scanned; nothing is followed or written."""
    if f.read(8) != b"!<arch>\n":
        return None, "not a Debian package (no ar header)"
    while True:
        hdr = f.read(60)
        if len(hdr) < 60:
            return None, "the package has no data.tar"
        name = hdr[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(hdr[48:58].decode("ascii").strip())
        except ValueError:
            return None, "the package has a damaged ar header"
        if not name.startswith("data.tar"):
            left = size + (size & 1)
            while left:
                left -= len(f.read(min(CHUNK, left)) or b"") or left
            continue
        if name == "data.tar":
            stream = _Plain(f, size)
        elif name == "data.tar.xz":
            stream = _Capped(f, size, lzma.LZMADecompressor(), limit)
        elif name == "data.tar.gz":
            stream = _Capped(f, size, zlib.decompressobj(16 + zlib.MAX_WBITS), limit)
        else:
            return None, "%s is not readable with the Python standard library" % name
        return _find_copyright(stream, package, limit)


def _find_copyright(stream, package, limit):
    want = "usr/share/doc/%s/copyright" % package
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for ti in tar:
                name = ti.name[2:] if ti.name.startswith("./") else ti.name
                if ti.offset_data > limit:
                    break
                if name == "usr/share/doc/%s" % package and ti.issym():
                    return None, "usr/share/doc/%s is a link to %s (not followed)" % (package, ti.linkname)
                if name != want:
                    continue
                if not ti.isreg():
                    return None, "%s is a link (not followed)" % want
                if ti.size > MEMBER_LIMIT:
                    return None, "%s is %d bytes (more than %d)" % (want, ti.size, MEMBER_LIMIT)
                return tar.extractfile(ti).read(ti.size).decode("utf-8", "replace"), None
    except _ScanLimit:
        pass
    except (tarfile.TarError, lzma.LZMAError, zlib.error, EOFError) as e:
        return None, "data.tar cannot be read (%s)" % e
    return None, "no %s in the first %s of data.tar" % (want, human(limit))


def _zip_member(data, pattern, what):
    """The one member of a zip (in memory) whose name matches pattern, bounded, or (None, why)."""
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as e:
        return None, "%s is not a zip archive (%s)" % (what, e)
    with z:
        names = [i for i in z.infolist() if re.match(pattern, i.filename)]
        if len(names) != 1:
            return None, "%s holds %d files named like %s" % (what, len(names), pattern)
        if names[0].file_size > MEMBER_LIMIT:
            return None, "%s in %s is %d bytes (more than %d)" % (names[0].filename, what, names[0].file_size, MEMBER_LIMIT)
        with z.open(names[0]) as m:
            return m.read(MEMBER_LIMIT + 1)[:MEMBER_LIMIT].decode("utf-8", "replace"), None


def _tgz_chart_yaml(data, path):
    """Chart.yaml of a packaged chart (in memory), bounded; None when it has none."""
    stream = _Capped(io.BytesIO(data), len(data), zlib.decompressobj(16 + zlib.MAX_WBITS), 4 * ARCHIVE_LIMIT)
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for ti in tar:
                parts = ti.name.split("/")
                if len(parts) == 2 and parts[1] == "Chart.yaml" and ti.isreg() and ti.size <= MEMBER_LIMIT:
                    return tar.extractfile(ti).read(ti.size).decode("utf-8", "replace")
    except (_ScanLimit, tarfile.TarError, zlib.error, EOFError) as e:
        raise BundleError("%s is not a readable chart archive (%s). Refusing to list the bundle" % (path, str(e) or "too large"))
    return None


# ---- the listing ----------------------------------------------------------------------------

def category_of(path):
    k = kind_of(path)
    return "tooling" if k == "root" else k


def inspect(src, public_key, package_licenses=True, deb_scan_limit=DEB_SCAN_LIMIT):
    """Verify the signature, then list what the bundle holds. Returns the inventory (a dict)."""
    if not os.path.isdir(src):
        raise BundleError("the bundle source %s is not a directory (mount the media, or point at the unpacked bundle)" % src)
    check_manifest_file(src)
    imp = Importer(src, public_key).load()
    if imp.delta is not None:
        raise BundleError("%s is a delta bundle: it carries %d of the bundle's %d files and takes the rest from the site's last "
                          "import, so it cannot be listed alone. Inspect the full bundle it was built from (the bundle id is "
                          "%s), or import the delta and inspect the import directory"
                          % (src, len(imp.media_files), len(imp.files), imp.manifest_sha256))
    r = BundleReader(imp)
    files = imp.files
    claimed = set()
    problems = []
    images = _images(r, files, imp.manifest, claimed, problems)
    charts = _charts(r, files, claimed)
    packages = _packages(r, files, claimed, problems, package_licenses, deb_scan_limit)
    wheels, collections = _python(r, files, claimed, problems)
    binaries = [{"name": p.split("/", 1)[1], "path": p, "size": files[p]["size"], "sha256": files[p]["sha256"]}
                for p in sorted(files) if category_of(p) == "binaries"]
    claimed.update(b["path"] for b in binaries)
    models = []
    for name, (m, digest) in checkpoint_manifests(imp.manifest).items():
        models.append({"name": name, "files": len(m["files"]), "size": sum(x["size"] for x in m["files"]),
                       "manifest_digest": digest, "file_list": m["files"]})
        claimed.update("models/%s/%s" % (name, x["path"]) for x in m["files"])
    claimed.update(p for p in files if category_of(p) == "tooling")
    categories = {}
    for c in CATEGORIES:
        paths = sorted(p for p in files if category_of(p) == c)
        categories[c] = {"files": len(paths), "bytes": sum(files[p]["size"] for p in paths), "paths": paths,
                         "unclaimed": [p for p in paths if p not in claimed]}
        for p in categories[c]["unclaimed"]:
            problems.append("%s is in the signed manifest but belongs to nothing inspect knows in %s/" % (p, c))
    total = imp.manifest.get("totals", {}).get("bytes", sum(e["size"] for e in files.values()))
    destinations = {"controller": {"files": len(files), "bytes": total}}
    for dest, cats in DESTINATIONS:
        destinations[dest] = {"files": sum(categories[c]["files"] for c in cats), "bytes": sum(categories[c]["bytes"] for c in cats)}
    for d in destinations.values():
        d["human"] = human(d["bytes"])
    spec = imp.manifest.get("spec") or {}
    return {
        "schema": INVENTORY_SCHEMA,
        "bundle": {"id": imp.manifest_sha256, "name": spec.get("name") if isinstance(spec, dict) else None,
                   "created": imp.manifest.get("created"), "versions": imp.manifest.get("versions") or {},
                   "source": src, "segmented": imp.segmented,
                   "segments": len(imp.table["segments"]) if imp.segmented else 0},
        "verified": {"signature": True, "listing": True, "data_hashed": False, "note": FAST_NOTE,
                     "hashed": {"files": r.hashed["files"], "bytes": r.hashed["bytes"]}},
        "images": images, "charts": charts, "packages": packages, "wheels": wheels, "collections": collections,
        "binaries": binaries, "models": models, "categories": categories, "destinations": destinations,
        "totals": {"files": len(files), "bytes": total, "human": human(total)}, "problems": problems,
    }


def _images(r, files, manifest, claimed, problems):
    index_path = "images/index.json"
    if index_path not in files:
        return []
    claimed.update(p for p in ("images/index.json", "images/oci-layout") if p in files)
    index = _json(r.read_all(index_path, METADATA_LIMIT, "an OCI index"), index_path)
    pinned = {i.get("ref"): i.get("digest") for i in manifest.get("images") or [] if isinstance(i, dict)}
    out = []
    for desc in index.get("manifests") or []:
        if not isinstance(desc, dict):
            continue
        digest = desc.get("digest") or ""
        ref = (desc.get("annotations") or {}).get(OCI_REF) or digest
        name, tag = split_ref(ref)
        blobs, platforms = [], []
        for plat, paths in _image_blobs(r, files, digest, desc.get("mediaType"), problems, ref):
            if plat:
                platforms.append(plat)
            blobs += [p for p in paths if p not in blobs]
        claimed.update(blobs)
        if ref in pinned and pinned[ref] != digest:
            problems.append("image %s: images/index.json holds %s, the manifest's image list says %s" % (ref, digest, pinned[ref]))
        out.append({"ref": ref, "name": name, "tag": tag, "digest": digest, "platforms": platforms, "blobs": len(blobs),
                    "size": sum(files[p]["size"] for p in blobs)})
    return sorted(out, key=lambda i: i["ref"])


def _blob(digest):
    return "images/blobs/%s" % digest.replace(":", "/", 1)


def _image_blobs(r, files, digest, media_type, problems, ref, depth=0):
    """[(platform, [blob paths])] of one image (an index: one entry per platform the bundle holds)."""
    path = _blob(digest)
    if path not in files:
        problems.append("image %s: its manifest %s is not in the bundle" % (ref, digest))
        return []
    doc = _json(r.read_all(path, METADATA_LIMIT, "an image manifest"), path)
    media_type = doc.get("mediaType") or media_type
    if media_type in INDEX_TYPES or "manifests" in doc:
        if depth:
            return []
        out = [(None, [path])]
        for child in doc.get("manifests") or []:
            if isinstance(child, dict) and _blob(child.get("digest", "")) in files:
                plat = child.get("platform") or {}
                for dummy, blobs in _image_blobs(r, files, child["digest"], child.get("mediaType"), problems, ref, depth + 1):
                    out.append(("%s/%s" % (plat.get("os", "?"), plat.get("architecture", "?")), blobs))
        return out
    blobs = [path]
    plat = None
    for d in [doc.get("config") or {}] + list(doc.get("layers") or []):
        p = _blob(d.get("digest", "")) if isinstance(d, dict) else None
        if p in files:
            blobs.append(p)
        else:
            problems.append("image %s: blob %s is not in the bundle" % (ref, d.get("digest") if isinstance(d, dict) else d))
    cfg = _blob((doc.get("config") or {}).get("digest", ""))
    if cfg in files:
        c = _json(r.read_all(cfg, METADATA_LIMIT, "an image config"), cfg)
        if c.get("os") or c.get("architecture"):
            plat = "%s/%s" % (c.get("os", "?"), c.get("architecture", "?"))
    return [(plat, blobs)]


def _charts(r, files, claimed):
    out = []
    names = sorted({p.split("/")[1] for p in files if category_of(p) == "charts" and p.count("/") >= 2})
    for n in names:
        path = "charts/%s/Chart.yaml" % n
        item = {"name": n, "path": "charts/%s/" % n, "version": None, "app_version": None, "chart": None,
                "sha256": files[path]["sha256"] if path in files else None}
        if path in files:
            f = chart_fields(r.read_all(path, METADATA_LIMIT, "a Chart.yaml").decode("utf-8", "replace"), path)
            item.update(chart=f["name"], version=f["version"], app_version=f["appVersion"])
        mine = [p for p in files if p.startswith("charts/%s/" % n)]
        item["files"], item["size"] = len(mine), sum(files[p]["size"] for p in mine)
        claimed.update(mine)
        out.append(item)
    for p in sorted(files):
        if category_of(p) == "charts" and p.count("/") == 1 and p.endswith(".tgz"):
            text = _tgz_chart_yaml(r.read_all(p, ARCHIVE_LIMIT, "a packaged chart"), p)
            f = chart_fields(text, p) if text else {"name": None, "version": None, "appVersion": None}
            out.append({"name": p[len("charts/"):-len(".tgz")], "path": p, "chart": f["name"], "version": f["version"],
                        "app_version": f["appVersion"], "files": 1, "size": files[p]["size"], "sha256": files[p]["sha256"]})
            claimed.add(p)
    return out


def _packages(r, files, claimed, problems, read_licenses, scan_limit):
    out = []
    repos = sorted({p.split("/")[1] for p in files if category_of(p) == "packages" and p.count("/") >= 2})
    for distro in repos:
        base = "packages/%s/" % distro
        claimed.update(base + m for m in REPO_METADATA if base + m in files)
        index = {}
        if base + "Packages" in files:
            text = r.read_all(base + "Packages", METADATA_LIMIT, "an apt Packages index").decode("utf-8", "replace")
            index = {s["filename"]: s for s in parse_packages_index(text) if s.get("filename")}
        for p in sorted(x for x in files if x.startswith(base + "pool/") and x.endswith(".deb")):
            rel = p[len(base):]
            s = index.get(rel)
            name, version, arch = (s["name"], s["version"], s["arch"]) if s else deb_name(rel)
            if s is None:
                problems.append("%s is not in %sPackages: apt at the site will not see it" % (p, base))
            elif s.get("sha256") and s["sha256"] != files[p]["sha256"]:
                problems.append("%s: %sPackages says sha256 %s, the signed manifest %s" % (p, base, s["sha256"], files[p]["sha256"]))
            item = {"name": name, "version": version, "arch": arch, "distro": distro, "path": p, "size": files[p]["size"],
                    "sha256": files[p]["sha256"], "licenses": [], "license_source": None}
            if read_licenses:
                item["licenses"], item["license_source"] = _deb_licenses(r, p, name, scan_limit)
            claimed.add(p)
            out.append(item)
    return out


def _deb_licenses(r, path, name, scan_limit):
    v = r.stream(path)
    try:
        text, why = deb_copyright(v, name, scan_limit)
        v.finish()  # used only once the whole .deb matched its signed sha256
    finally:
        v.close()
    if text is None:
        return [], "not read: %s" % why
    lic = dep5_licenses(text)
    if lic is None:
        return [], "usr/share/doc/%s/copyright is not machine-readable (DEP-5)" % name
    return lic, "usr/share/doc/%s/copyright (DEP-5)" % name


def _python(r, files, claimed, problems):
    wheels, collections = [], []
    for p in sorted(files):
        c = category_of(p)
        base = p.split("/", 1)[1] if "/" in p else p
        # requirements.lock, and requirements-3.11.lock for a version with its own closure (roles/bundle_python)
        if c == "python" and re.match(r"^requirements(-[0-9][0-9.-]*)?\.lock$", base):
            claimed.add(p)
        elif c == "python" and base.endswith(".whl") and "/" not in base:
            name, version = wheel_name(base)
            if name is None:
                problems.append("%s is not named like a wheel (PEP 427)" % p)
                continue
            item = {"name": name, "version": version, "path": p, "size": files[p]["size"], "sha256": files[p]["sha256"],
                    "license_kind": "none", "licenses": [], "license_source": None}
            if files[p]["size"] <= ARCHIVE_LIMIT:
                text, why = _zip_member(r.read_all(p, ARCHIVE_LIMIT, "a wheel"), r"^[^/]+\.dist-info/METADATA$", p)
                if text is None:
                    item["license_source"] = "not read: %s" % why
                else:
                    item["license_kind"], item["licenses"] = wheel_licenses(text)
                    item["license_source"] = "METADATA"
            else:
                item["license_source"] = "not read: the wheel is larger than %s" % human(ARCHIVE_LIMIT)
            claimed.add(p)
            wheels.append(item)
        elif c == "collections":
            m = COLLECTION_NAME.match(base)
            if m:
                collections.append({"name": "%s.%s" % (m.group("ns"), m.group("name")), "version": m.group("version"),
                                    "path": p, "size": files[p]["size"], "sha256": files[p]["sha256"]})
                claimed.add(p)
    return wheels, collections


# ---- the SBOM (CycloneDX) -------------------------------------------------------------------

def _cdx():
    try:
        from cyclonedx.contrib.license.factories import LicenseFactory
        from cyclonedx.contrib.license.exceptions import FactoryException
        from cyclonedx.model import HashAlgorithm, HashType, Property
        from cyclonedx.model.bom import Bom
        from cyclonedx.model.component import Component, ComponentType
        from cyclonedx.output.json import JsonV1Dot6
        from cyclonedx.schema import SchemaVersion
        from cyclonedx.validation.json import JsonStrictValidator
        from packageurl import PackageURL
    except ImportError as e:
        raise BundleError("the SBOM needs the Python library cyclonedx-python-lib with its JSON validation (%s): install the "
                          "controller's requirements (bundle/requirements-controller.lock)" % e)
    return dict(LicenseFactory=LicenseFactory, FactoryException=FactoryException, HashAlgorithm=HashAlgorithm, HashType=HashType, Property=Property, Bom=Bom,
                Component=Component, ComponentType=ComponentType, JsonV1Dot6=JsonV1Dot6, SchemaVersion=SchemaVersion,
                JsonStrictValidator=JsonStrictValidator, PackageURL=PackageURL)


def _sha(cdx, hexdigest):
    h = (hexdigest or "").split(":", 1)[-1]
    return [cdx["HashType"](alg=cdx["HashAlgorithm"].SHA_256, content=h)] if re.match(r"^[0-9a-f]{64}$", h) else []


def _licenses(cdx, kind, values):
    lf = cdx["LicenseFactory"]()
    if kind == "expression":
        try:
            return [lf.make_with_expression(values[0])]
        except cdx["FactoryException"]:
            return [lf.make_with_name(values[0])]
    out = []
    for v in values:
        try:
            out.append(lf.make_with_id(v))
        except cdx["FactoryException"]:
            out.append(lf.make_with_name(v))
    return out


def sbom_document(inv):
    """The inventory as a CycloneDX 1.6 JSON document (str), validated against the CycloneDX schema
    with the library's own validator; BundleError when it does not validate (nothing is written)."""
    cdx = _cdx()
    C, T, P, U = cdx["Component"], cdx["ComponentType"], cdx["Property"], cdx["PackageURL"]
    b = inv["bundle"]
    created = b.get("created")
    try:
        ts = datetime.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    except (TypeError, ValueError):
        ts = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    bom = cdx["Bom"](serial_number=uuid.uuid5(uuid.NAMESPACE_URL, "llmops.onprem:bundle:" + b["id"]))
    bom.metadata.timestamp = ts
    bom.metadata.component = C(name=b.get("name") or "llmops-bundle", version=created or b["id"][:16], type=T.APPLICATION,
                               bom_ref="bundle:" + b["id"], hashes=_sha(cdx, b["id"]),
                               description="llmops.onprem air-gap bundle (manifest.json sha256 %s)" % b["id"])
    comps = []
    for i in inv["images"]:
        q = {"repository_url": i["name"]}
        if i.get("tag"):
            q["tag"] = i["tag"]
        comps.append(C(name=i["name"].rsplit("/", 1)[-1], version=i.get("tag") or i["digest"], type=T.CONTAINER,
                       bom_ref="image:" + i["ref"], purl=U(type="oci", name=i["name"].rsplit("/", 1)[-1].lower(),
                                                           version=i["digest"], qualifiers=q),
                       hashes=_sha(cdx, i["digest"]), properties=[P(name="llmops:size", value=str(i["size"]))]))
    for p in inv["packages"]:
        q = {"distro": p["distro"]}
        if p.get("arch"):
            q["arch"] = p["arch"]
        vendor = "ubuntu" if p["distro"].startswith("ubuntu") else "debian"
        comps.append(C(name=p["name"], version=p.get("version"), type=T.LIBRARY, bom_ref="deb:%s:%s" % (p["distro"], p["path"]),
                       purl=U(type="deb", namespace=vendor, name=p["name"], version=p.get("version"), qualifiers=q),
                       hashes=_sha(cdx, p["sha256"]), licenses=_licenses(cdx, "licenses", p["licenses"]),
                       properties=[P(name="llmops:license-source", value=p.get("license_source") or "not read")]))
    for w in inv["wheels"]:
        comps.append(C(name=w["name"], version=w["version"], type=T.LIBRARY, bom_ref="pypi:" + w["path"],
                       purl=U(type="pypi", name=w["name"], version=w["version"]), hashes=_sha(cdx, w["sha256"]),
                       licenses=_licenses(cdx, w["license_kind"], w["licenses"]),
                       properties=[P(name="llmops:license-source", value=w.get("license_source") or "not read")]))
    for c in inv["charts"]:
        comps.append(C(name=c.get("chart") or c["name"], version=c.get("version"), type=T.APPLICATION, bom_ref="chart:" + c["path"],
                       hashes=_sha(cdx, c.get("sha256")), properties=[P(name="llmops:kind", value="helm-chart")]
                       + ([P(name="llmops:app-version", value=c["app_version"])] if c.get("app_version") else [])))
    for c in inv["collections"]:
        comps.append(C(name=c["name"], version=c["version"], type=T.LIBRARY, bom_ref="collection:" + c["path"],
                       hashes=_sha(cdx, c["sha256"]), properties=[P(name="llmops:kind", value="ansible-collection")]))
    for x in inv["binaries"]:
        comps.append(C(name=x["name"], type=T.FILE, bom_ref="binary:" + x["path"], hashes=_sha(cdx, x["sha256"])))
    for m in inv["models"]:
        files = [C(name=f["path"], type=T.DATA, bom_ref="model:%s:%s" % (m["name"], f["path"]), hashes=_sha(cdx, f["sha256"]),
                   properties=[P(name="llmops:size", value=str(f["size"]))]) for f in m["file_list"]]
        comps.append(C(name=m["name"], type=T.MACHINE_LEARNING_MODEL, bom_ref="model:" + m["name"],
                       hashes=_sha(cdx, m["manifest_digest"]), components=files,
                       properties=[P(name="llmops:checkpoint-manifest-digest", value="sha256:" + m["manifest_digest"]),
                                   P(name="llmops:size", value=str(m["size"])), P(name="llmops:files", value=str(m["files"]))]))
    for c in comps:
        bom.components.add(c)
    bom.register_dependency(bom.metadata.component, comps)  # the bundle holds each of them
    text = cdx["JsonV1Dot6"](bom).output_as_string(indent=1)
    problem = validate_sbom(text)
    if problem:
        raise BundleError("the SBOM does not validate against the CycloneDX 1.6 schema: %s. Nothing was written" % problem)
    return text


def validate_sbom(text):
    """None when text is a valid CycloneDX 1.6 JSON document, else the first error (message and where)."""
    cdx = _cdx()
    err = cdx["JsonStrictValidator"](cdx["SchemaVersion"].V1_6).validate_str(text)
    if err is None:
        return None
    data = getattr(err, "data", None)
    where = "/".join(str(x) for x in getattr(data, "absolute_path", []) or [])
    msg = getattr(data, "message", None) or str(err).splitlines()[0]
    return "%s (at /%s)" % (msg, where)


# ---- the readable listing -------------------------------------------------------------------

def table(rows, headers):
    """A plain text table (columns padded to the widest cell)."""
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]


def listing(inv):
    """The lines a person reads: a table per category, then the totals per destination."""
    b = inv["bundle"]
    form = "segments: %d" % b["segments"] if b["segmented"] else "directory"
    out = ["Bundle %s (%s), created %s, id %s" % (b.get("name") or "(no name)", form, b.get("created"), b["id"]),
           "Verified: signature, listing and sizes; %d metadata and package files (%s) hashed; image layers and "
           "checkpoints not hashed (bundle_verify does that)"
           % (inv["verified"]["hashed"]["files"], human(inv["verified"]["hashed"]["bytes"]))]
    if b.get("versions"):
        out.append("Versions: " + ", ".join("%s %s" % kv for kv in sorted(b["versions"].items())))
    sections = (
        ("Images", inv["images"], ("ref", "digest", "size", "platform"),
         lambda i: (i["ref"], i["digest"], human(i["size"]), ",".join(i["platforms"]))),
        ("Charts", inv["charts"], ("name", "chart", "version", "app version", "size"),
         lambda c: (c["name"], c.get("chart"), c.get("version"), c.get("app_version"), human(c["size"]))),
        ("OS packages", inv["packages"], ("name", "version", "arch", "size", "licences"),
         lambda p: (p["name"], p["version"], p["arch"], human(p["size"]), ", ".join(p["licenses"]) or "-")),
        ("Python wheels", inv["wheels"], ("name", "version", "size", "licences"),
         lambda w: (w["name"], w["version"], human(w["size"]), ", ".join(w["licenses"]) or "-")),
        ("Collections", inv["collections"], ("name", "version", "size"), lambda c: (c["name"], c["version"], human(c["size"]))),
        ("Binaries", inv["binaries"], ("name", "size", "sha256"), lambda x: (x["name"], human(x["size"]), x["sha256"][:16])),
        ("Models", inv["models"], ("name", "files", "size", "manifest digest"),
         lambda m: (m["name"], m["files"], human(m["size"]), "sha256:" + m["manifest_digest"][:16])),
    )
    for title, items, headers, row in sections:
        if items:
            out += ["", "%s (%d)" % (title, len(items))] + table([row(i) for i in items], headers)
    out += ["", "Totals per destination"]
    names = {"controller": "controller import dir (all of it)", "package_repo": "package repository",
             "registry": "registry", "object_store": "object store"}
    out += table([(names[k], v["files"], v["human"]) for k, v in inv["destinations"].items()], ("destination", "files", "size"))
    if inv["problems"]:
        out += ["", "Problems (%d)" % len(inv["problems"])] + ["- " + p for p in inv["problems"]]
    return out
