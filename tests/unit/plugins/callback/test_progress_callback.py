"""plugins/callback/progress.py: what it prints from a progress file, on a terminal and in a log, and that nothing
it finds (no file, a partial or garbage one, an earlier run's) stops it or the run."""
import io
import os
import threading

import pytest
import yaml
from ansible import constants as C

from ansible_collections.llmops.onprem.plugins.callback import progress as CB
from ansible_collections.llmops.onprem.plugins.module_utils import _progress as P


class Clock(object):
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class Stream(io.StringIO):
    def __init__(self, tty):
        super(Stream, self).__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


def write(path, done, total=1000, state="running", files=(0, 0)):
    """A progress file as the modules write it, 10 s into the transfer (so the rate is done / 10)."""
    ticks = iter([0.0])
    w = P.ProgressWriter(str(path), "bundle_import", bytes_total=total, files_total=files[1], interval=0,
                         clock=lambda: next(ticks, 10.0))
    w.bytes_done, w.files_done = done, files[0]
    if state == "done":
        w.done()
    elif state == "failed":
        w.failed("the media is damaged")
    else:
        w.write()


def load(stream, **options):
    """The callback with its documented options registered, as ansible-playbook's plugin loader does."""
    cb = CB.CallbackModule(stream=stream)
    cb._load_name = "llmops.onprem.progress"
    C.config.initialize_plugin_configuration_definitions("callback", cb._load_name, yaml.safe_load(CB.DOCUMENTATION)["options"])
    cb.set_options(direct=options)
    return cb


def watcher(paths, tty, clock=None, **kw):
    screen = CB.Screen(Stream(tty), tty)
    return CB.Watcher([str(p) for p in paths], screen, clock=clock or Clock(), **kw), screen.stream


def lines(stream):
    return stream.getvalue().split("\n")[:-1]


def test_a_missing_file_prints_nothing_and_the_thread_stops(tmp_path):
    w, out = watcher([tmp_path / "none.json"], tty=False, poll=0.01)
    w.start()
    w.stop()
    assert not w.thread.is_alive() and out.getvalue() == ""


@pytest.mark.parametrize("content", [b"", b'{"format": "llmops.onprem.progress/v1", "sta', b"\x00\xff garbage",
                                     b'{"format": "llmops.onprem.progress/v1", "state": "running", "bytes_done": null}'])
def test_a_partial_or_garbage_file_prints_nothing(tmp_path, content):
    path = tmp_path / "p.json"
    w, out = watcher([path], tty=True)
    path.write_bytes(content)
    w.poll_once()
    w.stop()
    assert out.getvalue() == ""
    write(path, 500)  # a good document after the garbage is shown
    w.poll_once()
    assert lines(out) == [CB.PREFIX + "bundle_import copy: 500 B / 1000 B (50.0%), 50 B/s, ETA 0:10" + CB.CLEAR_EOL]


def test_a_directory_or_a_link_in_place_of_the_file_prints_nothing(tmp_path):
    (tmp_path / "dir.json").mkdir()
    write(tmp_path / "real.json", 10)
    w, out = watcher([tmp_path / "dir.json", tmp_path / "link.json"], tty=False)
    os.symlink(str(tmp_path / "real.json"), str(tmp_path / "link.json"))
    w.poll_once()
    assert out.getvalue() == ""


def test_an_earlier_runs_file_is_ignored_until_the_task_replaces_it(tmp_path):
    path = tmp_path / "p.json"
    write(path, 1000, state="done")
    w, out = watcher([path], tty=False)
    w.poll_once()
    assert out.getvalue() == ""
    write(path, 100)
    w.poll_once()
    assert lines(out) == [CB.PREFIX + "bundle_import copy: 100 B / 1000 B (10.0%), 10 B/s, ETA 1:30"]


def test_on_a_terminal_the_line_is_rewritten_in_place_and_the_cursor_stays_below(tmp_path):
    path = tmp_path / "p.json"
    w, out = watcher([path], tty=True)
    for done in (100, 400):
        write(path, done)
        w.poll_once()
    w.poll_once()  # unchanged: nothing more
    write(path, 1000, state="done")
    w.stop()
    text = out.getvalue()
    assert text.count("\n") == 3 and text.endswith(CB.CLEAR_EOL + "\n")
    first, second, last = lines(out)
    assert first == CB.PREFIX + "bundle_import copy: 100 B / 1000 B (10.0%), 10 B/s, ETA 1:30" + CB.CLEAR_EOL
    assert second.startswith(CB.UP_CLEAR + CB.PREFIX + "bundle_import copy: 400 B / 1000 B (40.0%)")
    assert last.startswith(CB.UP_CLEAR + CB.PREFIX + "bundle_import: 1000 B / 1000 B (100.0%)") and "done in" in last


def test_on_a_terminal_a_line_printed_by_someone_else_is_not_overwritten(tmp_path):
    path = tmp_path / "p.json"
    w, out = watcher([path], tty=True)
    write(path, 100)
    w.poll_once()
    w.screen.moved_on()  # the stdout callback printed a loop item's result below our line
    write(path, 200)
    w.poll_once()
    assert CB.UP_CLEAR not in out.getvalue() and len(lines(out)) == 2


def test_without_a_terminal_plain_lines_every_step_or_every_n_seconds_and_the_final_one(tmp_path):
    path = tmp_path / "p.json"
    clock = Clock()
    w, out = watcher([path], tty=False, clock=clock, plain_every=30, plain_step=10)
    shown = []
    for done in (10, 50, 90, 110, 150, 190, 210, 220):  # one poll per second
        clock.t += 1
        write(path, done)
        w.poll_once()
    clock.t += 30  # 30 s later: due again even within the same 10%
    write(path, 230)
    w.poll_once()
    write(path, 1000, state="done")
    w.stop()
    shown = [ln.split(": ", 2)[2].split(" / ")[0] for ln in lines(out)]
    assert shown == ["10 B", "110 B", "210 B", "230 B", "1000 B"]
    assert "\x1b" not in out.getvalue() and lines(out)[-1].startswith(CB.PREFIX + "bundle_import: 1000 B / 1000 B (100.0%)")


def test_a_failed_transfer_says_so(tmp_path):
    path = tmp_path / "p.json"
    w, out = watcher([path], tty=False)
    write(path, 10)
    w.poll_once()
    write(path, 20, state="failed")
    w.stop()
    assert lines(out)[-1].endswith("FAILED: the media is damaged")


def test_the_thread_reads_while_the_transfer_runs_and_stops_at_the_end(tmp_path):
    path = tmp_path / "p.json"
    w, out = watcher([path], tty=False, poll=0.001, plain_every=0)
    seen = threading.Event()
    real_show = w.show

    def show(p, doc):
        real_show(p, doc)
        seen.set()
    w.show = show
    w.start()
    write(path, 300)
    assert seen.wait(30)  # the thread, not the test, read it
    w.stop()
    assert not w.thread.is_alive() and "300 B / 1000 B" in out.getvalue()


@pytest.mark.parametrize("name,quiet", [("ansible.builtin.json", True), ("json", True), ("ansible.posix.jsonl", True),
                                        ("ansible.builtin.default", False), ("community.general.yaml", False), (None, False)])
def test_silent_beside_a_json_stdout_callback(name, quiet):
    assert CB.machine_readable(name) is quiet


class Task(object):
    def __init__(self, args, loop=None):
        self.args, self.loop, self.loop_control, self._uuid = args, loop, None, "u1"

    def get_name(self):
        return "t"


class Host(object):
    def get_name(self):
        return "localhost"


class Result(object):
    def __init__(self, task):
        self.task, self.host = task, Host()


def test_the_callback_watches_a_task_with_a_progress_file_and_stops_at_its_result(tmp_path):
    path = tmp_path / "p.json"
    out = Stream(False)
    cb = load(out, poll_interval=0.001, plain_every=0, plain_step=10, mode="auto")
    task = Task(dict(src="/media", progress_file=str(path)))
    cb.v2_runner_on_start(Host(), task)
    w = cb._watchers[("u1", "localhost")]
    write(path, 1000, state="done")
    cb.v2_runner_on_ok(Result(task))
    assert not cb._watchers and not w.thread.is_alive()
    assert lines(out) == [CB.PREFIX + "bundle_import: 1000 B / 1000 B (100.0%), 100 B/s, done in 0:10"]


def test_a_task_without_a_progress_file_or_with_an_unknown_template_is_not_watched(tmp_path):
    cb = load(Stream(True))
    for args in (dict(src="x"), dict(progress_file=None), dict(progress_file="{{ nowhere }}/p"), "free form"):
        cb.v2_runner_on_start(Host(), Task(args))
    assert not cb._watchers
    cb.v2_playbook_on_stats(None)


def test_mode_forces_plain_or_tty():
    for mode, tty, want in (("plain", True, False), ("tty", False, True), ("auto", True, True), ("auto", False, False)):
        cb = load(Stream(tty), mode=mode)
        assert cb.screen().tty is want


def test_options_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("LLMOPS_PROGRESS_MODE", "plain")
    monkeypatch.setenv("LLMOPS_PROGRESS_PLAIN_EVERY", "5")
    cb = load(Stream(True))
    assert cb.screen().tty is False and cb.get_option("plain_every") == 5.0 and cb.get_option("poll_interval") == 0.25
