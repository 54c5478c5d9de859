# -*- coding: utf-8 -*-
# Copyright: llmops.onprem contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: progress
type: aggregate
short_description: Live progress of the collection's long transfers in ansible-playbook's own output
version_added: 0.1.0
description:
  - While a task that has a O(ignore:progress_file) module argument runs (the bundle import, the image push, the
    checkpoint sync), a background thread reads that progress file (the collection's one format, see
    C(docs/progress.md)) and prints bytes done and total, files, rate and ETA.
  - On a terminal the progress line is rewritten in place; when the output is not a terminal (a CI log) it prints
    plain lines, one every O(plain_every) seconds or every O(plain_step) percent, whichever comes first. The last
    line of a finished transfer says 100% and how long it took.
  - A file that is missing, partial, unreadable or not in the progress format is ignored; a file left by an earlier
    run is ignored until the task replaces it. The thread stops when the task's result arrives.
  - Works beside any stdout callback. Enable it with C(callbacks_enabled = llmops.onprem.progress) in the
    C([defaults]) section of C(ansible.cfg) (or C(ANSIBLE_CALLBACKS_ENABLED)); when it is not enabled nothing changes.
  - The module argument is templated with the task's variables (and each loop item) when the task starts.
  - It stays silent when the stdout callback writes JSON (C(ansible.builtin.json) and other JSON stdout callbacks),
    because a progress line would break that output.
requirements:
  - Enabled in C(callbacks_enabled).
options:
  poll_interval:
    description: Seconds between two reads of the progress file.
    type: float
    default: 0.25
    env:
      - name: LLMOPS_PROGRESS_POLL_INTERVAL
    ini:
      - section: callback_llmops_progress
        key: poll_interval
  plain_every:
    description: Without a terminal, seconds between two plain lines of a running transfer (a line also comes at
      every O(plain_step) percent). C(0) prints every change.
    type: float
    default: 30
    env:
      - name: LLMOPS_PROGRESS_PLAIN_EVERY
    ini:
      - section: callback_llmops_progress
        key: plain_every
  plain_step:
    description: Without a terminal, print a plain line each time the transfer passes another this many percent.
    type: float
    default: 10
    env:
      - name: LLMOPS_PROGRESS_PLAIN_STEP
    ini:
      - section: callback_llmops_progress
        key: plain_step
  mode:
    description:
      - C(auto) rewrites the line in place when standard output is a terminal and prints plain lines otherwise.
      - C(tty) and C(plain) force one of the two.
    type: str
    default: auto
    choices: [auto, tty, plain]
    env:
      - name: LLMOPS_PROGRESS_MODE
    ini:
      - section: callback_llmops_progress
        key: mode
"""

import os
import sys
import threading
import time

from ansible import constants as C
from ansible.plugins.callback import CallbackBase

from ansible_collections.llmops.onprem.plugins.module_utils._progress import read, render

PREFIX = "progress: "
UP_CLEAR = "\x1b[1A\r"   # cursor one line up, to its start
CLEAR_EOL = "\x1b[K"


def machine_readable(stdout_callback):
    """True for a stdout callback whose output is JSON, which a progress line would break."""
    return str(stdout_callback or "").rsplit(".", 1)[-1] in ("json", "jsonl", "ndjson")


def stat_key(path):
    """What identifies the file now at path (None when there is none): a rewrite is a new inode (rename)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class Screen(object):
    """Writes progress lines to a stream. On a terminal the last line is rewritten in place; the cursor is always left
    at the start of a new line, so whatever the stdout callback prints next goes below the progress line."""

    def __init__(self, stream, tty, lock=None):
        self.stream, self.tty = stream, tty
        self.lock = lock or threading.RLock()
        self.on_screen = False  # our line is the last one on the terminal

    def line(self, text, in_place=True):
        with self.lock:
            if self.tty and in_place and self.on_screen:
                self.stream.write(UP_CLEAR + text + CLEAR_EOL + "\n")
            else:
                self.stream.write(text + (CLEAR_EOL if self.tty else "") + "\n")
            self.on_screen = self.tty
            try:
                self.stream.flush()
            except (OSError, ValueError):
                pass

    def moved_on(self):
        """Someone else printed below our line: the next line starts a new one."""
        with self.lock:
            self.on_screen = False


class Watcher(object):
    """Polls a task's progress files on a daemon thread and shows what they say."""

    def __init__(self, paths, screen, poll=0.25, plain_every=30.0, plain_step=10.0, clock=time.monotonic):
        self.paths = list(paths)
        self.screen, self.poll, self.plain_every, self.plain_step, self.clock = screen, poll, plain_every, plain_step, clock
        # A file that is there before the task starts is an earlier run's: shown only once replaced.
        self.baseline = dict((p, stat_key(p)) for p in self.paths)
        self.seen = {}        # path -> stat key of the last document read
        self.shown = {}       # path -> (text, state, percent bucket, clock) of the last line printed
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="llmops-progress", daemon=True)

    def start(self):
        self.thread.start()
        return self

    def _run(self):
        while not self.stop_event.wait(self.poll):
            self.poll_once()

    def poll_once(self):
        for path in self.paths:
            try:
                key = stat_key(path)
                if key is None or key == self.baseline.get(path) or key == self.seen.get(path):
                    continue
                doc = read(path)
                if doc is None:
                    continue
                self.seen[path] = key
                self.show(path, doc)
            except Exception:  # pylint: disable=broad-except  # a display must never end the run
                continue

    def show(self, path, doc):
        text = PREFIX + render(doc)
        pct = doc.get("percent")
        if not isinstance(pct, (int, float)):
            pct = 0.0
        bucket = int(pct // self.plain_step) if self.plain_step > 0 else int(pct)
        last = self.shown.get(path)
        now = self.clock()
        if last and last[0] == text:
            return
        if not self.screen.tty and last is not None and doc["state"] == "running" and last[1] == "running":
            due = self.plain_every <= 0 or now - last[3] >= self.plain_every
            if not due and bucket == last[2]:
                return
        self.screen.line(text, in_place=last is not None)
        self.shown[path] = (text, doc["state"], bucket, now)

    def stop(self, timeout=5.0):
        """Stops the thread, then shows the last state of each file (the final 100% line of a finished transfer)."""
        self.stop_event.set()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout)
        self.poll_once()


class CallbackModule(CallbackBase):
    """Shows the progress files of running tasks; see DOCUMENTATION."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "llmops.onprem.progress"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, display=None, stream=None):
        super(CallbackModule, self).__init__(display)
        self._stream = stream
        self._play = None
        self._watchers = {}
        self._lock = threading.RLock()
        self._screen = None
        if machine_readable(getattr(C, "DEFAULT_STDOUT_CALLBACK", None)):
            self.disabled = True

    # -- plumbing
    def _get(self, name, default):
        try:
            value = self.get_option(name)
        except (KeyError, AttributeError):
            return default
        return default if value is None else value

    def screen(self):
        if self._screen is None:
            stream = self._stream or sys.stdout
            mode = self._get("mode", "auto")
            try:
                tty = stream.isatty() if mode == "auto" else mode == "tty"
            except (AttributeError, ValueError):
                tty = False
            self._screen = Screen(stream, tty, getattr(self._display, "_lock", None))
        return self._screen

    def progress_paths(self, host, task):
        """The task's progress files: its progress_file argument, templated with the task's variables (once per
        loop item when the task loops). [] when the task has none or it cannot be worked out."""
        args = getattr(task, "args", None)
        raw = args.get("progress_file") if isinstance(args, dict) else None
        if not raw or not isinstance(raw, str):
            return []
        try:
            return self._template_paths(raw, host, task)
        except Exception as e:  # pylint: disable=broad-except  # no progress display rather than a failed run
            self._display.vvv("llmops.onprem.progress: cannot work out the progress file of %r: %s" % (task.get_name(), e))
            return []

    def _template_paths(self, raw, host, task):
        from ansible.template import Templar  # pylint: disable=import-outside-toplevel

        if self._play is None:
            return [raw] if "{" not in raw else []
        vm = self._play.get_variable_manager()
        variables = vm.get_vars(play=self._play, host=host, task=task)
        templar = Templar(loader=self._play.get_loader(), variables=variables)
        if not task.loop:
            paths = [templar.template(raw)]
        else:
            items = templar.template(task.loop)
            loop_var = getattr(task.loop_control, "loop_var", None) or "item"
            paths = []
            for item in items if isinstance(items, list) else []:
                templar.available_variables = dict(variables, **{loop_var: item})
                paths.append(templar.template(raw))
        return [str(p) for p in paths if isinstance(p, str) and p and "{{" not in p]

    def _start(self, key, paths):
        with self._lock:
            self._stop(key)
            self._watchers[key] = Watcher(paths, self.screen(), poll=float(self._get("poll_interval", 0.25)),
                                          plain_every=float(self._get("plain_every", 30)),
                                          plain_step=float(self._get("plain_step", 10))).start()

    def _stop(self, key):
        with self._lock:
            w = self._watchers.pop(key, None)
        if w is not None:
            w.stop()

    def _stop_all(self):
        with self._lock:
            keys = list(self._watchers)
        for key in keys:
            self._stop(key)

    @staticmethod
    def _key(result):
        task, host = getattr(result, "task", None) or result._task, getattr(result, "host", None) or result._host
        return (task._uuid, host.get_name())

    # -- events
    def v2_playbook_on_play_start(self, play):
        self._stop_all()
        self._play = play

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._stop_all()

    def v2_playbook_on_handler_task_start(self, task):
        self._stop_all()

    def v2_runner_on_start(self, host, task):
        paths = self.progress_paths(host, task)
        if paths:
            self._start((task._uuid, host.get_name()), paths)

    def _ended(self, result):
        self.screen().moved_on()  # the stdout callback has printed the result below our line
        try:
            self._stop(self._key(result))
        except AttributeError:
            self._stop_all()

    def v2_runner_on_ok(self, result):
        self._ended(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._ended(result)

    def v2_runner_on_skipped(self, result):
        self._ended(result)

    def v2_runner_on_unreachable(self, result):
        self._ended(result)

    def _item(self, result):
        self.screen().moved_on()

    def v2_runner_item_on_ok(self, result):
        self._item(result)

    def v2_runner_item_on_failed(self, result):
        self._item(result)

    def v2_runner_item_on_skipped(self, result):
        self._item(result)

    def v2_playbook_on_stats(self, stats):
        self._stop_all()
