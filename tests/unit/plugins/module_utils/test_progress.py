"""module_utils/_progress.py: the one progress file of every long transfer (docs/progress.md)."""
import json
import os
import threading

import pytest

from ansible_collections.llmops.onprem.plugins.module_utils import _progress as P

KEYS = {"format", "stage", "what", "phase", "state", "bytes_done", "bytes_total", "files_done", "files_total", "percent",
        "rate_bytes_per_s", "eta_s", "elapsed_s", "started", "updated", "pid", "error"}


class Clock(object):
    def __init__(self, t=100.0):
        self.t = t

    def __call__(self):
        return self.t


def writer(path, clock, **kw):
    kw.setdefault("bytes_total", 1000)
    kw.setdefault("files_total", 4)
    kw.setdefault("interval", 0.5)
    return P.ProgressWriter(str(path) if path else None, "bundle_import", "a -> b", clock=clock, wall=lambda: 0.0, **kw)


def test_the_document_has_every_field_of_the_format(tmp_path):
    clock = Clock()
    w = writer(tmp_path / "p.json", clock)
    w.write()
    clock.t += 2
    w.add(500, 2)
    doc = json.loads((tmp_path / "p.json").read_text())
    assert set(doc) == KEYS
    assert doc["format"] == P.FORMAT == "llmops.onprem.progress/v1"
    assert (doc["stage"], doc["what"], doc["phase"], doc["state"]) == ("bundle_import", "a -> b", "copy", "running")
    assert (doc["bytes_done"], doc["bytes_total"], doc["files_done"], doc["files_total"]) == (500, 1000, 2, 4)
    assert doc["percent"] == 50.0 and doc["rate_bytes_per_s"] == 250 and doc["eta_s"] == 2.0 and doc["elapsed_s"] == 2.0
    assert doc["started"] == doc["updated"] == "1970-01-01T00:00:00Z" and doc["pid"] == os.getpid() and doc["error"] is None
    assert P.read(str(tmp_path / "p.json")) == doc


def test_done_is_100_percent_with_eta_0_and_the_average_rate(tmp_path):
    clock = Clock()
    w = writer(tmp_path / "p.json", clock)
    clock.t += 4
    w.add(1000, 4)
    w.done()
    doc = P.read(str(tmp_path / "p.json"))
    assert (doc["state"], doc["phase"], doc["percent"], doc["eta_s"], doc["rate_bytes_per_s"]) == ("done", "done", 100.0, 0.0, 250)


def test_an_exception_in_the_block_writes_failed_with_the_message(tmp_path):
    path = tmp_path / "p.json"
    with pytest.raises(RuntimeError):
        with writer(path, Clock()) as w:
            w.add(10)
            raise RuntimeError("segment 3 is damaged")
    doc = P.read(str(path))
    assert doc["state"] == "failed" and doc["error"] == "segment 3 is damaged" and doc["bytes_done"] == 10
    assert "FAILED: segment 3 is damaged" in P.render(doc)


def test_a_block_that_ends_without_done_stays_running(tmp_path):
    path = tmp_path / "p.json"
    with writer(path, Clock()):
        pass
    assert P.read(str(path))["state"] == "running"


def test_writes_are_throttled_to_the_interval_plus_forced_ones(tmp_path, monkeypatch):
    written = []
    real = P.write_atomic
    monkeypatch.setattr(P, "write_atomic", lambda path, data: (written.append(json.loads(data)), real(path, data)))
    clock = Clock()
    w = writer(tmp_path / "p.json", clock, bytes_total=300)
    for _i in range(30):  # 3.75 s of adds, one every 0.125 s
        clock.t += 0.125
        w.add(10)
    assert [d["bytes_done"] for d in written] == [10, 50, 90, 130, 170, 210, 250, 290]  # the first add, then every 0.5 s
    w.set_phase("verify")  # a phase change and the end are written at once
    w.done()
    assert [d["phase"] for d in written[-2:]] == ["verify", "done"] and written[-1]["bytes_done"] == 300


def test_interval_zero_writes_every_add(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMOPS_PROGRESS_INTERVAL", "0")
    w = P.ProgressWriter(str(tmp_path / "p.json"), "image_mirror")
    assert w.interval == 0
    for name in ("bad", "-1"):
        monkeypatch.setenv("LLMOPS_PROGRESS_INTERVAL", name)
        assert P.interval_from_env() == P.DEFAULT_INTERVAL


@pytest.mark.parametrize("done,total,rate,eta", [(50, 100, 10, 5.0), (100, 100, 0, 0.0), (120, 100, 5, 0.0),
                                                 (0, 100, 0, None), (1, 3, 3, 0.7)])
def test_eta_math(done, total, rate, eta):
    assert P.eta_seconds(done, total, rate) == eta


def test_the_rate_follows_the_last_ten_seconds_not_the_whole_run():
    clock = Clock()
    w = writer(None, clock, bytes_total=10 ** 9)
    for _i in range(20):  # 20 s at 10 MB/s
        clock.t += 1
        w.add(10 * 10 ** 6)
    for _i in range(15):  # then 15 s at 1 MB/s
        clock.t += 1
        w.add(10 ** 6)
    doc = w.document()
    assert doc["rate_bytes_per_s"] == 10 ** 6  # the average would be 6.1 MB/s
    assert doc["eta_s"] == round((10 ** 9 - w.bytes_done) / 10 ** 6, 1)


def test_no_rate_yet_means_an_unknown_eta():
    doc = writer(None, Clock()).document()
    assert doc["rate_bytes_per_s"] == 0 and doc["eta_s"] is None and "ETA ?" in P.render(doc)


@pytest.mark.parametrize("planted", ["p.json", "p.json.tmp"])
def test_a_link_at_the_file_or_its_temporary_is_replaced_not_followed(tmp_path, planted):
    victim = tmp_path / "victim"
    victim.write_text("keep")
    os.symlink(str(victim), str(tmp_path / planted))
    w = writer(tmp_path / "p.json", Clock())
    w.done()
    assert victim.read_text() == "keep" and not os.path.islink(str(tmp_path / "p.json"))
    assert P.read(str(tmp_path / "p.json"))["state"] == "done" and not (tmp_path / "p.json.tmp").exists()


def test_a_reader_never_sees_a_partial_document(tmp_path):
    path = str(tmp_path / "p.json")
    w = P.ProgressWriter(path, "checkpoint_sync", "x" * 2000, bytes_total=10 ** 6, interval=0)
    w.write()
    stop = threading.Event()
    seen = []

    def read_all():
        while not stop.is_set():
            seen.append(P.read(path))
    t = threading.Thread(target=read_all)
    t.start()
    for _i in range(1500):
        w.add(1)
    stop.set()
    t.join()
    assert seen and None not in seen
    assert [d["bytes_done"] for d in seen] == sorted(d["bytes_done"] for d in seen)


def test_an_unwritable_progress_file_never_fails_the_transfer(tmp_path):
    w = writer(tmp_path / "missing-dir" / "p.json", Clock())
    w.add(10)
    w.done()
    assert "No such file or directory" in w.write_error and w.bytes_done == 10


@pytest.mark.parametrize("content", [b"", b"{", b"not json", b"[]", b'{"format": "other"}',
                                     b'{"format": "llmops.onprem.progress/v1", "state": "running", "bytes_done": -1}',
                                     b'{"format": "llmops.onprem.progress/v1", "state": "sleeping"}',
                                     b'{"format": "llmops.onprem.progress/v1", "state": "running", "bytes_done": "1"}',
                                     b'{"format": "llmops.onprem.progress/v1", "state": "running", "eta_s": "soon"}',
                                     b"\xff\xfe", b" " * (P.MAX_READ + 1)])
def test_read_returns_none_for_garbage(tmp_path, content):
    (tmp_path / "p").write_bytes(content)
    assert P.read(str(tmp_path / "p")) is None


def test_read_returns_none_for_missing_a_directory_or_a_link(tmp_path):
    w = writer(tmp_path / "real", Clock())
    w.write()
    os.symlink(str(tmp_path / "real"), str(tmp_path / "link"))
    assert P.read(str(tmp_path / "missing")) is None and P.read(str(tmp_path)) is None
    assert P.read(str(tmp_path / "link")) is None and P.read(str(tmp_path / "real")) is not None


def test_render_lines():
    doc = dict(stage="image_mirror", phase="upload", state="running", bytes_done=3 << 30, bytes_total=12 << 30,
               files_done=3, files_total=10, rate_bytes_per_s=110 << 20, eta_s=83.8, elapsed_s=28)
    assert P.render(doc) == "image_mirror upload: 3.0 GiB / 12.0 GiB (25.0%), 3/10 files, 110.0 MiB/s, ETA 1:24"
    doc.update(state="done", phase="done", bytes_done=12 << 30, files_done=10, eta_s=0, elapsed_s=3725)
    assert P.render(doc) == "image_mirror: 12.0 GiB / 12.0 GiB (100.0%), 10/10 files, 110.0 MiB/s, done in 1:02:05"
    assert P.render(dict(stage="s", state="done", bytes_done=0, bytes_total=0)).startswith("s: 0 B / 0 B (100.0%), 0 B/s")


@pytest.mark.parametrize("state", ["running", "done", "failed"])
def test_a_rendered_line_parses_back(state):
    doc = dict(stage="qwen2.5-0.5b", phase="download", state=state, bytes_done=3 << 30, bytes_total=12 << 30, files_done=3,
               files_total=10, rate_bytes_per_s=110 << 20, eta_s=83.8, elapsed_s=28, error="disk full" if state == "failed" else None)
    if state == "done":
        doc.update(bytes_done=12 << 30, files_done=10)
    back = P.parse_line(P.render(doc))
    assert P.render(back) == P.render(doc)
    assert (back["stage"], back["state"], back["bytes_done"], back["bytes_total"], back["files_done"]) == (
        doc["stage"], state, doc["bytes_done"], doc["bytes_total"], doc["files_done"])
    assert back["eta_s"] == {"running": 84.0, "done": 0.0, "failed": None}[state]
    assert back["error"] == doc["error"]


def test_last_progress_takes_the_last_readable_line():
    one = P.render(dict(stage="m", state="running", bytes_done=1 << 20, bytes_total=2 << 20, rate_bytes_per_s=0, eta_s=None))
    two = P.render(dict(stage="m", state="running", bytes_done=3 << 19, bytes_total=2 << 20, rate_bytes_per_s=1, eta_s=1))
    log = "x: progress %s\nx: progress %s\nx: progress not a line\nx: done\n" % (one, two)
    assert P.last_progress(log)["bytes_done"] == 3 << 19 and P.last_progress("nothing") is None
