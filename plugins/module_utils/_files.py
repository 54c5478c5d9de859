# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one file hash and the one atomic write of the collection.

``sha256_file`` reads a file in bounded blocks (one reused buffer, no read of the whole file), with an
optional progress callback, an optional expected size (never more than size + 1 bytes are read) and an
optional refusal to follow a link. ``write_atomic`` replaces a file by a new temporary file in the same
folder and a rename; ``write_atomic_at`` does it inside a folder already opened (a ``dir_fd``), which is
what the bundle import's no-follow destination needs: both are the same code. ``sha256_stored``
hashes a file after asking the kernel to drop it from the page cache, for a read-back of media.

Python 3 standard library only: the model-pull image ships this file next to its script
(serving/images/build.sh).

Private to this collection: the API may change without notice.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil

BLOCK = 8 * 1024 * 1024
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class SizeMismatch(ValueError):
    """The file is not the expected size. ``actual`` is what was read, at most the expected size + 1."""

    def __init__(self, path, expected, actual):
        super(SizeMismatch, self).__init__("%s is %s bytes, expected %d" % (
            path, "more than %d" % expected if actual > expected else actual, expected))
        self.path, self.expected, self.actual = path, expected, actual


def sha256_fileobj(fh, block=BLOCK, progress=None, size=None, name="the file"):
    """sha256 hex of what ``fh`` (opened for binary reading) holds from its position on; see sha256_file."""
    h = hashlib.sha256()
    buf = bytearray(block)
    view = memoryview(buf)
    done = 0
    while True:
        want = block if size is None else min(block, size + 1 - done)
        if want <= 0:
            break
        n = fh.readinto(view[:want])
        if not n:
            break
        h.update(view[:n])
        done += n
        if progress:
            progress(n)
    if size is not None and done != size:
        raise SizeMismatch(name, size, done)
    return h.hexdigest()


def sha256_file(path, block=BLOCK, progress=None, size=None, follow=True):
    """sha256 hex of the file at ``path``, read ``block`` bytes at a time.

    progress: called with the number of bytes of each block read. size: the expected length; at most
    size + 1 bytes are read and any other length raises SizeMismatch. follow=False: a link at ``path``
    raises OSError (ELOOP) instead of being read through."""
    fd = os.open(path, os.O_RDONLY | _CLOEXEC | (0 if follow else _NOFOLLOW))
    with os.fdopen(fd, "rb", buffering=0) as fh:
        return sha256_fileobj(fh, block, progress, size, path)


def drop_cached(fd):
    """Flush the file open at ``fd`` to its storage (fsync) and ask the kernel to drop its pages from the
    page cache (posix_fadvise POSIX_FADV_DONTNEED), so that the next read comes from the storage. Only clean
    pages can be dropped, hence the fsync first. Advice only: a file system may ignore it (and a loop device
    or a FUSE file system has a cache of its own below this one). Returns whether the advice was given."""
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.EROFS):  # a file system without fsync: nothing dirty to flush
            raise
    advise = getattr(os, "posix_fadvise", None)
    if advise is None:  # pragma: no cover - not Linux
        return False
    advise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    return True


def sha256_stored(path, block=BLOCK, progress=None):
    """sha256 hex of the file at ``path`` as its storage holds it: the file is flushed and dropped from the
    page cache (drop_cached) before it is read, so that a medium that lost what it was given is caught
    rather than hidden by the copy still in memory."""
    fd = os.open(path, os.O_RDONLY | _CLOEXEC)
    with os.fdopen(fd, "rb", buffering=0) as fh:
        drop_cached(fd)
        return sha256_fileobj(fh, block, progress, None, path)


def unlink_at(dfd, name):
    """Remove ``name`` in the folder ``dfd`` (None: the current folder); no error when it is not there."""
    try:
        os.unlink(name, dir_fd=dfd)
    except FileNotFoundError:
        pass


def create_at(dfd, name, mode=0o644):
    """A new regular file ``name`` in the folder ``dfd``, opened for binary writing: whatever was there (a
    file, a leftover, a planted link) is unlinked first, and O_EXCL | O_NOFOLLOW refuse a racing one. mode:
    set exactly (fchmod, whatever the umask); None: 0o644 less the umask."""
    unlink_at(dfd, name)
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o644 if mode is None else mode,
                 dir_fd=dfd)
    if mode is not None:
        os.fchmod(fd, mode)
    return os.fdopen(fd, "wb")


def write_atomic_at(dfd, name, data, mode=0o644, fsync=True, suffix=".tmp"):
    """Replace ``name`` in the folder ``dfd`` with ``data`` (bytes, or a binary file object copied to its end)
    through ``name + suffix`` and a rename: a link planted at either name is replaced, never written through;
    on any failure the temporary file is removed and ``name`` is left as it was. fsync=False skips the flush to
    disk (a progress file rewritten twice a second)."""
    tmp = name + suffix
    f = create_at(dfd, tmp, mode)
    try:
        with f:
            if isinstance(data, (bytes, bytearray, memoryview)):
                f.write(data)
            else:
                shutil.copyfileobj(data, f, BLOCK)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except BaseException:
        unlink_at(dfd, tmp)
        raise


def write_atomic(path, data, mode=0o644, fsync=True, suffix=".tmp"):
    """write_atomic_at in the folder of ``path``, opened once (so the temporary file and the rename are in
    the same folder even if its path changes meanwhile)."""
    d, name = os.path.split(path)
    dfd = os.open(d or ".", os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
    try:
        write_atomic_at(dfd, name, data, mode, fsync, suffix)
    finally:
        os.close(dfd)
