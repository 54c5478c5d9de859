# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one progress file of every long transfer (bundle import and pack, image push, checkpoint
sync, model pull): a small JSON document, replaced atomically, at most every ``interval`` seconds
plus the final one. Readers (the ``llmops.onprem.progress`` callback, an operator's ``cat``) use
``read`` and ``render``. The format is documented in docs/progress.md.

Python 3 standard library only: the model-pull image ships this file (and _files.py) next to its script.

Private to this collection: the API may change without notice.
"""

from __future__ import annotations

import collections
import json
import os
import re
import threading
import time

try:
    from ansible_collections.llmops.onprem.plugins.module_utils import _files
except ImportError:  # in the model-pull image, _files.py lies next to this file (serving/images/build.sh)
    import _files  # type: ignore[no-redef]  # pylint: disable=import-error

FORMAT = "llmops.onprem.progress/v1"
STATES = ("running", "done", "failed")
# Seconds between two writes while running; LLMOPS_PROGRESS_INTERVAL overrides it (a slow shared
# file system may want less, a watcher that wants more updates a smaller value).
DEFAULT_INTERVAL = 0.5
# The rate (and so the ETA) is measured over about this many recent seconds.
RATE_WINDOW = 10.0

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def interval_from_env(default=DEFAULT_INTERVAL):
    """LLMOPS_PROGRESS_INTERVAL as a float >= 0, or ``default`` when unset or not a number."""
    raw = os.environ.get("LLMOPS_PROGRESS_INTERVAL", "")
    try:
        value = float(raw)
    except ValueError:
        return default
    return value if value >= 0 else default


def eta_seconds(bytes_done, bytes_total, rate):
    """Seconds left at ``rate`` bytes/s: 0 when nothing is left, None when unknown (no rate yet)."""
    left = bytes_total - bytes_done
    if left <= 0:
        return 0.0
    if not rate or rate <= 0:
        return None
    return round(left / float(rate), 1)


def utc_now(wall=time.time):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall()))


def write_atomic(path, data):
    """The progress file through _files.write_atomic: a link at the file or its temporary name is replaced, never
    written through; 0o644 less the umask; no fsync (the file is rewritten twice a second)."""
    _files.write_atomic(path, data, mode=None, fsync=False)


class ProgressWriter(object):
    """Counts bytes and files of one transfer and keeps ``path`` (when given) holding its progress document.

    ``add(n)`` (also ``writer(n)``) and ``file_done()`` are thread safe and write at most every ``interval``
    seconds; ``set_phase`` writes at once; ``done()`` and ``failed(msg)`` write the final document. Used as a
    context manager, an exception leaving the block marks the transfer failed. A progress file that cannot be
    written never fails the transfer: the error is kept in ``write_error``."""

    def __init__(self, path, stage, what="", bytes_total=0, files_total=0, phase="copy", interval=None,
                 clock=time.monotonic, wall=time.time):
        self.path, self.stage, self.what, self.phase = path, stage, what, phase
        self.bytes_total, self.files_total = int(bytes_total or 0), int(files_total or 0)
        self.bytes_done = self.files_done = 0
        self.state, self.error = "running", None
        self.interval = interval_from_env() if interval is None else interval
        self.clock, self.wall = clock, wall
        self.t0 = clock()
        self.started = utc_now(wall)
        self.last_write = None
        self.samples = collections.deque([(self.t0, 0)])
        self.write_error = None
        self.lock = threading.RLock()

    # -- counting
    def add(self, nbytes=0, files=0):
        with self.lock:
            self.bytes_done += nbytes
            self.files_done += files
            self._maybe_write()

    __call__ = add

    def file_done(self, n=1):
        self.add(0, n)

    def set_total(self, bytes_total=None, files_total=None):
        with self.lock:
            if bytes_total is not None:
                self.bytes_total = int(bytes_total)
            if files_total is not None:
                self.files_total = int(files_total)

    def set_phase(self, phase):
        with self.lock:
            self.phase = phase
            self.write()

    def done(self, phase="done"):
        with self.lock:
            self.state, self.phase = "done", phase
            self.write()

    def failed(self, error):
        with self.lock:
            self.state, self.error = "failed", str(error)[:500]
            self.write()

    def __enter__(self):
        self.write()
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is not None and self.state == "running":
            self.failed(exc)
        return False

    # -- the document
    def rate(self, now=None):
        """Bytes per second over the last RATE_WINDOW seconds (over the whole run once it is over)."""
        now = self.clock() if now is None else now
        if self.state != "running":
            return self.bytes_done / max(now - self.t0, 1e-6)
        t_old, b_old = self.samples[0]
        return (self.bytes_done - b_old) / (now - t_old) if now - t_old > 1e-6 else 0.0

    def _sample(self, now):
        """Keeps (time, bytes) points back to about RATE_WINDOW seconds ago, one per write."""
        self.samples.append((now, self.bytes_done))
        while len(self.samples) > 2 and now - self.samples[1][0] >= RATE_WINDOW:
            self.samples.popleft()

    def document(self):
        with self.lock:
            now = self.clock()
            rate = self.rate(now)
            return dict(
                format=FORMAT, stage=self.stage, what=self.what, phase=self.phase, state=self.state,
                bytes_done=self.bytes_done, bytes_total=self.bytes_total,
                files_done=self.files_done, files_total=self.files_total,
                percent=percent(self.bytes_done, self.bytes_total, self.state),
                rate_bytes_per_s=int(rate),
                eta_s=0.0 if self.state == "done" else eta_seconds(self.bytes_done, self.bytes_total, rate),
                elapsed_s=round(now - self.t0, 1),
                started=self.started, updated=utc_now(self.wall), pid=os.getpid(), error=self.error)

    def _maybe_write(self):
        now = self.clock()
        if self.last_write is None or now - self.last_write >= self.interval:
            self.write()

    def write(self):
        with self.lock:
            self.last_write = self.clock()
            self._sample(self.last_write)
            if not self.path:
                return
            try:
                write_atomic(self.path, json.dumps(self.document(), sort_keys=True).encode() + b"\n")
            except OSError as e:
                self.write_error = "%s: %s" % (self.path, e)


def percent(done, total, state="running"):
    if state == "done":
        return 100.0
    if total > 0:
        return round(min(100.0, 100.0 * done / total), 1)
    return 100.0 if state == "done" else 0.0


# ---- reading ------------------------------------------------------------------------------------

MAX_READ = 64 * 1024
_NUMBERS = ("bytes_done", "bytes_total", "files_done", "files_total", "rate_bytes_per_s")


def parse(data):
    """The progress document in ``data`` (bytes or str), or None when it is not one (partial, garbage,
    another format): readers never fail on what they find."""
    try:
        if isinstance(data, bytes):
            data = data.decode("utf-8")
        doc = json.loads(data)
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("state") not in STATES:
        return None
    for k in _NUMBERS:
        v = doc.get(k, 0)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            return None
    eta = doc.get("eta_s")
    if eta is not None and (isinstance(eta, bool) or not isinstance(eta, (int, float))):
        return None
    return doc


def read(path):
    """The document at ``path``, or None (missing, unreadable, partial, garbage). Reads at most MAX_READ bytes
    and never follows a link."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            data = f.read(MAX_READ + 1)
    except OSError:
        return None
    if len(data) > MAX_READ:
        return None
    return parse(data)


def human_bytes(n):
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.1f %s" % (n, unit))
        n /= 1024.0
    return "%.1f TiB" % n  # pragma: no cover


def human_duration(s):
    s = int(round(s))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return "%d:%02d:%02d" % (h, m, sec) if h else "%d:%02d" % (m, sec)


def render(doc):
    """One line for a person: 'stage phase: 1.2 GiB / 4.0 GiB (30.0%), 3/10 files, 110.0 MiB/s, ETA 0:25'."""
    head = doc.get("stage") or "transfer"
    if doc.get("phase") and doc["phase"] != doc.get("state"):
        head += " " + str(doc["phase"])
    parts = ["%s / %s (%.1f%%)" % (human_bytes(doc["bytes_done"]), human_bytes(doc["bytes_total"]),
                                   percent(doc["bytes_done"], doc["bytes_total"], doc["state"]))]
    if doc.get("files_total"):
        parts.append("%d/%d files" % (doc.get("files_done", 0), doc["files_total"]))
    parts.append("%s/s" % human_bytes(doc.get("rate_bytes_per_s", 0)))
    if doc["state"] == "running":
        parts.append("ETA %s" % (human_duration(doc["eta_s"]) if doc.get("eta_s") is not None else "?"))
    elif doc["state"] == "done":
        parts.append("done in %s" % human_duration(doc.get("elapsed_s") or 0))
    else:
        parts.append("FAILED: %s" % (doc.get("error") or "see the task result"))
    return "%s: %s" % (head, ", ".join(parts))


# ---- relaying a progress line (model-pull's log, read by endpoint_ready) --------------------------

_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
_SIZE = r"[0-9.]+ (?:B|KiB|MiB|GiB|TiB)"
_LINE = re.compile(r"(?P<stage>[A-Za-z0-9._-]+)(?: (?P<phase>[a-z_]+))?: (?P<done>%s) / (?P<total>%s) \((?P<pct>[0-9.]+)%%\)"
                   r"(?:, (?P<fd>[0-9]+)/(?P<ft>[0-9]+) files)?, (?P<rate>%s)/s, "
                   r"(?:ETA (?P<eta>[0-9:]+|\?)|done in (?P<took>[0-9:]+)|FAILED: (?P<error>.*))$" % (_SIZE, _SIZE, _SIZE))


def _size(text):
    n, unit = text.split()
    return int(float(n) * _UNITS[unit])


def _seconds(text):
    s = 0
    for part in text.split(":"):
        s = s * 60 + int(part)
    return float(s)


def parse_line(line):
    """The progress document a ``render`` line stands for (sizes as precise as the line prints them), or None."""
    m = _LINE.search(line.strip())
    if not m:
        return None
    state = "failed" if m.group("error") is not None else "done" if m.group("took") else "running"
    doc = dict(format=FORMAT, stage=m.group("stage"), what="", phase=m.group("phase") or state, state=state,
               bytes_done=_size(m.group("done")), bytes_total=_size(m.group("total")),
               files_done=int(m.group("fd") or 0), files_total=int(m.group("ft") or 0), percent=float(m.group("pct")),
               rate_bytes_per_s=_size(m.group("rate")), error=m.group("error"),
               eta_s=0.0 if state == "done" else (None if m.group("eta") in (None, "?") else _seconds(m.group("eta"))),
               elapsed_s=_seconds(m.group("took")) if m.group("took") else None)
    return doc


def last_progress(text, marker="progress "):
    """The document of the last progress line (one holding ``marker`` followed by a ``render`` line) in a log."""
    for line in reversed(text.splitlines()):
        i = line.find(marker)
        if i >= 0:
            doc = parse_line(line[i + len(marker):])
            if doc is not None:
                return doc
    return None


def combine(docs, stage, what=""):
    """One document for several transfers at once (for example the model pulls of every serving pod)."""
    done, total = sum(d["bytes_done"] for d in docs), sum(d["bytes_total"] for d in docs)
    rate = sum(d.get("rate_bytes_per_s") or 0 for d in docs)
    states = set(d["state"] for d in docs)
    state = "failed" if "failed" in states else "running" if "running" in states else "done"
    etas = [d.get("eta_s") for d in docs if d["state"] == "running"]
    return dict(format=FORMAT, stage=stage, what=what, phase=state if state != "running" else "download", state=state,
                bytes_done=done, bytes_total=total, files_done=sum(d.get("files_done") or 0 for d in docs),
                files_total=sum(d.get("files_total") or 0 for d in docs), percent=percent(done, total, state),
                rate_bytes_per_s=int(rate), eta_s=0.0 if state == "done" else (None if None in etas else max(etas or [0.0])),
                elapsed_s=None, started=None, updated=utc_now(), pid=os.getpid(),
                error="; ".join(d["error"] for d in docs if d.get("error")) or None)


def write_document(path, doc):
    """Write a document made elsewhere (``combine``, ``parse_line``); False when the file could not be written."""
    try:
        write_atomic(path, json.dumps(doc, sort_keys=True).encode() + b"\n")
    except OSError:
        return False
    return True
