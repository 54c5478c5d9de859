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
import shutil
import tarfile
import time

MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.sig"
SEGMENTS = "segments.json"
SEGMENTS_SIG = "segments.json.sig"
MANIFEST_SCHEMA = "llmops.onprem/bundle-manifest/v1"
SEGMENTS_SCHEMA = "llmops.onprem/bundle-segments/v1"
CHECKPOINT_SCHEMA = "llmops.onprem/checkpoint-manifest/v1"
IMPORT_DIR = ".llmops-import"
KINDS = ("images", "charts", "packages", "binaries", "python", "collections", "models")
CHUNK = 8 * 1024 * 1024
TAR_BLOCK = 512
TAR_RECORD = 20 * TAR_BLOCK
# What the bundle's own root may hold besides the listed files.
ROOT_CONTROL = (MANIFEST, SIGNATURE, IMPORT_DIR)
MEDIA_CONTROL = (MANIFEST, SIGNATURE, SEGMENTS, SEGMENTS_SIG)
# The site's first step, written next to the segments as well as listed in the manifest (the site
# checks it against the signed manifest before running it): allowed on the media, not a segment.
VERIFY_SCRIPT = "llmops-verify.sh"
MEDIA_FILES = MEDIA_CONTROL + (VERIFY_SCRIPT,)
# Test hook, named plainly: the import kills itself (SIGKILL) after copying this many files,
# so the tests can prove that a killed import resumes. Never set it outside tests.
KILL_AFTER_FILES_ENV = "LLMOPS_TEST_KILL_IMPORT_AFTER_FILES"


class BundleError(Exception):
    """A refusal: the message names the file and the reason."""


def human(n):
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.1f %s" % (n, unit))
        n /= 1024.0
    return "%d B" % n


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


def sha256_file(path, progress=None):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(CHUNK)
            if not b:
                break
            h.update(b)
            if progress:
                progress(len(b))
    return h.hexdigest()


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
        files.setdefault(kind_of(rel), []).append({"path": rel, "size": size, "sha256": sha256_file(full, progress)})
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
        out[name] = (m, hashlib.sha256(json.dumps(m, sort_keys=True, separators=(",", ":")).encode()).hexdigest())
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


def write_atomic(path, data, mode=0o644):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


# ---- segments ------------------------------------------------------------------------------

def _member_header(name, size):
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode, ti.mtime, ti.uname, ti.gname = size, 0o644, 0, "root", "root"
    return ti


def _header_len(name, size):
    return len(_member_header(name, size).tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))


def _padded(n):
    return (n + TAR_BLOCK - 1) // TAR_BLOCK * TAR_BLOCK


def plan_segments(manifest, segment_size):
    """Lay the manifest's files out into segments no larger than segment_size bytes (tar
    overhead counted exactly, end-of-archive and record padding included). A file that fits in
    a segment is never split; a larger one fills the current segment and continues in parts.
    Returns a list of segments, each a list of members {name, path, part, parts, offset, size}
    (part and parts are 0 for a whole file)."""
    cap = segment_size - 2 * TAR_BLOCK - TAR_RECORD
    if segment_size < 64 * 1024:
        raise BundleError("segment size %d is too small: use at least 64 KiB" % segment_size)
    files = sorted((e for entries in manifest["files"].values() for e in entries), key=lambda e: e["path"])
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


def segment_name(i):
    return "bundle-%04d.tar" % (i + 1)


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


def write_segment(path, src_root, members, progress=None):
    """Write one standalone tar segment; fill in each member's sha256; return (size, sha256)."""
    tmp = path + ".partial"
    with open(tmp, "wb") as raw:
        hw = _HashingWriter(raw)
        with tarfile.open(fileobj=hw, mode="w|", format=tarfile.PAX_FORMAT, bufsize=CHUNK) as tar:
            for m in members:
                with open(os.path.join(src_root, m["path"]), "rb") as f:
                    f.seek(m["offset"])
                    sl = _Slice(f, m["size"], progress)
                    tar.addfile(_member_header(m["name"], m["size"]), sl)
                    m["sha256"] = sl.h.hexdigest()
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(tmp, path)
    return hw.n, hw.h.hexdigest()


# ---- verification and import ---------------------------------------------------------------

class Progress(object):
    """Counts bytes; writes 'done total rate' as JSON to a file the role (or a person with
    `watch cat`) can follow, at most twice a second."""

    def __init__(self, total, path=None):
        self.total, self.done, self.path, self.t0, self.last = total, 0, path, time.monotonic(), 0.0

    def __call__(self, n):
        self.done += n
        now = time.monotonic()
        if self.path and now - self.last >= 0.5:
            self.last = now
            self.write()

    def write(self, phase="copy"):
        if not self.path:
            return
        el = max(time.monotonic() - self.t0, 1e-6)
        rec = {"phase": phase, "bytes_done": self.done, "bytes_total": self.total,
               "percent": round(100.0 * self.done / self.total, 1) if self.total else 100.0,
               "rate_bytes_per_s": int(self.done / el), "elapsed_s": round(el, 1)}
        try:
            write_atomic(self.path, json.dumps(rec).encode() + b"\n")
        except OSError:
            pass


def _stat_key(st):
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def free_bytes(path):
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


class Importer(object):
    """Verify a bundle (a directory, or media with segments) against a public key and, with a
    destination, copy it there: every byte is hashed on the way and checked against the signed
    manifest. Nothing on the source is written or deleted."""

    def __init__(self, src, public_key, dest=None, progress_file=None, check_mode=False):
        self.src, self.public_key, self.dest = src, public_key, dest
        self.progress_file, self.check_mode = progress_file, check_mode
        self.copied, self.skipped, self.removed, self.bytes_copied = [], [], [], 0
        self._journal_fh = None

    # -- step 1: signatures and listing (nothing read beyond the control files)
    def load(self):
        if not os.path.isdir(self.src):
            raise BundleError("the bundle source %s is not a directory (mount the media, or point at the unpacked bundle)" % self.src)
        data, self.manifest = read_json(os.path.join(self.src, MANIFEST), MANIFEST)
        verify_signature(data, os.path.join(self.src, SIGNATURE), self.public_key, MANIFEST)
        if self.manifest.get("schema") != MANIFEST_SCHEMA:
            raise BundleError("manifest.json has schema %r, this collection reads %r" % (self.manifest.get("schema"), MANIFEST_SCHEMA))
        self.manifest_sha256 = hashlib.sha256(data).hexdigest()
        self.manifest_bytes = data
        self.checkpoints = checkpoint_manifests(self.manifest)
        self.files = manifest_files(self.manifest)
        self.segmented = os.path.exists(os.path.join(self.src, SEGMENTS))
        if self.segmented:
            sdata, self.table = read_json(os.path.join(self.src, SEGMENTS), SEGMENTS)
            verify_signature(sdata, os.path.join(self.src, SEGMENTS_SIG), self.public_key, SEGMENTS)
            if self.table.get("manifest_sha256") != self.manifest_sha256:
                raise BundleError("segments.json belongs to another manifest (manifest sha256 %s, segments.json names %s): "
                                  "the media mixes two bundles" % (self.manifest_sha256, self.table.get("manifest_sha256")))
            self._check_media_listing()
        else:
            self._check_dir_listing()
        return self

    def _check_dir_listing(self):
        present = walk_files(self.src, skip_root=ROOT_CONTROL)
        unlisted = [p for p in present if p not in self.files]
        if unlisted:
            raise BundleError("unlisted file %s: it is not in the signed manifest. Refusing the bundle; nothing was installed"
                              % unlisted[0])
        missing = sorted(set(self.files) - set(present))
        if missing:
            raise BundleError("missing file %s (listed in the signed manifest, %s). Refusing the bundle; nothing was installed"
                              % (missing[0], human(self.files[missing[0]]["size"])))

    def _check_media_listing(self):
        segs = self.table.get("segments", [])
        names = [s["name"] for s in segs]
        present = walk_files(self.src, skip_root=MEDIA_FILES)
        unlisted = [p for p in present if p not in names]
        if unlisted:
            raise BundleError("unlisted file %s on the media: it is not in the signed segments.json. "
                              "Refusing the bundle; nothing was installed" % unlisted[0])
        for s in segs:
            p = os.path.join(self.src, s["name"])
            if not os.path.exists(p):
                raise BundleError("missing segment %s (%d of %d, %s): copy it onto the media. Refusing the bundle; nothing was installed"
                                  % (s["name"], names.index(s["name"]) + 1, len(names), human(s["size"])))
            size = os.path.getsize(p)
            if size != s["size"]:
                raise BundleError("segment %s is truncated: %d bytes on the media, segments.json says %d. "
                                  "Refusing the bundle; nothing was installed" % (s["name"], size, s["size"]))
        members = {}
        for s in segs:
            for m in s["members"]:
                members.setdefault(m["path"], []).append(m)
        for path, e in self.files.items():
            got = sum(m["size"] for m in members.get(path, []))
            if got != e["size"]:
                raise BundleError("missing file %s: the segments hold %d of its %d bytes" % (path, got, e["size"]))
        extra = sorted(set(members) - set(self.files))
        if extra:
            raise BundleError("unlisted file %s inside the segments: it is not in the signed manifest" % extra[0])

    # -- step 2: what is already in place
    def _state_path(self):
        return os.path.join(self.dest, IMPORT_DIR, "state.json")

    def _journal_path(self):
        return os.path.join(self.dest, IMPORT_DIR, "state.journal")

    def _load_state(self):
        """Per-file records of what earlier runs verified in dest, whatever bundle they came from:
        a new bundle (an upgrade) then copies only the files whose sha256 changed. state.json is
        the snapshot a finished run leaves; state.journal holds one JSON line per file verified
        since (an interrupted run), and a torn last line is ignored: that file is copied again."""
        try:
            with open(self._state_path()) as f:
                files = json.load(f).get("files", {})
        except (OSError, ValueError):
            files = {}
        try:
            with open(self._journal_path()) as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                        files[rec["path"]] = {"sha256": rec["sha256"], "stat": rec["stat"]}
                    except (ValueError, KeyError, TypeError):
                        break
        except OSError:
            pass
        return files

    def _journal(self, path, rec):
        """Record one verified file: one appended line, so an import of n files writes O(n)."""
        if self.check_mode:
            return
        if self._journal_fh is None:
            self._journal_fh = open(self._journal_path(), "a")
        self._journal_fh.write(json.dumps(dict(rec, path=path), sort_keys=True) + "\n")
        self._journal_fh.flush()

    def _close_journal(self):
        if self._journal_fh is not None:
            self._journal_fh.close()
            self._journal_fh = None

    def _save_state(self, done):
        """The snapshot of a finished run (the journal is closed by then); the journal it folds in is removed."""
        if self.check_mode:
            return
        write_atomic(self._state_path(), json.dumps({"manifest_sha256": self.manifest_sha256, "files": done}).encode())
        try:
            os.unlink(self._journal_path())
        except FileNotFoundError:
            pass

    def _in_place(self, state):
        """Files already verified in dest by an earlier (maybe interrupted) run: the record of
        the sha256 we verified while writing, plus size, mtime and inode unchanged since."""
        ok = {}
        for path, e in self.files.items():
            rec = state.get(path)
            if not rec or rec.get("sha256") != e["sha256"]:
                continue
            try:
                st = os.stat(os.path.join(self.dest, path))
            except OSError:
                continue
            if _stat_key(st) == rec.get("stat"):
                ok[path] = rec
        return ok

    def done_marker(self):
        return os.path.join(self.dest, IMPORT_DIR, "manifest.json")

    def already_imported(self):
        try:
            with open(self.done_marker(), "rb") as f:
                return hashlib.sha256(f.read()).hexdigest() == self.manifest_sha256
        except OSError:
            return False

    # -- step 3: copy and verify
    def run(self):
        self.load()
        total = self.manifest["totals"]["bytes"]
        state = self._load_state() if self.dest else {}
        was_imported = bool(self.dest) and self.already_imported()
        in_place = self._in_place(state) if self.dest else {}
        if was_imported and len(in_place) == len(self.files):
            self.skipped = sorted(in_place)
            return self.result(changed=False)
        todo_bytes = sum(e["size"] for p, e in self.files.items() if p not in in_place)
        if self.dest:
            free = free_bytes(self.dest)
            if todo_bytes > free:
                raise BundleError("not enough space in %s: the import needs %s (%d bytes), the file system has %s free. "
                                  "Free space or choose another destination; nothing was installed"
                                  % (self.dest, human(todo_bytes), todo_bytes, human(free)))
            if not self.check_mode:
                os.makedirs(os.path.join(self.dest, IMPORT_DIR), exist_ok=True)
        prog = Progress(total if not self.dest else todo_bytes, self.progress_file)
        done = dict(in_place)
        self.skipped = sorted(in_place)
        try:
            if self.segmented:
                self._run_segments(done, prog)
            else:
                self._run_dir(done, prog)
        finally:
            self._close_journal()
        prog.write("done")
        if self.dest and not self.check_mode:
            self._save_state(done)
            for name, (m, digest) in self.checkpoints.items():
                d = os.path.join(self.dest, IMPORT_DIR, "checkpoints")
                os.makedirs(d, exist_ok=True)
                write_atomic(os.path.join(d, name + ".json"), json.dumps(m, sort_keys=True, separators=(",", ":")).encode())
            for name in (MANIFEST, SIGNATURE):
                shutil.copyfile(os.path.join(self.src, name), os.path.join(self.dest, name))
            self._remove_stale()
            write_atomic(self.done_marker(), self.manifest_bytes)
        return self.result(changed=bool(self.dest) and (bool(self.copied) or bool(self.removed) or not was_imported))

    def _remove_stale(self):
        """Files an earlier bundle left in dest that this one does not list (dest is ours alone)."""
        for rel in walk_files(self.dest, skip_root=ROOT_CONTROL):
            if rel not in self.files:
                os.unlink(os.path.join(self.dest, rel))
                self.removed.append(rel)

    def _open_dest(self, path):
        full = os.path.join(self.dest, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        if os.path.lexists(full):
            os.unlink(full)
        return open(full + ".partial", "wb")

    def _finish_file(self, path, got, f, done):
        e = self.files[path]
        if got != e["sha256"]:
            if f is not None:
                f.close()
                os.unlink(os.path.join(self.dest, path) + ".partial")
            raise BundleError("sha256 mismatch for %s: the signed manifest says %s, the media holds %s. The media is damaged "
                              "or was tampered with; refusing the bundle, nothing was installed" % (path, e["sha256"], got))
        if f is not None:
            f.flush()
            os.fsync(f.fileno())
            f.close()
            full = os.path.join(self.dest, path)
            os.replace(full + ".partial", full)
            done[path] = {"sha256": got, "stat": _stat_key(os.stat(full))}
            self.copied.append(path)
            self.bytes_copied += e["size"]
            self._journal(path, done[path])
            kill_after = os.environ.get(KILL_AFTER_FILES_ENV)
            if kill_after and len(self.copied) >= int(kill_after):
                os.kill(os.getpid(), 9)
        elif self.dest:
            self.copied.append(path)
            self.bytes_copied += e["size"]

    def _writing(self):
        return bool(self.dest) and not self.check_mode

    def _run_dir(self, done, prog):
        for path in sorted(self.files):
            if path in done:
                continue
            h = hashlib.sha256()
            out = self._open_dest(path) if self._writing() else None
            with open(os.path.join(self.src, path), "rb") as f:
                while True:
                    b = f.read(CHUNK)
                    if not b:
                        break
                    h.update(b)
                    if out is not None:
                        out.write(b)
                    prog(len(b))
            self._finish_file(path, h.hexdigest(), out, done)

    def _run_segments(self, done, prog):
        open_file = {}  # path -> (file object or None, hasher) while its parts arrive
        for s in self.table["segments"]:
            expected = {m["name"]: m for m in s["members"]}
            seen = []
            seg_path = os.path.join(self.src, s["name"])
            try:
                tar = tarfile.open(seg_path, mode="r:", bufsize=CHUNK)
            except (tarfile.TarError, OSError) as e:
                raise BundleError("segment %s is not a readable tar (%s): the media is damaged" % (s["name"], e))
            with tar:
                while True:
                    try:
                        ti = tar.next()
                    except (tarfile.TarError, OSError) as e:
                        raise BundleError("segment %s is damaged after %d members (%s)" % (s["name"], len(seen), e))
                    if ti is None:
                        break
                    m = expected.get(ti.name)
                    if m is None or not ti.isreg() or ti.size != m["size"]:
                        raise BundleError("segment %s holds %s, which segments.json does not list (or with another size)"
                                          % (s["name"], ti.name))
                    seen.append(ti.name)
                    path = m["path"]
                    if path in done:
                        continue
                    if m["part"] <= 1:
                        out = self._open_dest(path) if self._writing() else None
                        open_file[path] = (out, hashlib.sha256())
                    if path not in open_file:
                        raise BundleError("segment %s starts in the middle of %s: an earlier segment is missing or out of order"
                                          % (s["name"], path))
                    out, whole = open_file[path]
                    part_h = hashlib.sha256()
                    try:
                        src = tar.extractfile(ti)
                        while True:
                            b = src.read(CHUNK)
                            if not b:
                                break
                            part_h.update(b)
                            whole.update(b)
                            if out is not None:
                                out.write(b)
                            prog(len(b))
                    except (tarfile.TarError, OSError) as e:
                        raise BundleError("segment %s is damaged in %s (%s)" % (s["name"], ti.name, e))
                    if part_h.hexdigest() != m["sha256"]:
                        if out is not None:
                            out.close()
                            os.unlink(os.path.join(self.dest, path) + ".partial")
                        raise BundleError("sha256 mismatch for %s in segment %s: segments.json says %s, the media holds %s. "
                                          "Refusing the bundle; nothing was installed" % (ti.name, s["name"], m["sha256"], part_h.hexdigest()))
                    if m["part"] == m["parts"]:
                        del open_file[path]
                        self._finish_file(path, whole.hexdigest(), out, done)
            missing = [n for n in expected if n not in seen]
            if missing:
                raise BundleError("segment %s lacks %s: the segment is truncated or damaged" % (s["name"], missing[0]))

    def result(self, changed):
        kinds = {k: {"files": len(v), "bytes": sum(e["size"] for e in v)} for k, v in self.manifest["files"].items()}
        return {
            "changed": changed,
            "manifest_sha256": self.manifest_sha256,
            "created": self.manifest.get("created"),
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
            "checkpoints": {n: {"digest": d, "manifest": os.path.join(self.dest, IMPORT_DIR, "checkpoints", n + ".json") if self.dest else None}
                            for n, (m, d) in self.checkpoints.items()},
        }
