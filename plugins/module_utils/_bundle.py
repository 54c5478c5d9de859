# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The air-gap bundle: manifest, Ed25519 signature, media segments, verification and import.

A bundle directory holds ``manifest.json`` (every file with size and sha256, grouped by kind,
plus the spec and versions it was built from) and ``manifest.json.sig`` (a detached Ed25519
signature over the exact bytes of manifest.json, base64). Packed for media it becomes
``bundle-NNNN.tar`` segments, each a valid tar by itself, described by ``segments.json`` (also
signed); a file larger than a segment is split into parts, each with its own sha256.

Private to this collection: the API may change without notice.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import stat
import tarfile
import time

from ansible_collections.llmops.onprem.plugins.module_utils._checkpoint import SCHEMA as CHECKPOINT_SCHEMA
from ansible_collections.llmops.onprem.plugins.module_utils._checkpoint import canonical_bytes, manifest_digest
from ansible_collections.llmops.onprem.plugins.module_utils._errors import OnpremError
from ansible_collections.llmops.onprem.plugins.module_utils._files import create_at as _create_at
from ansible_collections.llmops.onprem.plugins.module_utils._files import sha256_file, unlink_at as _unlink_at, write_atomic_at
from ansible_collections.llmops.onprem.plugins.module_utils._paths import path_problem, paths_problem
from ansible_collections.llmops.onprem.plugins.module_utils._progress import ProgressWriter
from ansible_collections.llmops.onprem.plugins.module_utils._progress import human_bytes as human

MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.sig"
SEGMENTS = "segments.json"
SEGMENTS_SIG = "segments.json.sig"
MANIFEST_SCHEMA = "llmops.onprem/bundle-manifest/v1"
SEGMENTS_SCHEMA = "llmops.onprem/bundle-segments/v1"
IMPORT_DIR = ".llmops-import"
# A delta bundle (docs/lifecycle.md): the full bundle's signed manifest plus only the files the
# site's receipt says it lacks; delta.json (signed) names what is carried and the base.
DELTA = "delta.json"
DELTA_SIG = "delta.json.sig"
DELTA_SCHEMA = "llmops.onprem/bundle-delta/v1"
KINDS = ("images", "charts", "packages", "binaries", "python", "collections", "models")
CHUNK = 8 * 1024 * 1024
TAR_BLOCK = 512
TAR_RECORD = 20 * TAR_BLOCK
# What the bundle's own root may hold besides the listed files.
ROOT_CONTROL = (MANIFEST, SIGNATURE, IMPORT_DIR, DELTA, DELTA_SIG)
MEDIA_CONTROL = (MANIFEST, SIGNATURE, SEGMENTS, SEGMENTS_SIG, DELTA, DELTA_SIG)
# The largest PAX extended header the import reads (bundle_pack writes a few hundred bytes at most):
# a segment is parsed before its members' sha256 can be checked, so every read is bounded.
PAX_HEADER_LIMIT = 64 * 1024
IMPORTED = "imported.json"
# The largest done marker (a previous import's manifest) the import and the receipt read.
MANIFEST_LIMIT = 64 * 1024 * 1024
# How many missing or changed files a refusal names before "and N more".
LIST_LIMIT = 20
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# The site's first step, written next to the segments as well as listed in the manifest (the site
# checks it against the signed manifest before running it): allowed on the media, not a segment.
VERIFY_SCRIPT = "llmops-verify.sh"
MEDIA_FILES = MEDIA_CONTROL + (VERIFY_SCRIPT,)


class BundleError(OnpremError):
    """A refusal: the message names the file and the reason."""

    KIND = "refused"


def parse_size(value):
    """'4095MiB', '8M', '1.5GiB', 1048576 -> bytes."""
    if isinstance(value, int):
        return value
    s = str(value).strip().replace(" ", "")
    units = {"": 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1024 ** 2, "mb": 1000 ** 2, "mib": 1024 ** 2,
             "g": 1024 ** 3, "gb": 1000 ** 3, "gib": 1024 ** 3, "t": 1024 ** 4, "tb": 1000 ** 4, "tib": 1024 ** 4}
    i = len(s)
    while i > 0 and not (s[i - 1].isdigit() or s[i - 1] == "."):
        i -= 1
    num, unit = s[:i], s[i:].lower()
    if not num or unit not in units:
        raise BundleError("cannot read size %r: use bytes or a number with KiB, MiB, GiB (e.g. 4095MiB)" % (value,))
    return int(float(num) * units[unit])


def canonical(obj):
    return (json.dumps(obj, sort_keys=True, indent=1, separators=(",", ": ")) + "\n").encode("utf-8")


def kind_of(path):
    top = path.split("/", 1)[0]
    return top if top in KINDS else "root"


def walk_files(root, skip_root=()):
    """Relative posix paths of every regular file under root (symlinks refused), sorted."""
    out = []
    for d, dirs, files in os.walk(root):
        dirs.sort()
        rel_d = os.path.relpath(d, root)
        if rel_d == ".":
            dirs[:] = [x for x in dirs if x not in skip_root]
        for name in sorted(files) + [x for x in dirs if os.path.islink(os.path.join(d, x))]:
            full = os.path.join(d, name)
            rel = name if rel_d == "." else "%s/%s" % (rel_d.replace(os.sep, "/"), name)
            if rel_d == "." and name in skip_root:
                continue
            if os.path.islink(full):
                raise BundleError("%s is a symbolic link: a bundle holds regular files only (copy the target in)" % rel)
            if not os.path.isfile(full):
                raise BundleError("%s is not a regular file" % rel)
            out.append(rel)
    return sorted(out)


# ---- signing -------------------------------------------------------------------------------

def _crypto():
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
        from cryptography.exceptions import InvalidSignature
    except ImportError:  # pragma: no cover - cryptography is an ansible-core dependency
        raise BundleError("the Python library 'cryptography' is required to sign and verify bundles")
    return serialization, ed25519, InvalidSignature


def sign(data, private_key_path):
    serialization, ed25519, dummy = _crypto()
    try:
        with open(private_key_path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
    except (OSError, ValueError) as e:
        raise BundleError("cannot read the signing key %s: %s" % (private_key_path, e))
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise BundleError("the signing key %s is not an Ed25519 key" % private_key_path)
    return base64.b64encode(key.sign(data)) + b"\n"


def load_public_key(public_key_path):
    serialization, ed25519, dummy = _crypto()
    try:
        with open(public_key_path, "rb") as f:
            key = serialization.load_pem_public_key(f.read())
    except (OSError, ValueError) as e:
        raise BundleError("cannot read the public key %s: %s" % (public_key_path, e))
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise BundleError("the public key %s is not an Ed25519 key" % public_key_path)
    return key


def verify_signature(data, sig_path, public_key_path, what):
    dummy, dummy2, InvalidSignature = _crypto()
    key = load_public_key(public_key_path)
    try:
        with open(sig_path, "rb") as f:
            sig = base64.b64decode(f.read().strip(), validate=True)
    except OSError:
        raise BundleError("%s is missing: the bundle is not signed, refusing it" % os.path.basename(sig_path))
    except ValueError:
        raise BundleError("%s is not a base64 signature" % os.path.basename(sig_path))
    try:
        key.verify(sig, data)
    except InvalidSignature:
        raise BundleError("the signature of %s does not verify with the public key %s: the file was changed after "
                          "signing, or the bundle was signed with another key. Refusing the bundle; nothing was installed"
                          % (what, public_key_path))


# ---- manifest ------------------------------------------------------------------------------

def build_manifest(root, spec=None, versions=None, images=None, previous=None, progress=None):
    """Hash every file under root (except the manifest and its signature) into a manifest dict.

    `previous` (an earlier manifest) lets an unchanged bundle keep its `created` time, so a
    rebuild with the same content writes byte-identical files (the build is idempotent)."""
    files = {}
    total = 0
    for rel in walk_files(root, skip_root=ROOT_CONTROL + MEDIA_CONTROL):
        full = os.path.join(root, rel)
        size = os.path.getsize(full)
        files.setdefault(kind_of(rel), []).append({"path": rel, "size": size, "sha256": sha256_file(full, progress=progress)})
        total += size
    body = {
        "schema": MANIFEST_SCHEMA,
        "spec": spec or {},
        "versions": versions or {},
        "images": images or [],
        "files": files,
        "totals": {"files": sum(len(v) for v in files.values()), "bytes": total},
    }
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if previous and {k: v for k, v in previous.items() if k != "created"} == body:
        created = previous.get("created", created)
    body["created"] = created
    return body


def manifest_files(manifest):
    """{path: entry} over every kind."""
    out = {}
    for entries in manifest.get("files", {}).values():
        for e in entries:
            out[e["path"]] = e
    return out


def checkpoint_manifests(manifest):
    """Per-model checkpoint manifests (the shape checkpoint_sync and model-pull read), derived from
    the bundle manifest so that nothing is hashed twice: {model: (manifest dict, digest)}."""
    models = {}
    for e in manifest.get("files", {}).get("models", []):
        parts = e["path"].split("/", 2)
        if len(parts) < 3:
            continue
        models.setdefault(parts[1], []).append({"path": parts[2], "size": e["size"], "sha256": e["sha256"]})
    out = {}
    for name, files in sorted(models.items()):
        m = {"schema": CHECKPOINT_SCHEMA, "name": name, "files": sorted(files, key=lambda x: x["path"])}
        out[name] = (m, manifest_digest(m))
    return out


def read_json(path, what):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        if e.errno == errno.ENOENT:
            raise BundleError("%s is missing from %s: is this a bundle (built by playbooks/bundle.yml)?"
                              % (what, os.path.dirname(path) or "."))
        raise BundleError("cannot read %s: %s" % (path, e))
    try:
        return data, json.loads(data.decode("utf-8"))
    except ValueError as e:
        raise BundleError("%s is not valid JSON: %s" % (what, e))


def read_bounded(path, limit, what):
    """The bytes of a regular file (opened without following a link), refused above limit bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
    except OSError as e:
        if e.errno == errno.ENOENT:
            raise BundleError("%s is missing (%s)" % (what, path))
        if e.errno == errno.ELOOP:
            raise BundleError("%s (%s) is a symbolic link: it is never followed" % (what, path))
        raise BundleError("cannot read %s (%s): %s" % (what, path, e))
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise BundleError("%s (%s) is not a regular file" % (what, path))
        data = f.read(limit + 1)
    if len(data) > limit:
        raise BundleError("%s (%s) is larger than %s, the most that is read" % (what, path, human(limit)))
    return data


def short_list(entries, fmt):
    """At most LIST_LIMIT entries formatted, then 'and N more'."""
    out = ", ".join(fmt(e) for e in entries[:LIST_LIMIT])
    if len(entries) > LIST_LIMIT:
        out += " and %d more" % (len(entries) - LIST_LIMIT)
    return out


# ---- segments ------------------------------------------------------------------------------

def _member_header(name, size):
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode, ti.mtime, ti.uname, ti.gname = size, 0o644, 0, "root", "root"
    return ti


def _header_len(name, size):
    return len(_member_header(name, size).tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))


def _padded(n):
    return (n + TAR_BLOCK - 1) // TAR_BLOCK * TAR_BLOCK


def bootstrap_file(path):
    """Whether path is one of the files llmops-verify.sh extracts for the controller's bootstrap."""
    return path == "bootstrap.sh" or path.startswith(("python/", "collections/"))


# Over several media, files up to this size (image manifests and configs, charts, apt indexes: what bundle_inspect
# and the preflight's capacity plan read) come right after the bootstrap, so that medium 1 holds them.
MEDIA_SMALL_FIRST = 16 * 1024 * 1024


def media_order(e):
    """The order of a manifest entry in a pack over several media: the controller's bootstrap, then small files
    and charts, then the rest (model shards, image layers), each group by path."""
    if bootstrap_file(e["path"]):
        return (0, e["path"])
    if e["size"] <= MEDIA_SMALL_FIRST or e["path"].startswith("charts/"):
        return (1, e["path"])
    return (2, e["path"])


def plan_segments(manifest, segment_size, bootstrap_first=False):
    """Lay the manifest's files out into segments no larger than segment_size bytes (tar
    overhead counted exactly, end-of-archive and record padding included). A file that fits in
    a segment is never split; a larger one fills the current segment and continues in parts.
    Files go in path order; with bootstrap_first (a pack over several media), in media_order: the
    controller's bootstrap files first, so that medium 1 holds what llmops-verify.sh extracts, then
    the small files bundle_inspect reads.
    Returns a list of segments, each a list of members {name, path, part, parts, offset, size}
    (part and parts are 0 for a whole file)."""
    cap = segment_size - 2 * TAR_BLOCK - TAR_RECORD
    if segment_size < 64 * 1024:
        raise BundleError("segment size %d is too small: use at least 64 KiB" % segment_size)
    files = sorted((e for entries in manifest["files"].values() for e in entries),
                   key=media_order if bootstrap_first else (lambda e: e["path"]))
    segments, cur, used = [], [], 0
    for e in files:
        need = _header_len(e["path"], e["size"]) + _padded(e["size"])
        if need <= cap:
            if need > cap - used:
                segments.append(cur)
                cur, used = [], 0
            cur.append({"name": e["path"], "path": e["path"], "part": 0, "parts": 0, "offset": 0, "size": e["size"]})
            used += need
            continue
        offset, remaining, pieces = 0, e["size"], []
        template = "%s.part-0000-of-0000" % e["path"]
        while remaining:
            hdr = _header_len(template, remaining)
            room = (cap - used - hdr) // TAR_BLOCK * TAR_BLOCK
            if room < TAR_BLOCK:
                segments.append(cur)
                cur, used = [], 0
                continue
            take = min(room, remaining)
            piece = {"path": e["path"], "offset": offset, "size": take}
            pieces.append(piece)
            cur.append(piece)
            used += hdr + _padded(take)
            offset += take
            remaining -= take
        for i, piece in enumerate(pieces):
            piece.update(part=i + 1, parts=len(pieces), name="%s.part-%04d-of-%04d" % (e["path"], i + 1, len(pieces)))
    if cur:
        segments.append(cur)
    return [s for s in segments if s]


def segment_sizes(plan):
    """The exact size in bytes of each planned segment as write_segment writes it: every member's PAX header
    and its data padded to the tar block, the two end-of-archive blocks, padded to the tar record."""
    out = []
    for members in plan:
        n = sum(_header_len(m["name"], m["size"]) + _padded(m["size"]) for m in members) + 2 * TAR_BLOCK
        out.append((n + TAR_RECORD - 1) // TAR_RECORD * TAR_RECORD)
    return out


def segment_name(i):
    return "bundle-%04d.tar" % (i + 1)


def plan_media(sizes, medium_size, tables):
    """Cut the planned segments (their exact sizes) into media of at most medium_size bytes, on segment
    boundaries, each medium also holding the signed tables (``tables`` bytes, an upper bound): the medium
    number (1-based) of each segment. A segment never spans media; a file's parts may (the import continues it
    from the next medium)."""
    media, medium, used = [], 1, tables
    for i, size in enumerate(sizes):
        if tables + size > medium_size:
            raise BundleError("medium_size %s (%d bytes) is too small: segment %s is %s and every medium also carries the signed "
                              "tables (%s). Use a larger medium_size, or a smaller segment_size"
                              % (human(medium_size), medium_size, segment_name(i), human(size), human(tables)))
        if used + size > medium_size:
            medium, used = medium + 1, tables
        media.append(medium)
        used += size
    return media


class _HashingWriter(object):
    def __init__(self, f):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def write(self, b):
        self.h.update(b)
        self.n += len(b)
        return self.f.write(b)


class _Slice(object):
    """A file object over [offset, offset+size) of a file, hashing what is read."""

    def __init__(self, f, size, progress=None):
        self.f, self.left, self.h, self.progress = f, size, hashlib.sha256(), progress

    def read(self, n=-1):
        if self.left <= 0:
            return b""
        n = self.left if n is None or n < 0 else min(n, self.left)
        b = self.f.read(n)
        if not b:
            raise BundleError("unexpected end of file")
        self.left -= len(b)
        self.h.update(b)
        if self.progress:
            self.progress(len(b))
        return b


class _Discard(object):
    def write(self, b):
        return len(b)


def _tar_members(raw, src_root, members, progress):
    hw = _HashingWriter(raw)
    with tarfile.open(fileobj=hw, mode="w|", format=tarfile.PAX_FORMAT, bufsize=CHUNK) as tar:
        for m in members:
            with open(os.path.join(src_root, m["path"]), "rb") as f:
                f.seek(m["offset"])
                sl = _Slice(f, m["size"], progress)
                tar.addfile(_member_header(m["name"], m["size"]), sl)
                m["sha256"] = sl.h.hexdigest()
    return hw.n, hw.h.hexdigest()


def hash_segment(src_root, members, progress=None):
    """What write_segment returns and fills in, without writing anything: a segment that goes on another medium."""
    return _tar_members(_Discard(), src_root, members, progress)


def write_segment(path, src_root, members, progress=None):
    """Write one standalone tar segment; fill in each member's sha256; return (size, sha256)."""
    tmp = path + ".partial"
    d, name = os.path.split(tmp)
    dfd = os.open(d or ".", os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
    try:
        raw = _create_at(dfd, name)  # a link planted on the medium is replaced, never written through
    finally:
        os.close(dfd)
    with raw:
        n, digest = _tar_members(raw, src_root, members, progress)
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(tmp, path)
    return n, digest


# ---- verification and import ---------------------------------------------------------------

def _stat_key(st):
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def fs_space(path):
    """(free bytes for an unprivileged writer, allocation unit in bytes) of the file system that holds
    ``path``, or that will hold it (the nearest existing parent when it does not exist yet)."""
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize, st.f_frsize or st.f_bsize or 1


def free_bytes(path):
    return fs_space(path)[0]


def _tar_number(field):
    if field[:1] and field[0] & 0x80:  # base-256 (GNU) for sizes beyond the octal field
        n = 0
        for b in field[1:]:
            n = (n << 8) | b
        return n
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise ValueError("not an octal number: %r" % text[:16])


def _parse_pax(data):
    out, pos = {}, 0
    while pos < len(data):
        sp = data.find(b" ", pos, pos + 20)
        if sp < 0:
            raise ValueError("a PAX record without a length")
        length = int(data[pos:sp])
        rec = data[sp + 1:pos + length]
        if length <= 0 or pos + length > len(data) or not rec.endswith(b"\n") or b"=" not in rec:
            raise ValueError("a malformed PAX record")
        key, value = rec[:-1].split(b"=", 1)
        out[key.decode("utf-8")] = value.decode("utf-8")
        pos += length
    return out


class _SegmentReader(object):
    """Reads one tar segment the way bundle_pack writes it (PAX or ustar headers, regular files),
    parsing the headers itself so that every read is bounded: a PAX header above PAX_HEADER_LIMIT,
    a GNU long name, a link or any other entry type is refused before anything large is read."""

    def __init__(self, f, name):
        self.f, self.name, self.pos = f, name, 0

    def _refuse(self, what, at):
        return BundleError("segment %s %s at byte %d: bundle_pack never writes that, so the segment was replaced or damaged. "
                           "Refusing the bundle; nothing was installed" % (self.name, what, at))

    def read(self, n):
        b = self.f.read(n)
        if len(b) != n:
            raise BundleError("segment %s ends at byte %d, inside a member: the segment is truncated or damaged. "
                              "Refusing the bundle; nothing was installed" % (self.name, self.pos + len(b)))
        self.pos += n
        return b

    def skip(self, n):
        self.f.seek(n, os.SEEK_CUR)
        self.pos += n

    def next(self):
        """(name, size) of the next regular file, or None at the end of the archive."""
        pax = {}
        while True:
            at = self.pos
            blk = self.read(TAR_BLOCK)
            if blk == b"\0" * TAR_BLOCK:
                return None
            try:
                if _tar_number(blk[148:156]) != sum(blk[:148]) + 8 * 32 + sum(blk[156:]):
                    raise ValueError("checksum")
                size = _tar_number(blk[124:136])
            except ValueError:
                raise self._refuse("has a damaged tar header", at)
            kind = blk[156:157]
            if kind == b"x":
                if size > PAX_HEADER_LIMIT:
                    raise self._refuse("holds a PAX header of %d bytes (the import reads at most %d)" % (size, PAX_HEADER_LIMIT), at)
                data = self.read(_padded(size))[:size]
                try:
                    pax.update(_parse_pax(data))
                except (ValueError, UnicodeError):
                    raise self._refuse("holds a malformed PAX header", at)
                continue
            if kind not in (b"0", b"\0"):
                raise self._refuse("holds a tar entry of type %r (only regular files and PAX headers are read)" % kind.decode("latin-1"), at)
            name = blk[:100].split(b"\0", 1)[0]
            prefix = blk[345:500].split(b"\0", 1)[0] if blk[257:263] == b"ustar\0" else b""
            if prefix:
                name = prefix + b"/" + name
            try:
                name = pax.get("path") or name.decode("utf-8")
                size = int(pax.get("size", size))
            except (ValueError, UnicodeError):
                raise self._refuse("holds a member name or size that cannot be read", at)
            return name, size


class DestDir(object):
    """The import destination, written only through folder file descriptors: each folder is opened
    with O_NOFOLLOW from its parent, new files are created with O_EXCL | O_NOFOLLOW and renamed into
    place, so a symbolic link planted anywhere in the destination is refused, never followed."""

    MAX_OPEN_DIRS = 128

    def __init__(self, root, create):
        self.root, self._dirs, self.fd = root, {}, None
        if create:
            os.makedirs(root, exist_ok=True)
        try:
            self.fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
        except FileNotFoundError:
            if create:
                raise

    def close(self):
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs = {}
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def link_error(self, rel):
        full = os.path.join(self.root, rel)
        return BundleError("%s in the destination is a symbolic link or another special file: the import writes only real "
                           "files and folders and never follows a link. Remove it (rm %s) and run the import again; nothing was "
                           "written through it" % (full, full))

    def dir(self, rel, create=False):
        """The descriptor of folder rel ('' is the root), or None when it does not exist."""
        if self.fd is None:
            return None
        if rel == "":
            return self.fd
        if rel in self._dirs:
            return self._dirs[rel]
        parent, dummy, name = rel.rpartition("/")
        pfd = self.dir(parent, create)
        if pfd is None:
            return None
        flags = os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW | _CLOEXEC
        try:
            try:
                fd = os.open(name, flags, dir_fd=pfd)
            except FileNotFoundError:
                if not create:
                    return None
                try:
                    os.mkdir(name, 0o755, dir_fd=pfd)
                except FileExistsError:
                    pass
                fd = os.open(name, flags, dir_fd=pfd)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise self.link_error(rel)
            raise
        if len(self._dirs) >= self.MAX_OPEN_DIRS:
            for old in self._dirs.values():
                os.close(old)
            self._dirs = {}
        self._dirs[rel] = fd
        return fd

    def _split(self, rel, create=False):
        parent, dummy, name = rel.rpartition("/")
        return self.dir(parent, create), name

    def lstat(self, rel):
        dfd, name = self._split(rel)
        if dfd is None:
            return None
        try:
            return os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def open_read(self, rel, limit=None):
        """A regular file of the destination opened for reading (never through a link), or None."""
        dfd, name = self._split(rel)
        if dfd is None:
            return None
        try:
            fd = os.open(name, os.O_RDONLY | _NOFOLLOW | _CLOEXEC, dir_fd=dfd)
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise self.link_error(rel)
            raise
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (limit is not None and st.st_size > limit):
            os.close(fd)
            if not stat.S_ISREG(st.st_mode):
                raise self.link_error(rel)
            return None
        return os.fdopen(fd, "rb")

    def read(self, rel, limit):
        f = self.open_read(rel, limit)
        if f is None:
            return None
        with f:
            return f.read(limit + 1)[:limit]

    def create(self, rel):
        """(file, commit, discard) for a new version of rel, written at rel.partial."""
        dfd, name = self._split(rel, create=True)
        tmp = name + ".partial"
        f = _create_at(dfd, tmp)

        def commit():
            try:
                os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            except IsADirectoryError:
                raise BundleError("%s in the destination is a folder, the bundle lists a file there: remove it and run the import "
                                  "again" % os.path.join(self.root, rel))

        def discard():
            _unlink_at(dfd, tmp)
        return f, commit, discard

    def open_partial(self, rel):
        """(file, commit, discard) for rel.partial left by an earlier run (a file whose parts continue on another
        medium), opened for reading and appending, never through a link; None when there is none."""
        dfd, name = self._split(rel)
        if dfd is None:
            return None
        tmp = name + ".partial"
        try:
            fd = os.open(tmp, os.O_RDWR | _NOFOLLOW | _CLOEXEC, dir_fd=dfd)
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise self.link_error(rel + ".partial")
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise self.link_error(rel + ".partial")

        def commit():
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)

        def discard():
            _unlink_at(dfd, tmp)
        return os.fdopen(fd, "r+b"), commit, discard

    def commit_partial(self, rel):
        """Rename rel.partial (written by create) to rel."""
        dfd, name = self._split(rel, create=True)
        os.replace(name + ".partial", name, src_dir_fd=dfd, dst_dir_fd=dfd)

    def write_atomic(self, rel, data):
        dfd, name = self._split(rel, create=True)
        write_atomic_at(dfd, name, data)

    def open_append(self, rel):
        dfd, name = self._split(rel, create=True)
        try:
            fd = os.open(name, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW | _CLOEXEC, 0o644, dir_fd=dfd)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise self.link_error(rel)
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise self.link_error(rel)
        return os.fdopen(fd, "a")

    def unlink(self, rel):
        dfd, name = self._split(rel)
        if dfd is not None:
            _unlink_at(dfd, name)

    def scan(self):
        """Every regular file under the destination (relative paths); a link or special file refused."""
        out = []
        if self.fd is None:
            return out
        for d, dirs, files in os.walk(self.root):
            rel_d = os.path.relpath(d, self.root)
            for name in dirs + files:
                rel = name if rel_d == "." else "%s/%s" % (rel_d.replace(os.sep, "/"), name)
                st = os.lstat(os.path.join(d, name))
                if stat.S_ISDIR(st.st_mode):
                    continue
                if not stat.S_ISREG(st.st_mode):
                    raise self.link_error(rel)
                out.append(rel)
        return sorted(out)


def _created(manifest):
    c = manifest.get("created") if isinstance(manifest, dict) else None
    return c if isinstance(c, str) and len(c) == 20 and c.endswith("Z") else None


class Importer(object):
    """Verify a bundle (a directory, or media with segments) against a public key and, with a
    destination, copy it there: every byte is hashed on the way and checked against the signed
    manifest. Nothing on the source is written or deleted; nothing in the destination is written
    through a link."""

    def __init__(self, src, public_key, dest=None, progress_file=None, check_mode=False, allow_downgrade=False, reverify=False):
        self.src, self.public_key, self.dest = src, public_key, dest
        self.progress_file, self.check_mode = progress_file, check_mode
        self._prog = None
        self.allow_downgrade, self.reverify = allow_downgrade, reverify
        self.copied, self.skipped, self.removed, self.bytes_copied = [], [], [], 0
        self.imported, self.previous = False, None
        self._journal_fh = None
        self.d = None
        self.delta, self.delta_sha256 = None, None
        self.held_in_place, self.moved = [], []
        # A bundle spread over several media (segments.json's media): which the source holds, which are still needed.
        self.media, self.media_here, self.media_missing, self.continued, self.parts_only = 1, [1], [], [], []
        self.seg_medium, self._parts = {}, {}

    # -- step 1: signatures and listing (nothing read beyond the control files)
    def load(self):
        if not os.path.isdir(self.src):
            raise BundleError("the bundle source %s is not a directory (mount the media, or point at the unpacked bundle)" % self.src)
        self._check_key_location()
        data, self.manifest = read_json(os.path.join(self.src, MANIFEST), MANIFEST)
        verify_signature(data, os.path.join(self.src, SIGNATURE), self.public_key, MANIFEST)
        if self.manifest.get("schema") != MANIFEST_SCHEMA:
            raise BundleError("manifest.json has schema %r, this collection reads %r" % (self.manifest.get("schema"), MANIFEST_SCHEMA))
        self.manifest_sha256 = hashlib.sha256(data).hexdigest()
        self.manifest_bytes = data
        with open(os.path.join(self.src, SIGNATURE), "rb") as f:
            self.signature_bytes = f.read(4096)
        self._check_paths()
        self.checkpoints = checkpoint_manifests(self.manifest)
        self.files = manifest_files(self.manifest)
        self.media_files = self.files  # what the source must hold: every file, or a delta's carried files
        self._load_delta()
        self.segmented = os.path.exists(os.path.join(self.src, SEGMENTS))
        if self.segmented:
            sdata, self.table = read_json(os.path.join(self.src, SEGMENTS), SEGMENTS)
            verify_signature(sdata, os.path.join(self.src, SEGMENTS_SIG), self.public_key, SEGMENTS)
            if self.table.get("manifest_sha256") != self.manifest_sha256:
                raise BundleError("segments.json belongs to another manifest (manifest sha256 %s, segments.json names %s): "
                                  "the media mixes two bundles" % (self.manifest_sha256, self.table.get("manifest_sha256")))
            if self.table.get("delta_sha256") != self.delta_sha256:
                raise BundleError("segments.json was packed for %s, but the media holds %s: the media mixes a full bundle and a "
                                  "delta. Refusing the bundle; nothing was installed"
                                  % ("a delta" if self.table.get("delta_sha256") else "the full bundle",
                                     "a delta (delta.json)" if self.delta else "no delta.json"))
            self._load_media()
            self._check_media_listing()
        else:
            self._check_dir_listing()
        return self

    def _load_delta(self):
        """A delta (delta.json next to the manifest): its signature, its binding to this manifest, and
        the carried paths (each a file of the manifest, listed once). Only those are on the source."""
        path = os.path.join(self.src, DELTA)
        if not os.path.lexists(path):
            return
        data = read_bounded(path, 2 * len(self.manifest_bytes) + 64 * 1024, DELTA)
        verify_signature(data, os.path.join(self.src, DELTA_SIG), self.public_key, DELTA)
        try:
            d = json.loads(data.decode("utf-8"))
        except ValueError as e:
            raise BundleError("delta.json is not valid JSON: %s" % e)
        if not isinstance(d, dict) or d.get("schema") != DELTA_SCHEMA:
            raise BundleError("delta.json has schema %r, this collection reads %r"
                              % (d.get("schema") if isinstance(d, dict) else None, DELTA_SCHEMA))
        if d.get("manifest_sha256") != self.manifest_sha256:
            raise BundleError("delta.json belongs to another manifest (manifest sha256 %s, delta.json names %s): the media mixes "
                              "two bundles. Refusing the bundle; nothing was installed" % (self.manifest_sha256, d.get("manifest_sha256")))
        carried = d.get("carried")
        if not isinstance(carried, list) or not all(isinstance(p, str) and p in self.files for p in carried) \
                or len(set(carried)) != len(carried):
            raise BundleError("the signed delta.json is unusable: its 'carried' must list files of the signed manifest, each once. "
                              "Refusing the bundle; nothing was installed")
        self.delta, self.delta_sha256 = d, hashlib.sha256(data).hexdigest()
        self.media_files = {p: self.files[p] for p in carried}

    def _check_key_location(self):
        key = os.path.realpath(self.public_key)
        for where, d in (("the bundle", self.src), ("the import destination", self.dest)):
            if d and key.startswith(os.path.realpath(d).rstrip(os.sep) + os.sep):
                raise BundleError("the public key %s lies inside %s (%s): a key that travels with the bundle proves nothing, whoever "
                                  "changed the bundle could change the key too. Bring the site's public key out of band (a second "
                                  "medium, checked against a printed fingerprint), keep it outside the bundle and the destination, "
                                  "and pass that file. Nothing was installed" % (self.public_key, where, d))

    def _check_paths(self):
        files = self.manifest.get("files")
        bad = None
        if not isinstance(files, dict) or not all(isinstance(v, list) for v in files.values()):
            bad = "its 'files' is not a table of lists"
        else:
            entries = [e for v in files.values() for e in v]
            for e in entries:
                if not (isinstance(e, dict) and isinstance(e.get("size"), int) and e["size"] >= 0 and isinstance(e.get("sha256"), str)):
                    bad = "the entry %r has no valid size or sha256" % (e,)
                    break
            if bad is None:
                why = paths_problem([e.get("path") for e in entries])
                if why is None:
                    top = [e["path"] for e in entries if e["path"] in ROOT_CONTROL or e["path"].split("/", 1)[0] == IMPORT_DIR]
                    why = ("%r is a name the import keeps for itself" % top[0]) if top else None
                bad = ("the path %s" % why) if why else None
        if bad:
            raise BundleError("the signed manifest.json is unusable: %s. Every path must be relative, with plain names only "
                              "(no '..', '.', empty or absolute parts), and listed once. Refusing the bundle; nothing was installed" % bad)

    def _check_dir_listing(self):
        present = walk_files(self.src, skip_root=ROOT_CONTROL)
        unlisted = [p for p in present if p not in self.media_files]
        if unlisted:
            raise BundleError("unlisted file %s: it is not in the signed %s. Refusing the bundle; nothing was installed"
                              % (unlisted[0], "delta.json's carried files" if self.delta else "manifest"))
        missing = sorted(set(self.media_files) - set(present))
        if missing:
            raise BundleError("missing file %s (listed in the signed %s, %s). Refusing the bundle; nothing was installed"
                              % (missing[0], "delta.json" if self.delta else "manifest", human(self.files[missing[0]]["size"])))
        for path in sorted(self.media_files):
            self._check_size(path, os.lstat(os.path.join(self.src, path)).st_size, self.files[path]["size"], "the signed manifest")

    def _check_size(self, name, got, want, where):
        if got != want:
            raise BundleError("%s is %d bytes on the media, %s says %d: the file was replaced or damaged. "
                              "Refusing the bundle; nothing was installed" % (name, got, where, want))

    def _load_media(self):
        """Which medium holds each segment (segments.json's media and each segment's medium; a table without them
        is one medium), and which media the source holds: those with at least one of their segments there."""
        segs = self.table.get("segments")
        media = self.table.get("media", 1)
        if not isinstance(segs, list) or not isinstance(media, int) or media < 1 or not all(
                isinstance(s, dict) and isinstance(s.get("medium", 1), int) and 1 <= s.get("medium", 1) <= media for s in segs):
            raise BundleError("the signed segments.json is unusable: its media and each segment's medium must be numbers from 1 to "
                              "its media count. Refusing the bundle; nothing was installed")
        self.media = media
        self.seg_medium = {s["name"]: s.get("medium", 1) for s in segs}
        for s in segs:
            for m in s["members"]:
                self._parts.setdefault(m["path"], []).append((s.get("medium", 1), m))
        if media == 1:
            return
        here = sorted(set(self.seg_medium[s["name"]] for s in segs if os.path.lexists(os.path.join(self.src, s["name"]))))
        if not here:
            raise BundleError("%s holds none of the segments of bundle %s, which is spread over %d media: mount one of its media "
                              "there. Refusing the bundle; nothing was installed" % (self.src, self.manifest_sha256[:16], media))
        self.media_here = here

    def _check_media_listing(self):
        segs = self.table.get("segments", [])
        names = [s["name"] for s in segs]
        present = walk_files(self.src, skip_root=MEDIA_FILES)
        unlisted = [p for p in present if p not in names]
        if unlisted:
            raise BundleError("unlisted file %s on the media: it is not in the signed segments.json. "
                              "Refusing the bundle; nothing was installed" % unlisted[0])
        for s in segs:
            if self.seg_medium[s["name"]] not in self.media_here:
                continue
            p = os.path.join(self.src, s["name"])
            if not os.path.lexists(p):
                if self.media > 1:
                    raise BundleError("missing segment %s (%d of %d, %s) of medium %d of %d: copy it onto the medium. Refusing the "
                                      "bundle; nothing was installed" % (s["name"], names.index(s["name"]) + 1, len(names),
                                                                         human(s["size"]), self.seg_medium[s["name"]], self.media))
                raise BundleError("missing segment %s (%d of %d, %s): copy it onto the media. Refusing the bundle; nothing was installed"
                                  % (s["name"], names.index(s["name"]) + 1, len(names), human(s["size"])))
            size = os.lstat(p).st_size
            if size < s["size"]:
                raise BundleError("segment %s is truncated: %d bytes on the media, segments.json says %d. "
                                  "Refusing the bundle; nothing was installed" % (s["name"], size, s["size"]))
            self._check_size("segment " + s["name"], size, s["size"], "segments.json")
        members = {}
        for s in segs:
            for m in s["members"]:
                members.setdefault(m["path"], []).append(m)
        for path, e in self.media_files.items():
            got = sum(m["size"] for m in members.get(path, []))
            if got != e["size"]:
                raise BundleError("missing file %s: the segments hold %d of its %d bytes" % (path, got, e["size"]))
        extra = sorted(set(members) - set(self.media_files))
        if extra:
            raise BundleError("unlisted file %s inside the segments: it is not in the signed manifest" % extra[0])

    # -- step 2: what is already in place
    STATE = IMPORT_DIR + "/state.json"
    JOURNAL = IMPORT_DIR + "/state.journal"
    DONE = IMPORT_DIR + "/manifest.json"
    RECORD = IMPORT_DIR + "/" + IMPORTED

    def _load_state(self):
        """Per-file records of what earlier runs verified in dest, whatever bundle they came from:
        a new bundle (an upgrade) then copies only the files whose sha256 changed. state.json is
        the snapshot a finished run leaves; state.journal holds one JSON line per file verified
        since (an interrupted run), and a torn last line is ignored: that file is copied again.
        A state larger than the bundle could explain is ignored (every file is then checked again)."""
        limit = 4096 * (len(self.files) + 16)
        files = {}
        try:
            files = json.loads((self.d.read(self.STATE, limit) or b"{}").decode("utf-8")).get("files", {})
            if not isinstance(files, dict):
                files = {}
        except (ValueError, AttributeError):
            files = {}
        f = self.d.open_read(self.JOURNAL, limit)
        if f is not None:
            with f:
                for line in f:
                    try:
                        rec = json.loads(line)
                        files[rec["path"]] = {"sha256": rec["sha256"], "stat": rec["stat"]}
                    except (ValueError, KeyError, TypeError):
                        break
        return files

    def _journal(self, path, rec):
        """Record one verified file: one appended line, so an import of n files writes O(n)."""
        if self._journal_fh is None:
            self._journal_fh = self.d.open_append(self.JOURNAL)
        self._journal_fh.write(json.dumps(dict(rec, path=path), sort_keys=True) + "\n")
        self._journal_fh.flush()

    def _close_journal(self):
        if self._journal_fh is not None:
            self._journal_fh.close()
            self._journal_fh = None

    def _save_state(self, done):
        """The snapshot of a finished run (the journal is closed by then); the journal it folds in is removed."""
        self.d.write_atomic(self.STATE, json.dumps({"manifest_sha256": self.manifest_sha256, "files": done}).encode())
        self.d.unlink(self.JOURNAL)

    def _in_place(self, state):
        """Files already verified in dest by an earlier (maybe interrupted) run: the record of
        the sha256 we verified while writing, a regular file of the signed size, and size, mtime
        and inode unchanged since. With reverify, every file of the right size is hashed again instead."""
        ok = {}
        for path, e in self.files.items():
            rec = state.get(path)
            if not self.reverify and (not isinstance(rec, dict) or rec.get("sha256") != e["sha256"]):
                continue
            st = self.d.lstat(path)
            if st is None or not stat.S_ISREG(st.st_mode) or st.st_size != e["size"]:
                continue
            if self.reverify:
                f = self.d.open_read(path)
                if f is None:
                    continue
                with f:
                    got = _hash_exactly(f, e["size"])
                if got == e["sha256"]:
                    ok[path] = {"sha256": got, "stat": _stat_key(st)}
            elif _stat_key(st) == rec.get("stat"):
                ok[path] = rec
        return ok

    def done_marker(self):
        return os.path.join(self.dest, self.DONE)

    def already_imported(self):
        data = self.d.read(self.DONE, len(self.manifest_bytes))
        return data is not None and hashlib.sha256(data).hexdigest() == self.manifest_sha256

    def _check_rollback(self):
        """Refuse a bundle older than the one the destination last imported (a validly signed old
        bundle would put back files the newer one replaced), unless a downgrade is allowed."""
        prev = None
        try:
            prev = json.loads((self.d.read(self.RECORD, 64 * 1024) or b"null").decode("utf-8"))
        except ValueError:
            prev = None
        if not isinstance(prev, dict):
            try:
                m = json.loads((self.d.read(self.DONE, 64 * 1024 * 1024) or b"null").decode("utf-8"))
                if isinstance(m, dict):
                    prev = {"manifest_sha256": None, "created": _created(m)}
            except ValueError:
                prev = None
        if not isinstance(prev, dict):
            return
        self.previous = prev
        if prev.get("manifest_sha256") == self.manifest_sha256:
            return
        old, new = prev.get("created"), _created(self.manifest)
        if old and new and new >= old:
            return
        if not old:
            return
        if self.allow_downgrade:
            return
        raise BundleError("downgrade refused: %s last imported bundle %s, created %s; this bundle %s was created %s, which is "
                          "older. Importing it would put back files the newer bundle replaced (a rollback). If going back is "
                          "intended, set bundle_import_allow_downgrade: true in the inventory (module option allow_downgrade) "
                          "and run again. Nothing was installed"
                          % (self.dest, (prev.get("manifest_sha256") or "(unknown id)")[:16], old, self.manifest_sha256[:16],
                             new or "(no creation time)"))

    # -- step 3: copy and verify
    def run(self):
        self.load()
        if not self.dest:
            here = sum(e["size"] for k, e in (x for v in self._parts.values() for x in v) if k in self.media_here) \
                if self.segmented else sum(e["size"] for e in self.media_files.values())
            self._prog = ProgressWriter(self.progress_file, "bundle_verify", self.src, phase="verify",
                                        bytes_total=here, files_total=len(self.media_files))
            try:
                with self._prog:
                    if self.segmented:
                        self._run_segments({}, self._prog)
                    else:
                        self._run_dir({}, self._prog)
                    self._prog.done()
            finally:
                self._close_journal()
            self.media_missing = self._media_missing({})
            return self.result(changed=False)
        self.d = DestDir(self.dest, create=False)
        try:
            return self._import()
        finally:
            self._close_journal()
            self.d.close()

    def _import(self):
        todo = plan_import(self.files, self.media_files, self.delta, self.gather())
        self.skipped = todo["skip"]
        if todo["noop"]:
            self.imported = True
            return self.result(changed=False)
        if self.check_mode:
            # The plan only: signatures, listing and sizes are checked; no byte is read or written.
            self.copied, self.bytes_copied = todo["copy"], todo["copy_bytes"]
            self.moved, self.held_in_place, self.removed = todo["move"], todo["held_in_place"], todo["remove"]
            self.media_missing = [k for k in self._media_missing(todo["in_place"]) if k not in self.media_here]
            return self.result(changed=True)
        return self.apply(todo)

    def gather(self):
        """What plan_import() reads of the destination, read-only: its files (refusing a link anywhere in it), the
        earlier imports' records (refusing a rollback or another bundle's unfinished import over several media),
        the files already verified there, and, for a delta, the destination files that may hold each file it does
        not carry (its own path first)."""
        present = self.d.scan()  # refuses a link anywhere in the destination before anything is written
        self._check_rollback()
        self._check_media_record()
        state = {} if self.reverify else self._load_state()
        facts = dict(dest=self.dest, present=present, was_imported=self.already_imported(),
                     in_place=self._in_place(state), free=free_bytes(self.dest), held_candidates=None,
                     last_import=(self.previous or {}).get("manifest_sha256"))
        if self.delta is not None:
            facts["held_candidates"] = self._held_candidates(
                {p: e for p, e in self.files.items() if p not in self.media_files})
        return facts

    def apply(self, todo):
        """Carry out plan_import()'s plan: verify the held files (refusing before anything is written), copy inside
        the destination, copy and verify what the plan copies, then record the import (or, when other media are still
        to come, what is verified so far) and remove what the plan removes."""
        held, sources = todo["held"], todo["sources"]
        held_bytes = sum(e["size"] for e in held.values())
        prog = self._prog = ProgressWriter(self.progress_file, "bundle_import", "%s -> %s" % (self.src, self.dest),
                                           bytes_total=todo["copy_bytes"] + held_bytes + todo["move_bytes"],
                                           files_total=len(todo["copy"]) + len(held))
        done = dict(todo["in_place"])
        with prog:
            moves = {}
            if held:
                prog.set_phase("verify-held")
                verified, moves = self._verify_held(held, sources, prog)  # refuses before anything is written
                done.update(verified)
                prog.set_phase("copy")
            self.d.close()
            self.d = DestDir(self.dest, create=True)
            self.d.dir(IMPORT_DIR, create=True)
            self._run_moves(moves, done, prog)
            if self.segmented:
                self._run_segments(done, prog)
            else:
                self._run_dir(done, prog)
            self._close_journal()
            prog.done()
        self.media_missing = self._media_missing(done)
        if self.media_missing:  # the other media still to come: what is verified is recorded, nothing counts as imported
            self._save_state(done)
            self.d.write_atomic(self.MEDIA_RECORD, json.dumps({
                "manifest_sha256": self.manifest_sha256, "created": _created(self.manifest), "media": self.media,
                "media_missing": self.media_missing}, sort_keys=True).encode() + b"\n")
            return self.result(changed=True)
        self._save_state(done)
        for name, (m, digest) in self.checkpoints.items():
            self.d.write_atomic("%s/checkpoints/%s.json" % (IMPORT_DIR, name), canonical_bytes(m))
        self.d.write_atomic(MANIFEST, self.manifest_bytes)
        self.d.write_atomic(SIGNATURE, self.signature_bytes)
        self._remove_stale()
        self.d.write_atomic(self.RECORD, json.dumps({"manifest_sha256": self.manifest_sha256, "created": _created(self.manifest)},
                                                    sort_keys=True).encode() + b"\n")
        self.d.write_atomic(self.DONE, self.manifest_bytes)
        self.d.unlink(self.MEDIA_RECORD)
        self.imported = True
        return self.result(changed=bool(self.copied) or bool(self.moved) or bool(self.removed) or not todo["was_imported"])

    def _held_hints(self):
        """{sha256: [paths]} of what the destination says it holds: the last finished import's manifest
        and the resume records (later records win for a path). Only hints: every file is hashed before use."""
        hints, at = {}, {}
        try:
            prev = json.loads((self.d.read(self.DONE, MANIFEST_LIMIT) or b"{}").decode("utf-8"))
            listed = [(e["path"], e["sha256"]) for e in manifest_files(prev).values()]
        except (ValueError, KeyError, TypeError, AttributeError):
            listed = []
        try:
            state = json.loads((self.d.read(self.STATE, MANIFEST_LIMIT) or b"{}").decode("utf-8")).get("files", {})
            listed += [(path, rec["sha256"]) for path, rec in state.items()]
        except (ValueError, KeyError, TypeError, AttributeError):
            pass
        for path, digest in listed:
            if isinstance(path, str) and isinstance(digest, str) and path_problem(path) is None \
                    and path.split("/", 1)[0] not in ROOT_CONTROL:
                at[path] = digest
        for path, digest in sorted(at.items()):
            hints.setdefault(digest, []).append(path)
        return hints

    def _held_candidates(self, held):
        """For each file the delta does not carry, the destination files of its signed size that may hold it (its
        own path first when the destination says it holds this content there; an empty list when none does)."""
        hints = self._held_hints()
        out = {}
        for p, e in sorted(held.items()):
            cands = []
            said = hints.get(e["sha256"], [])
            for q in ([p] if p in said else []) + [x for x in said if x != p] + ([] if p in said else [p]):
                st = self.d.lstat(q) if q not in cands else None
                if st is not None and stat.S_ISREG(st.st_mode) and st.st_size == e["size"]:
                    cands.append(q)
            out[p] = cands
        return out

    def _verify_held(self, held, sources, prog):
        """Hash each held file (bounded by its signed size, never through a link) against the new signed
        manifest: ({path: record} verified in place, {path: source path} to copy inside the destination).
        Refuses, with every file that differs, before anything is written."""
        verified, moves, bad = {}, {}, []
        for p in sorted(sources):
            e, found, got = held[p], None, None
            for q in sources[p]:
                f = self.d.open_read(q)
                if f is None:
                    continue
                with f:
                    st = os.fstat(f.fileno())
                    if st.st_size != e["size"]:
                        continue
                    try:
                        got = _hash_exactly(f, e["size"], None, prog, q)
                    except BundleError:
                        continue
                if got == e["sha256"]:
                    found = (q, st)
                    break
            if found is None:
                bad.append((p, got))
            elif found[0] == p:
                verified[p] = {"sha256": e["sha256"], "stat": _stat_key(found[1])}
                self.held_in_place.append(p)
            else:
                moves[p] = found[0]
            prog.file_done()
        if bad:
            raise BundleError(
                "delta refused: %d file(s) the delta does not carry differ in %s from the signed manifest: %s. The site's copy "
                "was changed or damaged after it was imported, and the delta cannot replace it: import the full bundle. "
                "Nothing was written"
                % (len(bad), self.dest, short_list(bad, lambda b: "%s (the manifest says sha256 %s, the site holds %s)"
                                                   % (b[0], held[b[0]]["sha256"], b[1] or "a file that could not be read"))))
        return verified, moves

    def _run_moves(self, moves, done, prog):
        """Copy held content from another path of the destination, hashing on the way: every copy is
        written as a .partial first and renamed only when all verified (two paths may swap contents)."""
        written = []
        for p, q in sorted(moves.items()):
            e = self.files[p]
            f = self.d.open_read(q)
            if f is None:
                raise BundleError("%s vanished from %s during the import. Nothing was installed" % (q, self.dest))
            out = self.d.create(p)
            try:
                with f:
                    got = _hash_exactly(f, e["size"], out[0], prog, q)
                if got != e["sha256"]:
                    raise BundleError("sha256 mismatch for %s (taken from %s in %s): it changed during the import. Nothing was "
                                      "installed" % (p, q, self.dest))
                out[0].flush()
                os.fsync(out[0].fileno())
                st = os.fstat(out[0].fileno())
            except BaseException:
                out[0].close()
                out[2]()
                raise
            out[0].close()
            written.append((p, st))
        for p, st in written:
            self.d.commit_partial(p)
            done[p] = {"sha256": self.files[p]["sha256"], "stat": _stat_key(st)}
            self.moved.append(p)
            self._journal(p, done[p])

    def _remove_stale(self):
        """Files an earlier bundle left in dest that this one does not list (dest is ours alone)."""
        for rel in self.d.scan():
            if _stale(rel, self.files):
                self.d.unlink(rel)
                self.removed.append(rel)

    def _open_dest(self, path):
        return self.d.create(path) if self._writing() else None

    def _finish_file(self, path, got, out, done):
        e = self.files[path]
        if got != e["sha256"]:
            if out is not None:
                out[0].close()
                out[2]()
            raise BundleError("sha256 mismatch for %s: the signed manifest says %s, the media holds %s. The media is damaged "
                              "or was tampered with; refusing the bundle, nothing was installed" % (path, e["sha256"], got))
        if out is not None:
            f, commit, dummy = out
            f.flush()
            os.fsync(f.fileno())
            st = os.fstat(f.fileno())
            f.close()
            commit()
            done[path] = {"sha256": got, "stat": _stat_key(st)}
            self.copied.append(path)
            self.bytes_copied += e["size"]
            self._journal(path, done[path])
        elif self.dest:
            self.copied.append(path)
            self.bytes_copied += e["size"]
        if self._prog is not None:
            self._prog.file_done()

    def _writing(self):
        return bool(self.dest) and not self.check_mode

    def _run_dir(self, done, prog):
        for path in sorted(self.media_files):
            if path in done:
                continue
            size = self.files[path]["size"]
            try:
                fd = os.open(os.path.join(self.src, path), os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
            except OSError as e:
                raise BundleError("cannot read %s from the media (%s): was it replaced by a link or removed? Refusing the bundle; "
                                  "nothing was installed" % (path, e))
            with os.fdopen(fd, "rb") as f:
                st = os.fstat(f.fileno())
                if not stat.S_ISREG(st.st_mode):
                    raise BundleError("%s on the media is not a regular file. Refusing the bundle; nothing was installed" % path)
                self._check_size(path, st.st_size, size, "the signed manifest")
                out = self._open_dest(path)
                h = _hash_exactly(f, size, out[0] if out else None, prog, path)
            self._finish_file(path, h, out, done)

    def _continue(self, path, m):
        """(dest triple, hasher) to go on with a file whose earlier parts lie on another medium: the partial file an
        earlier run left in dest, each of its parts hashed again against segments.json (it may have changed since),
        positioned at its end. (None, None) when there is none to continue (verify only, no partial, or one that does not
        match: it is removed, and the earlier medium is asked for again); this part is then only verified."""
        if not self._writing():
            return None, None
        out = self.d.open_partial(path)
        if out is None:
            return None, None
        f = out[0]
        whole = hashlib.sha256()
        ok = os.fstat(f.fileno()).st_size == m["offset"]
        for dummy, e in sorted(self._parts[path], key=lambda x: x[1]["part"]):
            if not ok or e["offset"] >= m["offset"]:
                break
            part_h, left = hashlib.sha256(), e["size"]
            while left:
                chunk = f.read(min(CHUNK, left))
                if not chunk:
                    break
                left -= len(chunk)
                part_h.update(chunk)
                whole.update(chunk)
            ok = not left and part_h.hexdigest() == e["sha256"]
        if not ok:
            f.close()
            out[2]()
            return None, None
        f.seek(0, os.SEEK_END)
        return out, whole

    def _run_segments(self, done, prog):
        open_file = {}  # path -> (dest triple or None, hasher or None) while its parts arrive
        for s in self.table["segments"]:
            if self.seg_medium.get(s["name"], 1) not in self.media_here:
                continue
            expected = {m["name"]: m for m in s["members"]}
            seen = []
            try:
                fd = os.open(os.path.join(self.src, s["name"]), os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
            except OSError as e:
                raise BundleError("segment %s cannot be read (%s): the media is damaged" % (s["name"], e))
            with os.fdopen(fd, "rb", buffering=CHUNK) as f:
                self._check_size("segment " + s["name"], os.fstat(f.fileno()).st_size, s["size"], "segments.json")
                tar = _SegmentReader(f, s["name"])
                while True:
                    try:
                        nxt = tar.next()
                    except OSError as e:
                        raise BundleError("segment %s is damaged after %d members (%s)" % (s["name"], len(seen), e))
                    if nxt is None:
                        break
                    name, size = nxt
                    m = expected.get(name)
                    if m is None or size != m["size"] or name in seen:
                        raise BundleError("segment %s holds %s, which segments.json does not list (or with another size)"
                                          % (s["name"], name))
                    seen.append(name)
                    path = m["path"]
                    if path in done:
                        tar.skip(_padded(size))
                        continue
                    if m["part"] <= 1:
                        open_file[path] = (self._open_dest(path), hashlib.sha256())
                    elif path not in open_file:
                        before = [k for k, e in self._parts[path] if e["part"] == m["part"] - 1]
                        if not before or before[0] in self.media_here:
                            raise BundleError("segment %s starts in the middle of %s: an earlier segment is missing or out of order"
                                              % (s["name"], path))
                        open_file[path] = self._continue(path, m)  # its earlier parts are on another medium
                    out, whole = open_file[path]
                    part_h = hashlib.sha256()
                    left = size
                    try:
                        while left:
                            b = tar.read(min(CHUNK, left))
                            left -= len(b)
                            part_h.update(b)
                            if whole is not None:
                                whole.update(b)
                            if out is not None:
                                out[0].write(b)
                            prog(len(b))
                        tar.read(_padded(size) - size)
                    except OSError as e:
                        raise BundleError("segment %s is damaged in %s (%s)" % (s["name"], name, e))
                    if part_h.hexdigest() != m["sha256"]:
                        if out is not None:
                            out[0].close()
                            out[2]()
                        raise BundleError("sha256 mismatch for %s in segment %s: segments.json says %s, the media holds %s. "
                                          "Refusing the bundle; nothing was installed" % (name, s["name"], m["sha256"], part_h.hexdigest()))
                    if m["part"] == m["parts"]:
                        del open_file[path]
                        if whole is None:  # its earlier parts are on a medium not here (or to import again)
                            self.parts_only.append(path)
                        else:
                            self._finish_file(path, whole.hexdigest(), out, done)
            missing = [n for n in expected if n not in seen]
            if missing:
                raise BundleError("segment %s lacks %s: the segment is truncated or damaged" % (s["name"], missing[0]))
        for path, (out, whole) in sorted(open_file.items()):  # continued on a later medium: kept as path.partial
            if whole is None:
                self.parts_only.append(path)
            if out is not None:
                out[0].flush()
                os.fsync(out[0].fileno())
                out[0].close()
                self.continued.append(path)

    def _media_missing(self, done):
        """The media still needed: without dest, those not here; with it, those that hold a part of a file not yet
        verified in dest, past what its partial file (left by an earlier medium) holds."""
        if self.media == 1:
            return []
        if not self.dest:
            return sorted(set(range(1, self.media + 1)) - set(self.media_here))
        need = set()
        for path in self.media_files:
            if path in done:
                continue
            st = self.d.lstat(path + ".partial") if self._parts.get(path) else None
            held = st.st_size if st is not None and stat.S_ISREG(st.st_mode) else 0
            if held not in [e["offset"] for dummy, e in self._parts.get(path, [])]:
                held = 0
            need.update(k for k, e in self._parts.get(path, []) if e["offset"] + e["size"] > held)
        return sorted(need)

    MEDIA_RECORD = IMPORT_DIR + "/media.json"

    def _check_media_record(self):
        """Refuse, before anything is written, a bundle other than the one whose import over several media is under way."""
        try:
            rec = json.loads((self.d.read(self.MEDIA_RECORD, 64 * 1024) or b"null").decode("utf-8"))
        except ValueError:
            rec = None
        if not isinstance(rec, dict) or rec.get("manifest_sha256") == self.manifest_sha256:
            return
        raise BundleError(
            "%s is in the middle of importing bundle %s (created %s, spread over %s media, still needing medium %s); %s holds "
            "medium %s of another bundle, %s (created %s). Insert the next medium of bundle %s, or, to give that import up, "
            "remove %s and run again. Nothing was written"
            % (self.dest, str(rec.get("manifest_sha256"))[:16], rec.get("created"), rec.get("media"),
               ", ".join(str(x) for x in rec.get("media_missing") or []) or "?", self.src,
               ", ".join(str(x) for x in self.media_here), self.manifest_sha256[:16], self.manifest.get("created"),
               str(rec.get("manifest_sha256"))[:16], os.path.join(self.dest, self.MEDIA_RECORD)))

    def media_message(self):
        if self.media == 1:
            return None

        def nums(xs):
            return ("medium " if len(xs) == 1 else "media ") + ", ".join(str(x) for x in xs)
        if not self.media_missing:
            return "all %d media %s" % (self.media, "imported" if self.imported else "verified")
        if not self.dest:
            return ("%s of %d verified (every segment there, every part against the signed sha256); %s hold%s the rest of "
                    "the bundle: verify %s too" % (nums(self.media_here), self.media, nums(self.media_missing),
                                                   "s" if len(self.media_missing) == 1 else "", "it" if len(self.media_missing) == 1 else "them"))
        return ("%s of %d %s into %s; insert medium %d of %d at %s and run the import again (still needed: %s)"
                % (nums(self.media_here), self.media, "checked (check mode)" if self.check_mode else "imported", self.dest,
                   self.media_missing[0], self.media, self.src, nums(self.media_missing)))

    def result(self, changed):
        kinds = {k: {"files": len(v), "bytes": sum(e["size"] for e in v)} for k, v in self.manifest["files"].items()}
        prev = self.previous or {}
        return {
            "changed": changed,
            "imported": self.imported,
            "check_mode_plan": bool(self.dest) and self.check_mode and not self.imported,
            "manifest_sha256": self.manifest_sha256,
            "created": self.manifest.get("created"),
            "previous": {"manifest_sha256": prev.get("manifest_sha256"), "created": prev.get("created")} if prev else None,
            "versions": self.manifest.get("versions", {}),
            "images": self.manifest.get("images", []),
            "kinds": kinds,
            "files_total": len(self.files),
            "bytes_total": self.manifest["totals"]["bytes"],
            "files_copied": len(self.copied),
            "files_skipped": len(self.skipped),
            "files_removed": self.removed,
            "bytes_copied": self.bytes_copied,
            "segmented": self.segmented,
            "media": self.media,
            "media_here": self.media_here,
            "media_missing": self.media_missing,
            "media_message": self.media_message(),
            "delta": None if self.delta is None else {
                "base": self.delta.get("base"), "carried": len(self.media_files),
                "carried_bytes": sum(e["size"] for e in self.media_files.values()),
                "held": len(self.files) - len(self.media_files), "held_in_place": len(self.held_in_place),
                "moved": sorted(self.moved)},
            "checkpoints": {n: {"digest": d, "manifest": os.path.join(self.dest, IMPORT_DIR, "checkpoints", n + ".json") if self.dest else None}
                            for n, (m, d) in self.checkpoints.items()},
        }


def _stale(rel, files):
    """A destination file an earlier bundle left that this one (``files``: its manifest's) does not list."""
    return rel not in files and rel not in (MANIFEST, SIGNATURE) and rel.split("/", 1)[0] != IMPORT_DIR


def _base_names(delta):
    base = delta.get("base")
    bundles = base.get("bundles") if isinstance(base, dict) else None
    names = ["bundle %s (%s, created %s)" % (str(b.get("id"))[:16], b.get("name") or "unnamed", b.get("created") or "?")
             for b in (bundles or []) if isinstance(b, dict)]
    return ", ".join(names) or "(none named)"


def plan_import(files, media_files, delta, facts):
    """What an import does, from the signed listing and Importer.gather()'s facts alone (no I/O).

    files: the manifest's {path: entry}; media_files: those the source holds (a delta's carried files, else all);
    delta: the signed delta.json or None; facts: dest, present (its files), was_imported, in_place ({path: record}
    of files verified there), free (bytes), held_candidates ({path: [destination paths of its size]} for a delta's
    held files, else None), last_import (the last finished import's manifest sha256 or None).

    Returns dict(noop, skip, in_place, copy, copy_bytes, held, sources, move, held_in_place, move_bytes, remove,
    was_imported): noop when the bundle is imported and every file is in place; copy the files to copy from the
    source; held the files a delta takes from the destination, sources their candidates (in order), move those whose
    first candidate is another path (copied inside the destination), held_in_place the others; remove the destination
    files this bundle does not list. Check mode reports it; Importer.apply() carries it out. Raises BundleError (the
    refusals that need no byte read: a delta's held file the destination lacks, not enough space)."""
    dest, in_place = facts["dest"], dict(facts["in_place"])
    was_imported = facts["was_imported"]
    out = dict(noop=False, skip=sorted(in_place), in_place=in_place, copy=[], copy_bytes=0, held={}, sources={}, move=[],
               held_in_place=[], move_bytes=0, remove=[], was_imported=was_imported)
    if was_imported and len(in_place) == len(files):
        out["noop"] = True
        return out
    held, sources = {}, {}
    if delta is not None:
        # A delta: the files it does not carry come from what the destination holds, each hashed
        # against the new signed manifest before the import counts as done (not trusted by record).
        held = {p: e for p, e in files.items() if p not in media_files}
        in_place = {p: r for p, r in in_place.items() if p not in held}
        candidates = facts["held_candidates"] or {}
        sources = {p: candidates[p] for p in sorted(held) if candidates.get(p)}
        missing = [p for p in sorted(held) if not candidates.get(p)]
        if missing:
            last = facts.get("last_import")
            raise BundleError(
                "delta refused: this delta carries %d of the bundle's %d files and takes the other %d from what the site holds; "
                "its base is %s. %s (last import: %s) lacks %d of them: %s. Import the full bundle, or write this site's receipt "
                "(playbooks/receipt.yml) and build a delta from it. Nothing was written"
                % (len(media_files), len(files), len(held), _base_names(delta), dest,
                   ("bundle " + last[:16]) if last else "none finished", len(missing),
                   short_list(missing, lambda p: "%s (sha256 %s, %s)" % (p, held[p]["sha256"], human(held[p]["size"])))))
    copy = [p for p in media_files if p not in in_place]
    copy_bytes = sum(files[p]["size"] for p in copy)
    move_bytes = sum(held[p]["size"] for p, cands in sources.items() if cands[0] != p)
    if copy_bytes + move_bytes > facts["free"]:
        raise BundleError("not enough space in %s: the import needs %s (%d bytes), the file system has %s free. "
                          "Free space or choose another destination; nothing was installed"
                          % (dest, human(copy_bytes + move_bytes), copy_bytes + move_bytes, human(facts["free"])))
    out.update(skip=sorted(in_place), in_place=in_place, copy=sorted(copy), copy_bytes=copy_bytes, held=held,
               sources=sources, move=sorted(p for p, cands in sources.items() if cands[0] != p),
               held_in_place=sorted(p for p, cands in sources.items() if cands[0] == p), move_bytes=move_bytes,
               remove=[p for p in facts["present"] if _stale(p, files)])
    return out


def _hash_exactly(f, size, out=None, progress=None, name=None):
    """sha256 of exactly `size` bytes of f (never reading past them), copied to out on the way.

    Not _files.sha256_fileobj: f is often a tar segment read as a stream, where the byte after `size` is the next
    member's (sha256_fileobj reads one byte more to prove a file's end), and the bytes are copied as they go."""
    h, left = hashlib.sha256(), size
    while left:
        b = f.read(min(CHUNK, left))
        if not b:
            raise BundleError("%s ended after %d of its %d bytes while it was read. Refusing the bundle; nothing was installed"
                              % (name or "a file", size - left, size))
        left -= len(b)
        h.update(b)
        if out is not None:
            out.write(b)
        if progress:
            progress(len(b))
    return h.hexdigest()
