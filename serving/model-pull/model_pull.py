# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""model-pull: put a verified model checkpoint from an S3-compatible store into a node cache.

  model-pull --endpoint URL --bucket B --prefix P --model NAME --digest SHA256HEX
             --cache-root DIR [--ca-file F] [--parallel N] [--rehash] [--lock-timeout S]

Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (the read-only Secret).
The checkpoint manifest is read from s3://B/P/.llmops/manifest.json (written there by
llmops.onprem.checkpoint_sync); its digest must equal --digest. Files land in
DIR/<model>/<digest>/, each checked against its sha256; a marker file then records the
verified copy, and a warm start with a verified copy moves 0 bytes. A lock on
DIR/<model>/.lock keeps concurrent pulls on one node from downloading twice; a pull waits
for it at most --lock-timeout seconds (exit 8 after that), naming the holder. The last line
printed is MODEL_PATH=DIR/<model>/<digest>. Exit codes: see README.md next to this file.

Standard library only; the S3 transport (SigV4, TLS against one CA bundle, kept connections), the checkpoint
manifest rules (schema, digest, the one path rule), the file hash and atomic write, the progress writer, the
retry helper and the error root are the collection's _s3_endpoint.py, _sigv4.py, _checkpoint.py, _paths.py,
_files.py, _progress.py, _retry.py and _errors.py, copied next to this file in the image (and found in
plugins/module_utils when run from a checkout).

What the store answers is bounded by the manifest: a body longer or shorter than the manifest's
size is a corrupt object (exit 5), never read past that size. Nothing in the node cache is
followed through a symbolic link: links in the model's directory are removed and fetched again,
a link in place of the model or version directory is refused.
"""
import argparse
import concurrent.futures
import difflib
import errno
import fcntl
import hashlib
import http.client
import json
import mmap
import os
import queue
import re
import socket
import stat
import sys
import threading
import time
from xml.etree import ElementTree

_HERE = os.path.dirname(os.path.realpath(__file__))
for _cand in (_HERE, os.path.join(_HERE, "..", "..", "plugins", "module_utils")):
    if os.path.exists(os.path.join(_cand, "_s3_endpoint.py")):
        sys.path.insert(0, os.path.abspath(_cand))
        break
import _checkpoint  # noqa: E402  pylint: disable=wrong-import-position
import _errors  # noqa: E402  pylint: disable=wrong-import-position
import _files  # noqa: E402  pylint: disable=wrong-import-position
import _progress  # noqa: E402  pylint: disable=wrong-import-position
import _retry  # noqa: E402  pylint: disable=wrong-import-position
import _s3_endpoint  # noqa: E402  pylint: disable=wrong-import-position

EXIT_OK, EXIT_USAGE, EXIT_CREDENTIAL, EXIT_NOT_FOUND, EXIT_VERIFY, EXIT_DISK, EXIT_UNREACHABLE = 0, 2, 3, 4, 5, 6, 7
EXIT_LOCKED = 8                   # another pull on this node held the cache lock past --lock-timeout
SCHEMA = _checkpoint.SCHEMA
MANIFEST_KEY = _checkpoint.MANIFEST_KEY
MARKER = ".llmops-verified.json"
# One ranged GET. Measured here against rclone serve s3: 64 MiB ranges cost the server about 2 s of
# CPU per 2 GiB, whole-file GETs (or 256 MiB ranges) 3.5 to 5 s, and 16 MiB ranges no less.
CHUNK = 64 * 1024 * 1024
HASH_PIECE = 4 * 1024 * 1024      # one sha256 update over the page cache (mmap)
# A fetching thread hands what it wrote to the hashers (and to the progress count) every this many bytes.
REPORT_EVERY = 4 * 1024 * 1024
# One read from the socket, one pwrite. Measured here: 128-256 KiB moves a GiB in about half the
# time (and system CPU) of 4 MiB pieces, which fall out of the CPU caches between copies.
BUF = 256 * 1024
DISK_MARGIN = 64 * 1024 * 1024    # free space left over after the pull
# The most a small answer (the manifest, a listing, an error) may be: read no further than this.
SMALL_MAX = 16 * 1024 * 1024
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
LOCK_TIMEOUT = 1800               # default --lock-timeout: seconds to wait for another pull's lock
LOCK_POLL = 0.5                   # seconds between two non-blocking tries of the lock
LOCK_REPORT = 30                  # seconds between two "still waiting" lines
HOLDER_MAX = 512                  # the most read of the holder line in the lock file
CREDENTIAL_CODES = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken")


class PullError(_errors.OnpremError):
    """A failed pull; ``code`` is the exit code (README.md)."""

    KIND = "refused"

    def __init__(self, code, message):
        super(PullError, self).__init__(message)
        self.code = code


def log(msg):
    sys.stdout.write("model-pull: %s\n" % msg)
    sys.stdout.flush()


def boot_id():
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return fh.read().strip()
    except OSError:
        return ""


class S3(_s3_endpoint.Endpoint):
    """The collection's S3 transport (_s3_endpoint.Endpoint) with model-pull's exit codes: one keep-alive
    connection per fetching thread, answers streamed (``open``) or bounded by SMALL_MAX (``get_small``)."""

    def __init__(self, endpoint, access_key, secret_key, region="us-east-1", ca_file=None, timeout=30):
        try:
            super(S3, self).__init__(endpoint, access_key, secret_key, region, ca_path=ca_file, timeout=timeout,
                                     retries=0, keep_alive=True)
        except _s3_endpoint.OnpremError:  # the class _s3_endpoint raises (in a checkout: the collection's own)
            raise PullError(EXIT_USAGE, "--endpoint %r must look like https://host:port (no path)" % endpoint)
        if self.scheme == "https":
            try:
                self.tls_context()
            except _s3_endpoint.OnpremError as e:
                raise PullError(EXIT_USAGE, "--ca-file %s cannot be used: %s" % (ca_file, e.__cause__ or e))

    def get_small(self, path, query=None):
        """(status, body, S3 error code) of a small GET; an answer over SMALL_MAX bytes is refused unread."""
        try:
            status, _headers, body = self.send(self.build("GET", path, query), SMALL_MAX)
        except _s3_endpoint.OnpremError as e:
            if e.kind == "protocol":
                raise PullError(EXIT_VERIFY, "GET %s on %s answered more than %d bytes; a manifest or listing is never "
                                "that large: refused (is the endpoint an S3 object store?)" % (path, self.url, SMALL_MAX))
            raise unreachable(e)
        code = None
        if status >= 300:
            code = _s3_endpoint.error_code(body)
        return status, body, code


def unreachable(e):
    """PullError 7 for a transport failure of the S3 client (TLS: a hint at --ca-file)."""
    err = PullError(EXIT_UNREACHABLE, "%s%s" % (e, " (check --ca-file)" if e.kind == "tls" and "verification" in str(e) else ""))
    err.__cause__ = e
    return err


def credential_refused(status, code, what):
    if status == 403 and code in CREDENTIAL_CODES or code in CREDENTIAL_CODES[:2]:
        return PullError(EXIT_CREDENTIAL, "the object store refused the credential (%s %s) on %s: check the "
                         "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY of the read-only Secret" % (status, code or "", what))
    return None


def list_names(s3, bucket, parent):
    """Immediate sub-prefixes of ``parent`` in ``bucket`` (for the 'did you mean' hint)."""
    status, body, _code = s3.get_small("/" + bucket, {"list-type": "2", "prefix": parent, "delimiter": "/",
                                                      "max-keys": "1000"})
    if status != 200:
        return []
    root = ElementTree.fromstring(body)
    out = []
    for el in root.iter():
        if el.tag.split("}")[-1] == "Prefix" and el.text and el.text != parent:
            out.append(el.text[len(parent):].rstrip("/"))
    return sorted(set(out))


def not_found_message(s3, bucket, prefix, code):
    if code == "NoSuchBucket":
        status, body, _c = s3.get_small("/")
        names = []
        if status == 200:
            names = [el.text for el in ElementTree.fromstring(body).iter() if el.tag.split("}")[-1] == "Name" and el.text]
        hint = difflib.get_close_matches(bucket, names, n=1)
        return "bucket %r does not exist on %s%s" % (bucket, s3.url, "; did you mean %r?" % hint[0] if hint else "")
    parts = prefix.split("/")
    # Walk down from the bucket: the first level that does not exist is the likely typo.
    for depth in range(len(parts)):
        parent = "/".join(parts[:depth]) + ("/" if depth else "")
        names = list_names(s3, bucket, parent)
        if parts[depth] not in names:
            hint = difflib.get_close_matches(parts[depth], names, n=1, cutoff=0.5)
            where = "s3://%s/%s" % (bucket, parent)
            if hint:
                return ("no checkpoint at s3://%s/%s: %r does not exist under %s; did you mean %r "
                        "(s3://%s/%s%s)?" % (bucket, prefix, parts[depth], where, hint[0], bucket, parent, hint[0]))
            return ("no checkpoint at s3://%s/%s: %r does not exist under %s (which holds: %s)"
                    % (bucket, prefix, parts[depth], where, ", ".join(names[:10]) or "nothing"))
    return ("no checkpoint at s3://%s/%s: the prefix exists but has no %s (was it uploaded with "
            "llmops.onprem.checkpoint_sync? a .tar under the prefix is not a checkpoint)" % (bucket, prefix, MANIFEST_KEY))


def fetch_manifest(s3, bucket, prefix, digest):
    key = "%s/%s" % (prefix, MANIFEST_KEY) if prefix else MANIFEST_KEY
    status, body, code = s3.get_small("/%s/%s" % (bucket, key))
    refused = credential_refused(status, code, "s3://%s/%s" % (bucket, key))
    if refused:
        raise refused
    if status == 404:
        raise PullError(EXIT_NOT_FOUND, not_found_message(s3, bucket, prefix, code))
    if status != 200:
        raise PullError(EXIT_UNREACHABLE, "GET s3://%s/%s answered HTTP %s %s" % (bucket, key, status, code or ""))
    try:
        manifest = json.loads(body.decode("utf-8"))
        assert isinstance(manifest, dict) and manifest.get("schema") == SCHEMA and isinstance(manifest.get("files"), list)
    except (ValueError, AssertionError, AttributeError):
        raise PullError(EXIT_VERIFY, "s3://%s/%s is not a checkpoint manifest (%s)" % (bucket, key, SCHEMA))
    got = _checkpoint.manifest_digest(manifest)
    if got != digest:
        raise PullError(EXIT_VERIFY, "the manifest at s3://%s/%s has digest %s, not --digest %s: the prefix holds "
                        "another version of the checkpoint (re-run the checkpoints stage, or fix the digest)"
                        % (bucket, key, got, digest))
    # The collection's one manifest rule (_checkpoint.validate_manifest): schema, sizes, sha256, and the path
    # rule (no absolute, '..', '.', empty or dot-file parts; no duplicates).
    try:
        _checkpoint.validate_manifest(manifest, "the manifest at s3://%s/%s" % (bucket, key))
    except _checkpoint.CheckpointError as e:
        raise PullError(EXIT_VERIFY, "%s; nothing was written to the node cache" % e)
    return manifest


def stamp(path):
    """[size, mtime, inode] of a regular file (not followed through a link: a link raises OSError)."""
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.ELOOP if stat.S_ISLNK(st.st_mode) else errno.EINVAL, "not a regular file", path)
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def refuse_link(path, what):
    """PullError when ``path`` (the model or version directory) is a symbolic link or not a directory."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise PullError(EXIT_VERIFY, "the node cache holds a symbolic link at %s (to %s) where the %s should be: refused "
                        "(model-pull never creates links; remove it from the node)" % (path, os.readlink(path), what))
    if not stat.S_ISDIR(st.st_mode):
        raise PullError(EXIT_VERIFY, "the node cache holds a non-directory at %s where the %s should be: refused "
                        "(remove it from the node)" % (path, what))


def unlink_quiet(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def cache_dirs(cache_root, model_dir, dest):
    """Create the cache root, the model's directory and the version's directory. Pulls of the same model start
    together on a node (two replicas, three init containers): another one may create a directory between this
    one's look and its mkdir, so an existing directory is taken, after the same check as before (never a link)."""
    os.makedirs(cache_root, exist_ok=True)
    for path, what in ((model_dir, "model's directory"), (dest, "checkpoint version's directory")):
        refuse_link(path, what)
        try:
            os.mkdir(path, 0o755)
        except FileExistsError:
            refuse_link(path, what)


def real_dirs(dest, rel):
    """Create the directories of ``rel`` under ``dest``, replacing any symbolic link on the way by a directory
    (``dest`` is the pull's own: a link planted there is removed, never followed)."""
    cur = dest
    for part in rel.split("/")[:-1]:
        cur = os.path.join(cur, part)
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            os.mkdir(cur, 0o755)
            continue
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
            log("removing %s from the cache (a %s where a directory belongs)" % (cur, "link" if stat.S_ISLNK(st.st_mode) else "file"))
            os.unlink(cur)
            os.mkdir(cur, 0o755)


def cached_ok(dest, manifest, rehash, parallel):
    """Which manifest files the cache already holds verified: (ok paths, stamps of them).

    A file whose size, mtime and inode equal the stamps recorded when it was verified (in the
    marker, same boot) is trusted without reading it; any other present file of the right size
    is re-hashed. --rehash, or a reboot since the marker, re-hashes everything."""
    marker = {}
    try:
        with os.fdopen(os.open(os.path.join(dest, MARKER), os.O_RDONLY | NOFOLLOW), "rb") as fh:
            marker = json.loads(fh.read(SMALL_MAX).decode("utf-8"))
        if not isinstance(marker, dict):
            marker = {}
    except (OSError, ValueError):
        marker = {}
    stamps = marker.get("files", {}) if marker.get("boot_id") == boot_id() and not rehash else {}
    ok, new_stamps, to_hash = [], {}, []
    for f in manifest["files"]:
        path = os.path.join(dest, f["path"])
        if os.path.islink(path):
            log("removing the symbolic link %s from the cache (fetching the file instead)" % path)
            os.unlink(path)
            continue
        try:
            st = stamp(path)
        except OSError:
            continue
        if st[0] != f["size"]:
            continue
        if stamps.get(f["path"]) == st + [f["sha256"]]:
            ok.append(f["path"])
            new_stamps[f["path"]] = st + [f["sha256"]]
        else:
            to_hash.append(f)
    if to_hash:
        log("re-hashing %d cached file(s) without a current verification stamp" % len(to_hash))
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(parallel, len(to_hash)))) as pool:
            digests = list(pool.map(lambda f: _files.sha256_file(os.path.join(dest, f["path"]), BUF, follow=False), to_hash))
        for f, got in zip(to_hash, digests):
            if got == f["sha256"]:
                ok.append(f["path"])
                new_stamps[f["path"]] = stamp(os.path.join(dest, f["path"])) + [f["sha256"]]
            else:
                log("cached %s is corrupt (sha256 %s, expected %s): fetching it again" % (f["path"], got, f["sha256"]))
    return ok, new_stamps


def write_marker(dest, manifest_digest, stamps):
    _files.write_atomic(os.path.join(dest, MARKER), json.dumps(
        {"digest": manifest_digest, "boot_id": boot_id(), "files": stamps}, sort_keys=True).encode(), mode=None)


class Progress(_progress.ProgressWriter):
    """The collection's one progress writer (_progress.py, shipped beside this file): the progress file with
    --progress-file, and a progress line on stdout about every LOG_EVERY seconds."""

    LOG_EVERY = 2.0

    def __init__(self, total, files, path=None, model=""):
        super(Progress, self).__init__(path, "model_pull", model, bytes_total=total, files_total=files, phase="download")
        self.model, self.last_log = model, self.t0

    def add(self, nbytes=0, files=0):
        with self.lock:
            super(Progress, self).add(nbytes, files)
            now = self.clock()
            if now - self.last_log >= self.LOG_EVERY:
                self.last_log = now
                self.report()

    __call__ = add

    def report(self):
        doc = self.document()
        doc["stage"] = self.model or doc["stage"]
        log("progress %s" % _progress.render(doc))


class FileJob(object):
    """One file: its chunks (one ranged GET each) are fetched in parallel and written at their offsets; the
    sha256 is computed apart from the fetching, over the bytes the file holds (read back through an mmap of the
    page cache, no copy), following the contiguous written prefix. A fetching thread never waits for a hash:
    it reports what it wrote (wrote) and goes on reading its socket; the Hasher threads hash what is ready."""

    def __init__(self, dest, entry):
        self.entry = entry
        self.dest = dest
        self.final = os.path.join(dest, entry["path"])
        self.part = self.final + ".part"
        self.size = entry["size"]
        self.chunk = CHUNK
        self.chunks = [(off, min(CHUNK, self.size - off)) for off in range(0, self.size, CHUNK)] or [(0, 0)]
        self.written = [0] * len(self.chunks)   # bytes written from each chunk's start, contiguous
        self.done = [False] * len(self.chunks)  # chunk fully read, its answer checked to its end
        self.hashed = 0                         # bytes of the file hashed, from its start
        self.hash = hashlib.sha256()
        self.lock = threading.Lock()
        self.queued = False                     # a Hasher task for this file is queued or running
        self.finished = False                   # reported complete (once)
        self.fd = None
        self.map = None

    def open(self):
        real_dirs(self.dest, self.entry["path"])
        # A .part (or anything) planted under its name is removed, not written through.
        unlink_quiet(self.part)
        self.fd = os.open(self.part, os.O_RDWR | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o644)
        # Sized, not preallocated (posix_fallocate measured slower here); free space was checked
        # before the download, and ENOSPC while writing is exit code 6.
        os.ftruncate(self.fd, self.size)
        if self.size:
            self.map = mmap.mmap(self.fd, self.size, prot=mmap.PROT_READ)

    def close(self):
        if self.map is not None:
            self.map.close()
            self.map = None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def wrote(self, i, count, done=False):
        """Chunk i holds ``count`` bytes from its start (all of them checked, with done=True)."""
        with self.lock:
            self.written[i] = count
            self.done[i] = self.done[i] or done

    def _ready(self):
        """(end of the contiguous written prefix, whether every chunk is done); under self.lock."""
        i = min(self.hashed // self.chunk, len(self.chunks) - 1)
        while i < len(self.chunks) and self.written[i] == self.chunks[i][1]:
            i += 1
        end = self.size if i == len(self.chunks) else self.chunks[i][0] + self.written[i]
        return end, all(self.done)

    def hash_some(self, most, stop):
        """Hash at most ``most`` bytes of the written prefix not hashed yet (one Hasher thread at a time: the
        queued flag). Returns "finished" once every byte is hashed and every chunk done (exactly once), "more"
        when ready bytes are left, "idle" when it has caught up with the writers (and is no longer queued)."""
        with self.lock:
            end, all_done = self._ready()
            if end <= self.hashed:
                self.queued = False
                if all_done and self.hashed == self.size and not self.finished:
                    self.finished = True
                    return "finished"
                return "idle"
        end = min(end, self.hashed + most)
        with memoryview(self.map) as view:
            for pos in range(self.hashed, end, HASH_PIECE):
                if stop.is_set():
                    raise Stopped()
                self.hash.update(view[pos:min(pos + HASH_PIECE, end)])
        # The pages hashed leave this process's mapping (they stay in the page cache): the mapping of a large
        # checkpoint never grows past what is being hashed.
        lo = self.hashed - self.hashed % mmap.PAGESIZE
        hi = end - end % mmap.PAGESIZE
        if hi > lo and hasattr(mmap, "MADV_DONTNEED"):
            self.map.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
        with self.lock:
            self.hashed = end
        return "more"


class Hasher(object):
    """A few threads (one per core at most) hashing the files' written prefixes, a file at a time each, taking
    turns over the files so that every file's sha256 keeps up with its writers."""

    BATCH = 16 * 1024 * 1024    # hashed in one turn before the file goes back to the end of the queue

    def __init__(self, threads, stop, finished):
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=threads)
        self.stop = stop
        self.finished = finished    # a callable called with each file whose hash is complete (or an exception)

    def kick(self, job):
        """Called after a writer reported bytes: queue the file unless a turn of it is queued or running."""
        with job.lock:
            if job.queued:
                return
            job.queued = True
        self.pool.submit(self._turn, job)

    def _turn(self, job):
        try:
            state = job.hash_some(self.BATCH, self.stop)
        except Stopped:
            return
        except BaseException as e:  # handed to the main thread, which raises it
            self.finished(e)
            return
        if state == "more":
            self.pool.submit(self._turn, job)
        elif state == "finished":
            self.finished(job)

    def shutdown(self):
        self.pool.shutdown(wait=True, cancel_futures=True)


class Stopped(Exception):
    """Another chunk failed: this one gives up."""


def corrupt_message(bucket, key, job, what):
    return ("s3://%s/%s: the object store answered %s, but the manifest says %s is %d bytes: the object is corrupt "
            "or was replaced; nothing past the manifest's size was read. Repair it with the checkpoints stage and "
            "checkpoints_read_back: true (it re-uploads objects whose bytes differ)"
            % (bucket, key, what, job.entry["path"], job.size))


def check_answer(s3, bucket, key, job, resp, pos, end):
    """Before reading a body: its declared size must be the manifest's (else exit 5, the body left unread), and a
    ranged request must get its range. Some servers (rclone serve s3) answer a range with 200 and Content-Range."""
    length = resp.getheader("content-length")
    crange = resp.getheader("content-range") or ""
    m = re.match(r"^bytes (\d+)-(\d+)/(\d+|\*)$", crange.strip())
    try:
        length = int(length) if length is not None else None
    except ValueError:
        length = None
    total = int(m.group(3)) if m and m.group(3) != "*" else None
    if total is not None and total != job.size:
        s3.discard()
        raise PullError(EXIT_VERIFY, corrupt_message(bucket, key, job, "an object of %d bytes (Content-Range %s)"
                                                     % (total, crange)))
    whole = (pos, end) == (0, job.size)
    if m is None and resp.status == 200:
        # The whole object: its length is the object's size.
        if length is not None and length != job.size:
            s3.discard()
            raise PullError(EXIT_VERIFY, corrupt_message(bucket, key, job, "an object of %d bytes" % length))
        if not whole:
            s3.discard()
            raise PullError(EXIT_UNREACHABLE, "%s ignored the Range header (asked for bytes %d-%d of s3://%s/%s, it "
                            "answered the whole object)" % (s3.url, pos, end - 1, bucket, key))
        return
    if m is None or (int(m.group(1)), int(m.group(2))) != (pos, end - 1):
        s3.discard()
        raise PullError(EXIT_UNREACHABLE, "%s answered %r to a request for bytes %d-%d of s3://%s/%s"
                        % (s3.url, crange, pos, end - 1, bucket, key))
    if length is not None and length != end - pos:
        s3.discard()
        raise PullError(EXIT_VERIFY, corrupt_message(bucket, key, job, "%d bytes for the %d-byte range %d-%d"
                                                     % (length, end - pos, pos, end - 1)))


def write_all(fd, data, pos):
    """pwrite all of ``data`` at ``pos`` (a short write is continued, never taken for the whole)."""
    with memoryview(data) as view:
        while view:
            n = os.pwrite(fd, view, pos)
            view, pos = view[n:], pos + n


def fetch_chunk(s3, bucket, key, job, i, progress, stop, hasher):
    """Fetch chunk i of job with one ranged GET (retried from the byte where an answer broke off) and write it at
    its offset. Returns False when stopped. The bytes are hashed by the hasher, never on this thread."""
    if stop.is_set():
        return False
    off, length = job.chunks[i]
    end = off + length
    buf = bytearray(BUF)
    view = memoryview(buf)
    pos = reported = off
    # Transient failures (a dropped connection, a timeout, HTTP 429/500/502/503/504: S3 retries its 500
    # InternalError) are retried with the collection's one retry helper (_retry.py): at most 4 tries,
    # jittered exponential backoff.
    tries = _retry.Retry("GET", 4, statuses=_retry.S3_TRANSIENT_STATUS)
    try:
        while True:
            try:
                # A retry asks for the rest of the chunk only: the bytes before pos are written.
                headers = {"range": "bytes=%d-%d" % (pos, end - 1)} if length else {}
                try:
                    resp = s3.open("GET", "/%s/%s" % (bucket, key), headers=headers)
                except _s3_endpoint.OnpremError as e:
                    # Could not send it, or no answer (a refused or dropped connection, a timeout): tried again
                    # while transient; TLS failures are not.
                    if tries.again(exc=e):
                        continue
                    raise unreachable(e)
                if resp.status not in (200, 206):
                    body = resp.read(SMALL_MAX)
                    s3.discard()
                    code = _s3_endpoint.error_code(body)
                    refused = credential_refused(resp.status, code, "s3://%s/%s" % (bucket, key))
                    if refused:
                        raise refused
                    if resp.status == 404:
                        raise PullError(EXIT_NOT_FOUND, "s3://%s/%s is in the manifest but not in the bucket "
                                        "(an incomplete upload? re-run the checkpoints stage)" % (bucket, key))
                    if tries.again(status=resp.status):
                        continue
                    raise PullError(EXIT_UNREACHABLE, "GET s3://%s/%s answered HTTP %s %s" % (bucket, key, resp.status, code or ""))
                check_answer(s3, bucket, key, job, resp, pos, end)
                while pos < end and not stop.is_set():
                    n = resp.readinto(view[:min(BUF, end - pos)])
                    if not n:
                        break
                    write_all(job.fd, view[:n], pos)
                    pos += n
                    if pos - reported >= REPORT_EVERY:
                        # What is written is handed to the hasher: it follows this thread by at most this much.
                        job.wrote(i, pos - off)
                        hasher.kick(job)
                        progress.add(pos - reported)
                        reported = pos
                if stop.is_set():
                    s3.discard()
                    raise Stopped()
                if pos < end:
                    # A body that ends cleanly before the manifest's size: the object is shorter (a connection
                    # that drops raises instead, and is retried).
                    s3.discard()
                    raise PullError(EXIT_VERIFY, corrupt_message(bucket, key, job, "a body that ended after %d bytes "
                                                                 "(from offset %d)" % (pos, off)))
                # Never drain an answer: one byte more than the manifest's size is a corrupt object.
                if resp.read(1):
                    s3.discard()
                    raise PullError(EXIT_VERIFY, corrupt_message(bucket, key, job, "more bytes than asked for "
                                                                 "(bytes %d-%d)" % (off, end - 1)))
                break
            except PullError:
                raise
            except OSError as e:
                if e.errno == errno.ENOSPC:
                    raise PullError(EXIT_DISK, "no space left on the cache volume while writing %s" % job.final)
                s3.discard()
                if not tries.again(exc=e):
                    raise PullError(EXIT_UNREACHABLE, "fetching %s failed: %s" % (key, e))
            except http.client.HTTPException as e:
                s3.discard()
                if not tries.again(exc=e):
                    raise PullError(EXIT_UNREACHABLE, "fetching %s failed: %s" % (key, e))
    except Stopped:
        return False
    finally:
        if pos > reported:
            progress.add(pos - reported)
    job.wrote(i, pos - off, done=True)
    hasher.kick(job)
    return True


def download(s3, bucket, prefix, dest, entries, parallel, progress):
    jobs = [FileJob(dest, f) for f in entries]
    for job in jobs:
        job.open()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=parallel)
    stop = threading.Event()
    # Both the fetching threads and the hashers report here: a failed or stopped chunk (its future), a file whose
    # sha256 is complete (its FileJob), or an exception of a hasher.
    events = queue.Queue()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    hasher = Hasher(max(1, min(parallel, len(jobs), cores)), stop, events.put)
    try:
        keys = [("%s/%s" % (prefix, job.entry["path"]) if prefix else job.entry["path"]) for job in jobs]
        # Chunks are queued round-robin over the files (each file's first chunk, then each second ...):
        # every large file is written, and hashed, from the start at once, instead of one file after another
        # with the last file's hash left alone at the end; fewer threads write into one file at a time.
        for i in range(max(len(job.chunks) for job in jobs)):
            for job, key in zip(jobs, keys):
                if i < len(job.chunks):
                    fut = pool.submit(fetch_chunk, s3, bucket, key, job, i, progress, stop, hasher)
                    fut.add_done_callback(events.put)
        left = len(jobs)
        while left:
            event = events.get()
            if isinstance(event, concurrent.futures.Future):
                event.result()          # a failed chunk raises here; a done one reported to the hasher
                continue
            if isinstance(event, BaseException):
                raise event
            job = event
            got = job.hash.hexdigest()
            if got != job.entry["sha256"]:
                raise PullError(EXIT_VERIFY, "%s: downloaded sha256 %s, the manifest says %s (the object store "
                                "holds other bytes than the manifest; repair it with the checkpoints stage and "
                                "checkpoints_read_back: true)" % (job.entry["path"], got, job.entry["sha256"]))
            job.close()
            os.replace(job.part, job.final)
            progress.file_done()
            left -= 1
    except BaseException:
        stop.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        hasher.shutdown()
        for job in jobs:
            job.close()


def lock_holder(fd):
    """The holder line a pull wrote into the lock file: at most HOLDER_MAX bytes read, one printable line."""
    try:
        data = os.pread(fd, HOLDER_MAX, 0)
    except OSError:
        data = b""
    line = data.split(b"\n", 1)[0].decode("utf-8", "replace")
    text = "".join(c if c.isprintable() else "?" for c in line).strip()
    if not text.strip("?"):
        return "an unknown process (the lock file names no holder)"
    if len(text) > 200 or (b"\n" not in data and len(data) == HOLDER_MAX):
        text = text[:200] + "..."
    return text


def take_lock(fd, path, model, timeout):
    """Take the exclusive flock on path, waiting at most timeout seconds, and write who holds it into it."""
    start = time.monotonic()
    waited_line = None
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise PullError(EXIT_USAGE, "cannot lock %s: %s (the node cache's filesystem must support flock)"
                                % (path, e))
        now = time.monotonic()
        waited = now - start
        holder = lock_holder(fd)
        if waited >= timeout:
            raise PullError(EXIT_LOCKED, "gave up after %d s (--lock-timeout %s) waiting for the lock %s: another pull of "
                            "%s on this node holds it (%s). That pull is stuck or slower than the timeout. Find the pod "
                            "on this node whose model-pull init container has been running the longest (kubectl get pods "
                            "-A -o wide --field-selector spec.nodeName=<node>) and delete it if it is stuck; if no pod "
                            "holds it, stop the process named above on the node. A pull that legitimately takes longer "
                            "needs a larger --lock-timeout."
                            % (waited, format_seconds(timeout), path, model, holder))
        if waited_line is None:
            log("another pull of %s holds %s (%s); waiting for it, at most %s s"
                % (model, path, holder, format_seconds(timeout)))
            waited_line = now
        elif now - waited_line >= LOCK_REPORT:
            log("still waiting for %s: held by %s, %d s of at most %s s" % (path, holder, waited, format_seconds(timeout)))
            waited_line = now
        time.sleep(max(0.0, min(LOCK_POLL, timeout - waited)))
    host = os.environ.get("POD_NAME") or socket.gethostname()
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    line = "model-pull in pod/host %s, pid %d, since %s\n" % (host, os.getpid(), since)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, line.encode("utf-8", "replace"), 0)
    except OSError:
        pass  # the holder line is advice for a waiter; a cache that cannot take it fails later, with its own error


def format_seconds(value):
    return ("%f" % value).rstrip("0").rstrip(".")


def pull(a, env):
    access, secret = env.get("AWS_ACCESS_KEY_ID", ""), env.get("AWS_SECRET_ACCESS_KEY", "")
    if not access or not secret:
        raise PullError(EXIT_USAGE, "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set (mount the read-only Secret)")
    if not re.match(r"^[0-9a-f]{64}$", a.digest):
        raise PullError(EXIT_USAGE, "--digest must be 64 lowercase hex digits (the manifest digest), got %r" % a.digest)
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", a.model):
        raise PullError(EXIT_USAGE, "--model %r must be a plain name (letters, digits, . _ -)" % a.model)
    prefix = a.prefix.strip("/")
    s3 = S3(a.endpoint, access, secret, env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            a.ca_file)
    model_dir = os.path.join(a.cache_root, a.model)
    dest = os.path.join(model_dir, a.digest)
    try:
        cache_dirs(a.cache_root, model_dir, dest)
    except OSError as e:
        raise PullError(EXIT_DISK if e.errno == errno.ENOSPC else EXIT_USAGE, "cannot create %s: %s" % (dest, e))
    try:
        lock_fd = os.open(os.path.join(model_dir, ".lock"), os.O_RDWR | os.O_CREAT | NOFOLLOW, 0o644)
    except OSError as e:
        raise PullError(EXIT_VERIFY if e.errno == errno.ELOOP else EXIT_USAGE, "cannot open the lock file %s: %s%s" % (
            os.path.join(model_dir, ".lock"), e, " (a symbolic link: remove it from the node)" if e.errno == errno.ELOOP else ""))
    held = False
    try:
        take_lock(lock_fd, os.path.join(model_dir, ".lock"), a.model, a.lock_timeout)
        held = True
        start = time.monotonic()
        manifest = fetch_manifest(s3, a.bucket, prefix, a.digest)
        total = sum(f["size"] for f in manifest["files"])
        ok, stamps = cached_ok(dest, manifest, a.rehash, a.parallel)
        need = [f for f in manifest["files"] if f["path"] not in set(ok)]
        need_bytes = sum(f["size"] for f in need)
        log("%s: %d files, %d bytes; %d already verified in the cache, %d to fetch (%d bytes)"
            % (a.model, len(manifest["files"]), total, len(ok), len(need), need_bytes))
        if need:
            st = os.statvfs(dest)
            free = st.f_bavail * st.f_frsize
            if free < need_bytes + DISK_MARGIN:
                raise PullError(EXIT_DISK, "not enough disk space in %s: %d bytes free, the pull needs %d (+%d margin)"
                                % (dest, free, need_bytes, DISK_MARGIN))
            with Progress(need_bytes, len(need), a.progress_file, a.model) as progress:
                download(s3, a.bucket, prefix, dest, need, a.parallel, progress)
                progress.done()
                progress.report()
            for f in need:
                stamps[f["path"]] = stamp(os.path.join(dest, f["path"])) + [f["sha256"]]
        wanted = set(f["path"] for f in manifest["files"])
        for root, _dirs, files in os.walk(dest):
            for name in files:
                rel = os.path.relpath(os.path.join(root, name), dest).replace(os.sep, "/")
                if rel not in wanted and rel != MARKER:
                    os.remove(os.path.join(root, name))
        write_marker(dest, a.digest, stamps)
        secs = time.monotonic() - start
        log("done: %d bytes fetched in %.1f s (%.0f MiB/s), %d files verified"
            % (need_bytes, secs, need_bytes / max(secs, 1e-6) / 1048576, len(manifest["files"])))
        return dest, need_bytes
    finally:
        if held:
            try:
                os.ftruncate(lock_fd, 0)  # the next waiter must not read this pull as the holder
            except OSError:
                pass
        os.close(lock_fd)


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="model-pull", description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--endpoint", required=True, help="S3 endpoint URL, https://host:port")
    ap.add_argument("--bucket", required=True)
    ap.add_argument("--prefix", required=True, help="the checkpoint's prefix in the bucket")
    ap.add_argument("--model", required=True, help="model name (the cache directory's name)")
    ap.add_argument("--digest", required=True, help="the checkpoint manifest's digest (sha256 hex)")
    ap.add_argument("--cache-root", required=True, help="the node cache directory (hostPath or PVC)")
    ap.add_argument("--ca-file", help="PEM CA bundle for an https endpoint")
    ap.add_argument("--parallel", type=int, default=4,
                    help="concurrent ranged GETs (default 4, as the serving chart's downloader.parallel)")
    ap.add_argument("--rehash", action="store_true", help="re-hash every cached file instead of trusting stamps")
    ap.add_argument("--lock-timeout", type=float, default=LOCK_TIMEOUT, metavar="SECONDS",
                    help="wait at most this long for another pull of the model on this node (default %d; 0: do not "
                         "wait); exit %d after that" % (LOCK_TIMEOUT, EXIT_LOCKED))
    ap.add_argument("--progress-file", metavar="FILE",
                    help="keep FILE holding the download's progress (the collection's progress format, "
                         "docs/progress.md)")
    a = ap.parse_args(argv)
    if a.parallel < 1:
        ap.error("--parallel must be at least 1")
    if not a.lock_timeout >= 0 or a.lock_timeout == float("inf"):
        ap.error("--lock-timeout must be a number of seconds, 0 or more")
    return a


def main(argv=None, env=None):
    try:
        a = parse_args(argv)
    except SystemExit as e:
        return EXIT_OK if e.code in (0, None) else EXIT_USAGE
    try:
        dest, _moved = pull(a, os.environ if env is None else env)
    except PullError as e:
        sys.stderr.write("model-pull: ERROR: %s\n" % e)
        return e.code
    except KeyboardInterrupt:
        return 130
    sys.stdout.write("MODEL_PATH=%s\n" % dest)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
